//! An explicit list of delays, `-d 1s,5s,30s` (Debian's `retry -d 1,5,30`):
//! waited in order, the last one repeating, with `--max-delay` and
//! `--jitter` still applied; from the command line or the config file's
//! `delay` (a string or an array); shown by `--dry-run`; refused with a
//! backoff someone chose, and when malformed.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The `delay_after_s` of every attempt of a run's `--summary-json`.
fn delays_after(dir: &TempDir, args: &[&str]) -> (std::process::Output, Vec<Option<f64>>) {
    let path = dir.join("report.json");
    let path_text = path.to_string_lossy().into_owned();
    let mut all = vec!["--summary-json", &path_text];
    all.extend_from_slice(args);
    let out = run(dir, &all);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no report: {e}; {}", stderr(&out)));
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let delays = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["delay_after_s"].as_f64())
        .collect();
    (out, delays)
}

#[test]
fn a_delay_list_is_waited_in_order_and_its_last_delay_repeats() {
    let dir = TempDir::new("dlist-run");
    let started = Instant::now();
    let (out, delays) = delays_after(&dir, &["-a", "5", "-d", "100ms,300ms,50ms", "--", "false"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(delays, [Some(0.1), Some(0.3), Some(0.05), Some(0.05), None]);
    assert!(took >= Duration::from_millis(490), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The messages say the listed delays too.
    let err = stderr(&out);
    assert!(err.contains("retrying in 300ms"), "{err}");

    // --max-delay caps a listed delay; --jitter spreads each one.
    let (_, delays) = delays_after(
        &dir,
        &[
            "-a",
            "3",
            "-d",
            "50ms,900ms",
            "--max-delay",
            "200ms",
            "--",
            "false",
        ],
    );
    assert_eq!(delays, [Some(0.05), Some(0.2), None]);
    let (_, delays) = delays_after(
        &dir,
        &["-a", "4", "-d", "100ms,200ms", "--jitter", "0.5", "--", "false"],
    );
    for (d, listed) in delays.iter().zip([0.1, 0.2, 0.2]) {
        let d = d.unwrap();
        assert!(
            d >= listed * 0.5 - 1e-9 && d <= listed * 1.5 + 1e-9,
            "{d} for {listed}: {delays:?}"
        );
    }
}

#[test]
fn dry_run_shows_the_list_and_its_schedule() {
    let dir = TempDir::new("dlist-dry");
    let out = run(
        &dir,
        &[
            "--dry-run",
            "-a",
            "6",
            "-d",
            "1s,5s,30s",
            "--max-delay",
            "20s",
            "--",
            "true",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let row = |key: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} row: {text}"))
            .to_string()
    };
    assert!(
        row("delay").contains("1s,5s,30s") && row("delay").contains("(command line)"),
        "{text}"
    );
    assert!(row("backoff").contains("none (a delay list)"), "{text}");
    for expected in [
        "after attempt 1: 1s\n",
        "after attempt 2: 5s\n",
        "after attempt 3: 20s\n",
        "after attempt 5: 20s\n",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
}

#[test]
fn the_config_key_takes_a_string_or_an_array() {
    let dir = TempDir::new("dlist-config");
    let file = dir.join("config/patience/config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    for (text, shown) in [
        ("[defaults]\ndelay = \"1s,5s\"\n", "1s,5s"),
        ("[defaults]\ndelay = [\"1s\", \"1.5s\", 30]\n", "1s,1.5s,30s"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = run(&dir, &["--dry-run", "--", "true"]);
        assert_eq!(code(&out), 0, "{text}: {}", stderr(&out));
        let delay = stdout(&out)
            .lines()
            .find(|l| l.starts_with("delay "))
            .unwrap()
            .to_string();
        assert!(delay.contains(shown) && delay.contains("config.toml"), "{delay}");
    }
    // The file's list with a backoff chosen on the command line: both named.
    let out = run(&dir, &["-b", "linear", "--", "true"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(
        err.contains("delay '1s,1.5s,30'") && err.contains("config.toml:2"),
        "{err}"
    );
    assert!(err.contains("--backoff 'linear'"), "{err}");
    // And a backoff from the file under a list from the command line.
    std::fs::write(&file, "[defaults]\nbackoff = \"jitter\"\n").unwrap();
    let out = run(&dir, &["-d", "1s,2s", "--", "true"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(
        err.contains("--delay '1s,2s'") && err.contains("backoff 'jitter'"),
        "{err}"
    );
    // A backoff of fixed goes with a list.
    std::fs::write(&file, "[defaults]\nbackoff = \"fixed\"\n").unwrap();
    let out = run(&dir, &["-a", "2", "-d", "10ms,20ms", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn bad_lists_are_usage_errors_naming_the_option_and_value() {
    let dir = TempDir::new("dlist-bad");
    for (args, needles) in [
        (
            &["-d", "1s,,2s"][..],
            &["--delay '1s,,2s'", "delay 2 is empty"][..],
        ),
        (&["-d", "1s,"], &["--delay '1s,'"]),
        (&["--delay", ",1s"], &["--delay ',1s'"]),
        (&["-d", "1s,nope"], &["--delay '1s,nope'", "nope"]),
        (&["-d", "1s,-2s"], &["--delay '1s,-2s'"]),
        (
            &["-d", "1s,5s", "-b", "exponential"],
            &["--delay '1s,5s'", "--backoff 'exponential'"],
        ),
        (
            &["-b", "decorrelated-jitter", "-d", "1s,5s"],
            &["--delay '1s,5s'", "--backoff 'decorrelated-jitter'"],
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--", "true"]);
        let out = run(&dir, &all);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{args:?}: {err}");
        assert!(
            err.starts_with("patience: ") && !err.contains("panicked"),
            "{err}"
        );
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} in {err}");
        }
    }
}
