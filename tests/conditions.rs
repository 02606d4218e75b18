//! Success and failure rules, end to end: exit-code sets, output patterns,
//! `--transient`, `--match-stream`, the exit status when a pattern fails an
//! attempt that exited with a success code, what `--summary-json` records,
//! and bad or pathological patterns.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs patience with `--summary-json` and no delays; returns the output
/// and the parsed report.
fn report(dir: &TempDir, args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let path = dir.join(format!("report-{}.json", unique_sleep_secs()));
    let path_text = path.to_string_lossy().into_owned();
    let mut all = vec!["--summary-json", &path_text, "-d", "0"];
    all.extend_from_slice(args);
    let out = run(dir, &all);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no report: {e}; {}", stderr(&out)));
    let _ = std::fs::remove_file(&path);
    (out, serde_json::from_str(&text).unwrap())
}

fn attempts(json: &serde_json::Value) -> u64 {
    json["attempts_total"].as_u64().unwrap()
}

fn rules(json: &serde_json::Value) -> Vec<String> {
    json["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_success_pattern_reached_on_attempt_three() {
    let dir = TempDir::new("cond-success");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "5",
            "--success-pattern",
            "^READY$",
            "--",
            "sh",
            "-c",
            r#"if [ $PATIENCE_ATTEMPT -ge 3 ]; then echo READY; else echo starting; fi"#,
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(attempts(&json), 3);
    assert_eq!(stdout(&out), "starting\nstarting\nREADY\n");
    let r = rules(&json);
    assert_eq!(r[0], "no success pattern matched");
    assert_eq!(r[2], "success pattern '^READY$'");
    assert!(
        stderr(&out).contains("exit code 0, no success pattern matched"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failure_pattern_fails_an_attempt_that_exited_zero() {
    let dir = TempDir::new("cond-failure");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "2",
            "--failure-pattern",
            "ERROR",
            "--",
            "sh",
            "-c",
            "echo 'ERROR: disk full' >&2; exit 0",
        ],
    );
    // 1, never 0: a script must not read a failed run as a success.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(attempts(&json), 2);
    assert_eq!(json["exit_status"], 1);
    assert_eq!(rules(&json)[1], "failure pattern 'ERROR'");
    assert_eq!(json["attempts"][1]["outcome"], "failure");

    // The same with any code of --success-exit.
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "--success-exit",
            "0,3",
            "--failure-pattern",
            "ERROR",
            "--",
            "sh",
            "-c",
            "echo ERROR; exit 3",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // A failing exit code stays the status.
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "--failure-pattern",
            "ERROR",
            "--",
            "sh",
            "-c",
            "echo ERROR; exit 4",
        ],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
}

#[test]
fn an_abort_pattern_stops_at_attempt_one() {
    let dir = TempDir::new("cond-abort");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "5",
            "--abort-pattern",
            "invalid credentials",
            "--",
            "sh",
            "-c",
            "echo 'login: invalid credentials' >&2; exit 2",
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(attempts(&json), 1);
    assert_eq!(json["attempts"][0]["outcome"], "final-failure");
    assert_eq!(
        rules(&json)[0],
        "exit code 2; abort pattern 'invalid credentials'"
    );
    // Without the match, the same failure is retried.
    let (_, json) = report(
        &dir,
        &[
            "-a",
            "3",
            "--abort-pattern",
            "invalid credentials",
            "--",
            "sh",
            "-c",
            "exit 2",
        ],
    );
    assert_eq!(attempts(&json), 3);
}

#[test]
fn a_retry_pattern_retries_only_matching_failures() {
    let dir = TempDir::new("cond-retry");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "10",
            "--retry-pattern",
            "busy",
            "--retry-pattern",
            "try again",
            "--",
            "sh",
            "-c",
            r#"case $PATIENCE_ATTEMPT in 1) echo busy;; 2) echo 'please try again';; *) echo broken;; esac; exit 1"#,
        ],
    );
    assert_eq!(code(&out), 1);
    assert_eq!(attempts(&json), 3);
    let r = rules(&json);
    assert_eq!(
        r,
        [
            "exit code 1; retry pattern 'busy'",
            "exit code 1; retry pattern 'try again'",
            "exit code 1; no retry pattern matched"
        ]
    );
}

#[test]
fn exit_code_sets() {
    let dir = TempDir::new("cond-codes");
    let n = |args: &[&str]| {
        let (out, json) = report(&dir, args);
        (code(&out), attempts(&json))
    };
    // --success-exit: lists and ranges.
    assert_eq!(n(&["--success-exit", "0,2", "--", "sh", "-c", "exit 2"]), (0, 1));
    assert_eq!(
        n(&["--success-exit", "0-3,5", "--", "sh", "-c", "exit 5"]),
        (0, 1)
    );
    assert_eq!(
        n(&["-a", "2", "--success-exit", "0-3,5", "--", "sh", "-c", "exit 4"]),
        (4, 2)
    );
    // --retry-exit: only those codes are retried.
    assert_eq!(
        n(&["-a", "4", "--retry-exit", "1,3", "--", "sh", "-c", "exit 3"]),
        (3, 4)
    );
    assert_eq!(
        n(&["-a", "4", "--retry-exit", "1,3", "--", "sh", "-c", "exit 2"]),
        (2, 1)
    );
    // --stop-exit: final at once.
    assert_eq!(
        n(&["-a", "4", "--stop-exit", "7-9", "--", "sh", "-c", "exit 8"]),
        (8, 1)
    );
    assert_eq!(
        n(&["-a", "2", "--stop-exit", "7-9", "--", "sh", "-c", "exit 6"]),
        (6, 2)
    );
    // A death by signal N counts as 128+N.
    assert_eq!(
        n(&["-a", "3", "--stop-exit", "143", "--", "sh", "-c", "kill -TERM $$"]),
        (143, 1)
    );
    // Not found (127) is final unless --retry-exit names it.
    assert_eq!(n(&["-a", "3", "--", "/nonexistent/cmd"]), (127, 1));
    assert_eq!(
        n(&["-a", "3", "--retry-exit", "127", "--", "/nonexistent/cmd"]),
        (127, 3)
    );
}

#[test]
fn a_timeout_is_124_in_the_exit_code_sets() {
    let dir = TempDir::new("cond-timeout-124");
    let sleeper = ["--", "sleep", "10"];
    let with = |extra: &[&'static str]| {
        let mut args = vec!["-a", "3", "-t", "200ms", "-k", "1s"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&sleeper);
        args
    };
    // --stop-exit 124: the first timeout ends the run.
    let started = Instant::now();
    let (out, json) = report(&dir, &with(&["--stop-exit", "124"]));
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert_eq!(attempts(&json), 1);
    assert_eq!(rules(&json), ["timeout (--stop-exit)"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // --retry-exit without 124: a timeout is final.
    let (out, json) = report(&dir, &with(&["--retry-exit", "1"]));
    assert_eq!((code(&out), attempts(&json)), (124, 1), "{}", stderr(&out));
    assert_eq!(rules(&json), ["timeout (not in --retry-exit)"]);
    // --retry-exit 1,124: timeouts are retried, and code 1 too, but not 2.
    let (out, json) = report(&dir, &with(&["--retry-exit", "1,124"]));
    assert_eq!((code(&out), attempts(&json)), (124, 3), "{}", stderr(&out));
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "3",
            "-t",
            "5s",
            "--retry-exit",
            "1,124",
            "--",
            "sh",
            "-c",
            "exit $PATIENCE_ATTEMPT",
        ],
    );
    assert_eq!((code(&out), attempts(&json)), (2, 2), "{}", stderr(&out));
}

#[test]
fn a_failed_run_never_exits_zero() {
    // Exit code 0 outside --success-exit is a failure; the run's status is
    // then 1, as when a pattern fails it, never a 0 a script reads as success.
    let dir = TempDir::new("cond-codes2");
    let (out, json) = report(&dir, &["-a", "2", "--success-exit", "2", "--", "true"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(attempts(&json), 2);
    assert_eq!(json["status"], "failed");
}

#[test]
fn transient_retries_connection_refused_but_not_a_404() {
    let dir = TempDir::new("cond-transient");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "3",
            "--transient",
            "--",
            "sh",
            "-c",
            "echo 'curl: (7) Failed to connect to 127.0.0.1 port 9: Connection refused' >&2; exit 7",
        ],
    );
    assert_eq!(code(&out), 7);
    assert_eq!(attempts(&json), 3);
    assert_eq!(
        rules(&json)[0],
        "exit code 7; transient error: connection refused"
    );

    let (out, json) = report(
        &dir,
        &[
            "-a",
            "3",
            "--transient",
            "--",
            "sh",
            "-c",
            "echo 'curl: (22) The requested URL returned error: 404' >&2; exit 22",
        ],
    );
    assert_eq!(code(&out), 22);
    assert_eq!(attempts(&json), 1);
    assert_eq!(json["attempts"][0]["outcome"], "final-failure");

    // Exit code 75 (EX_TEMPFAIL) is transient too.
    let (out, json) = report(&dir, &["-a", "2", "--transient", "--", "sh", "-c", "exit 75"]);
    assert_eq!((code(&out), attempts(&json)), (75, 2));
}

#[test]
fn transient_with_a_real_refused_connection() {
    // curl against a closed loopback port, when curl is there.
    if !have_tool("curl", "--version", "curl") {
        return;
    }
    let dir = TempDir::new("cond-curl");
    let (out, json) = report(
        &dir,
        &[
            "-a",
            "2",
            "--transient",
            "--",
            "curl",
            "-sS",
            "http://127.0.0.1:9/",
        ],
    );
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert_eq!(attempts(&json), 2);
}

#[test]
fn match_stream_ignores_the_other_stream() {
    let dir = TempDir::new("cond-stream");
    let script = "echo 'fatal on stderr' >&2; echo 'fine on stdout'";
    let n = |stream: &str| {
        let (out, json) = report(
            &dir,
            &[
                "-a",
                "2",
                "--match-stream",
                stream,
                "--failure-pattern",
                "fatal",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        (code(&out), attempts(&json))
    };
    assert_eq!(n("stdout"), (0, 1));
    assert_eq!(n("stderr"), (1, 2));
    assert_eq!(n("both"), (1, 2));
    let out = run(
        &dir,
        &[
            "--match-stream",
            "stdout",
            "--failure-pattern",
            "fatal",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(stderr(&out), "fatal on stderr\n");
}

#[test]
fn invalid_utf8_output_is_still_matched() {
    let dir = TempDir::new("cond-utf8");
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "--failure-pattern",
            "^.. ERROR$",
            "--",
            "sh",
            "-c",
            r"printf '\377\376 ERROR\n'",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(out.stdout, b"\xff\xfe ERROR\n");
}

#[test]
fn bad_patterns_are_usage_errors_before_anything_runs() {
    let dir = TempDir::new("cond-bad");
    let marker = dir.join("ran");
    let touch = format!("touch {}", marker.display());
    let long = "a".repeat(5000);
    for (opt, pat) in [
        ("--failure-pattern", "("),
        ("--success-pattern", "a{1000}{1000}"),
        ("--abort-pattern", r"(a)\1"),
        ("--retry-pattern", r"\p{Greek}"),
        ("--failure-pattern", long.as_str()),
    ] {
        let out = run(&dir, &[opt, pat, "--", "sh", "-c", &touch]);
        assert_eq!(code(&out), 125, "{opt} {pat}");
        let err = stderr(&out);
        assert!(err.starts_with(&format!("patience: {opt} ")), "{err}");
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(!marker.exists(), "the command ran for {opt} {pat}");
    }
    for (opt, val) in [
        ("--success-exit", "256"),
        ("--retry-exit", "3-1"),
        ("--stop-exit", ""),
        ("--match-stream", "all"),
    ] {
        let out = run(&dir, &[opt, val, "--", "true"]);
        assert_eq!(code(&out), 125, "{opt} {val}");
        assert!(stderr(&out).contains(opt), "{}", stderr(&out));
    }
}

#[test]
fn pathological_patterns_take_linear_time() {
    let dir = TempDir::new("cond-redos");
    for (pat, script) in [
        // 1 MB of a's in lines of 1000, each ending in '!'.
        ("(a+)+$", "i=0; l=$(head -c 1000 /dev/zero | tr '\\0' a); while [ $i -lt 1000 ]; do echo \"$l!\"; i=$((i+1)); done"),
        ("(a?){25}a{25}", "head -c 1000000 /dev/zero | tr '\\0' a; echo"),
        // One 100 KB line: is_match on a bounded line, never find_iter.
        (".*[^A-Z]|[A-Z]Q", "head -c 100000 /dev/zero | tr '\\0' A; echo"),
    ] {
        let start = Instant::now();
        let out = run(&dir, &["-a", "1", "--failure-pattern", pat, "--", "sh", "-c", script]);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(20), "{pat}: {took:?}");
        assert!(matches!(code(&out), 0 | 1), "{pat}: {}", stderr(&out));
    }
}
