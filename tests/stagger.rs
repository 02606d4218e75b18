//! `--stagger DUR`: a random wait in [0, DUR) before the first attempt (a
//! cron splay), counted against `--deadline` and cut so the first attempt
//! still starts before it, taken before admission (a staggering run holds
//! no slot), shown by `-v`, `--summary-json` and `--dry-run`, and ended at
//! once by a stop signal with nothing started.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(20);

/// Runs `patience --summary-json REPORT ARGS`; returns the output, the
/// report and the wall time.
fn reported(dir: &TempDir, args: &[&str]) -> (std::process::Output, serde_json::Value, Duration) {
    let path = dir.join("report.json");
    let path_text = path.to_string_lossy().into_owned();
    let mut all = vec!["--summary-json", &path_text];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = run(dir, &all);
    let took = started.elapsed();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no report: {e}; {}", stderr(&out)));
    let _ = std::fs::remove_file(&path);
    (out, serde_json::from_str(&text).unwrap(), took)
}

#[test]
fn the_first_attempt_starts_after_a_random_wait_below_the_stagger() {
    let dir = TempDir::new("stagger-range");
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (out, report, took) = reported(&dir, &["--stagger", "1s", "--", "true"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        // A successful run stays silent without -v, stagger or not.
        assert_eq!(stderr(&out), "");
        let waited = report["stagger_s"].as_f64().expect("stagger_s");
        // Below 1s, plus what an oversleeping timer on a busy machine adds.
        assert!((0.0..1.3).contains(&waited), "stagger_s {waited}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(took.as_secs_f64() >= waited, "{took:?} < {waited}");
        // The attempt started after the wait, not before it.
        let run_start = report["start"].as_f64().unwrap();
        let attempt_start = report["attempts"][0]["start"].as_f64().unwrap();
        assert!(attempt_start - run_start >= waited - 0.01, "{report:#}");
        waits.push(waited);
    }
    // Four draws all below 50ms: one chance in 160000 for a uniform wait.
    assert!(waits.iter().any(|&w| w > 0.05), "{waits:?}");
    // Not one value for every run either.
    assert!(waits.windows(2).any(|w| (w[0] - w[1]).abs() > 0.001), "{waits:?}");
}

#[test]
fn no_stagger_and_stagger_0_wait_nothing() {
    let dir = TempDir::new("stagger-none");
    for args in [&["--", "true"][..], &["--stagger", "0", "-v", "--", "true"]] {
        let (out, report, _) = reported(&dir, args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(report["stagger_s"].as_f64(), Some(0.0), "{args:?}");
        assert!(!stderr(&out).contains("stagger"), "{}", stderr(&out));
    }
}

#[test]
fn verbose_shows_the_wait_before_the_first_attempt() {
    let dir = TempDir::new("stagger-verbose");
    let out = run(
        &dir,
        &["-v", "--stagger", "200ms", "-a", "2", "-d", "0", "--", "false"],
    );
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("[patience] staggering start by "), "{err}");
    assert!(lines[1].contains("attempt 1/2 starting"), "{err}");
    // Only the first attempt is staggered.
    assert_eq!(err.matches("staggering").count(), 1, "{err}");
}

#[test]
fn a_stop_signal_during_the_stagger_ends_the_run_at_once_with_nothing_started() {
    let dir = TempDir::new("stagger-signal");
    let marker = dir.join("ran");
    let report = dir.join("report.json");
    let mut p = spawn(
        &dir,
        &[
            "--stagger",
            "1h",
            "--summary-json",
            report.to_str().unwrap(),
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert!(eventually(LONG, || catches(p.id(), libc::SIGTERM)));
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    send_signal(p.id(), "TERM");
    let status = p.wait_status(LONG);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(143));
    assert!(took < Duration::from_secs(2), "ended {took:?} after SIGTERM");
    assert!(!marker.exists(), "the command must not have run");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["attempts_total"], 0, "{v:#}");
    assert_eq!(v["exit_status"], 143, "{v:#}");
    let waited = v["stagger_s"].as_f64().unwrap();
    assert!(waited > 0.1 && waited < 60.0, "{v:#}");
}

#[test]
fn the_stagger_is_cut_so_the_first_attempt_starts_before_the_deadline() {
    let dir = TempDir::new("stagger-deadline");
    let marker = dir.join("ran");
    let marker_s = marker.to_str().unwrap();
    for _ in 0..3 {
        let _ = std::fs::remove_file(&marker);
        let (out, report, took) = reported(
            &dir,
            &[
                "-v",
                "--stagger",
                "1h",
                "--deadline",
                "700ms",
                "--",
                "touch",
                marker_s,
            ],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(marker.exists(), "the command ran: {}", stderr(&out));
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(report["stagger_s"].as_f64().unwrap() < 0.9, "{report:#}");
        let err = stderr(&out);
        assert!(
            err.contains("(--stagger 1h cut to the ") && err.contains("ms left before --deadline)"),
            "{err}"
        );
    }
    // The wait counts against the deadline: wait and attempt together end
    // by it (the attempt is stopped there, as without a stagger).
    let (out, report, took) = reported(
        &dir,
        &["--stagger", "1h", "--deadline", "700ms", "--", "sleep", "10"],
    );
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let waited = report["stagger_s"].as_f64().unwrap();
    let ran = report["attempts"][0]["duration_s"].as_f64().unwrap();
    assert!(waited + ran < 1.2, "{report:#}");
}

#[test]
fn a_staggering_run_holds_no_slot_yet() {
    let dir = TempDir::new("stagger-slot");
    let first_marker = dir.join("first");
    let second_marker = dir.join("second");
    let mut first = spawn(
        &dir,
        &[
            "--key",
            "k",
            "--max-concurrent",
            "1",
            "--stagger",
            "1h",
            "--",
            "touch",
            first_marker.to_str().unwrap(),
        ],
    );
    assert!(eventually(LONG, || catches(first.id(), libc::SIGTERM)));
    std::thread::sleep(Duration::from_millis(200));
    // The overlap guard is taken after the splay: a run that is only
    // waiting does not make another one exit 75.
    let out = run(
        &dir,
        &[
            "--key",
            "k",
            "--max-concurrent",
            "1",
            "--",
            "touch",
            second_marker.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(second_marker.exists());
    send_signal(first.id(), "TERM");
    assert_eq!(first.wait_status(LONG).code(), Some(143));
    assert!(!first_marker.exists());
}

#[test]
fn dry_run_shows_the_stagger_and_waits_nothing() {
    let dir = TempDir::new("stagger-dry");
    let started = Instant::now();
    let out = run(&dir, &["--dry-run", "--stagger", "5m", "--", "true"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("stagger "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("5m") && row.contains("(command line)"), "{row}");
    assert!(
        text.contains("before attempt 1: a random wait in [0, 5m)\n"),
        "{text}"
    );

    let out = run(
        &dir,
        &["--dry-run", "--stagger", "1h", "--deadline", "10m", "--", "true"],
    );
    let text = stdout(&out);
    assert!(
        text.contains("before attempt 1: a random wait in [0, 10m) (--stagger 1h cut to --deadline)"),
        "{text}"
    );

    let out = run(&dir, &["--dry-run", "--", "true"]);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("stagger "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("none"), "{row}");
    assert!(!text.contains("random wait"), "{text}");
}

#[test]
fn the_config_key_stagger_sets_it() {
    let dir = TempDir::new("stagger-config");
    let file = dir.join("p.toml");
    std::fs::write(&file, "[defaults]\nstagger = \"2m\"\n").unwrap();
    let out = run(
        &dir,
        &["--config", file.to_str().unwrap(), "--dry-run", "--", "true"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("stagger "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("2m") && row.contains("p.toml"), "{row}");

    std::fs::write(&file, "[defaults]\nstagger = \"-1s\"\n").unwrap();
    let out = run(&dir, &["--config", file.to_str().unwrap(), "--", "true"]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("stagger") && err.contains("-1s"), "{err}");
}

#[test]
fn bad_values_are_a_usage_error_naming_the_option_and_value() {
    let dir = TempDir::new("stagger-bad");
    let marker = dir.join("ran");
    for bad in ["-1s", "x", "", "1s2", "101y", "NaN"] {
        let out = run(&dir, &["--stagger", bad, "--", "touch", marker.to_str().unwrap()]);
        assert_eq!(code(&out), 125, "--stagger {bad:?}: {}", stderr(&out));
        let err = stderr(&out);
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.contains("--stagger") && first.contains(&format!("'{bad}'")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!marker.exists());
    }
    // A missing value too.
    let out = run(&dir, &["--stagger"]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("--stagger"), "{}", stderr(&out));
}
