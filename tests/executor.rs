//! The attempt loop, timeouts over the process tree, signals and exit
//! statuses, checked by running the real `patience` binary.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn retries_then_exits_with_the_last_code() {
    let dir = TempDir::new("retry");
    let out = run(&dir, &["-d", "10ms", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7);
    let err = stderr(&out);
    assert!(
        err.contains("attempt 1/3 failed (exit code 7); retrying in 10ms"),
        "{err}"
    );
    assert!(
        err.contains("attempt 2/3 failed (exit code 7); retrying in 20ms"),
        "{err}"
    );
    assert!(err.contains("failed after 3 attempts (exit code 7"), "{err}");
    assert!(err.contains("max attempts reached"), "{err}");
    assert!(
        !err.contains("attempt 3/3 failed"),
        "no retry line after the last attempt: {err}"
    );
}

#[test]
fn flaky_command_succeeds_on_attempt_three() {
    let dir = TempDir::new("flaky");
    let script = r#"echo "try $PATIENCE_ATTEMPT of $PATIENCE_MAX_ATTEMPTS"; [ "$PATIENCE_ATTEMPT" -ge 3 ]"#;
    let out = run(&dir, &["-a", "5", "-d", "10ms", "--", "sh", "-c", script]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "try 1 of 5\ntry 2 of 5\ntry 3 of 5\n");
    assert!(
        stderr(&out).contains("succeeded after 3 attempts"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn first_attempt_success_is_silent_and_passes_output_through() {
    let dir = TempDir::new("silent");
    let out = run(&dir, &["--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n", "patience itself must say nothing");
}

#[test]
fn unlimited_attempts_show_no_maximum() {
    let dir = TempDir::new("forever");
    let out = run(
        &dir,
        &[
            "--forever",
            "-d",
            "1ms",
            "--",
            "sh",
            "-c",
            "[ $PATIENCE_ATTEMPT -ge 4 ] && [ $PATIENCE_MAX_ATTEMPTS = 0 ]",
        ],
    );
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("attempt 3 failed"), "{}", stderr(&out));
}

#[test]
fn not_found_and_not_executable_are_final_at_once() {
    let dir = TempDir::new("notfound");
    let start = Instant::now();
    let out = run(
        &dir,
        &["-a", "5", "-d", "2s", "--", "no-such-command-patience-test"],
    );
    assert_eq!(code(&out), 127);
    assert!(stderr(&out).contains("command not found"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed after 1 attempt"),
        "{}",
        stderr(&out)
    );

    let file = dir.join("not-exec");
    std::fs::write(&file, "#!/bin/sh\necho hi\n").unwrap();
    let out = run(&dir, &["-a", "5", "-d", "2s", "--", file.to_str().unwrap()]);
    assert_eq!(code(&out), 126);
    let out = run(&dir, &["-a", "5", "-d", "2s", "--", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 126, "a directory is not executable");
    assert!(start.elapsed() < Duration::from_secs(2), "no delay may be waited");
}

#[test]
fn timeout_gives_124_promptly() {
    let dir = TempDir::new("timeout");
    let start = Instant::now();
    let out = run(&dir, &["-a", "1", "-t", "300ms", "--", "sleep", "30"]);
    let took = start.elapsed();
    assert_eq!(code(&out), 124);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(stderr(&out).contains("timeout after 300ms"), "{}", stderr(&out));
}

#[test]
fn tiny_timeout_fires_and_zero_means_none() {
    let dir = TempDir::new("tiny");
    let out = run(&dir, &["-a", "1", "-t", "1ns", "--", "sleep", "10"]);
    assert_eq!(code(&out), 124);
    let out = run(
        &dir,
        &["-a", "1", "-t", "0", "--", "sh", "-c", "sleep 0.2; exit 3"],
    );
    assert_eq!(code(&out), 3, "timeout 0 is no timeout");
}

#[test]
fn huge_timeout_neither_panics_nor_fires() {
    let dir = TempDir::new("huge");
    let out = run(
        &dir,
        &[
            "-a", "1", "-t", "36500d", "-k", "36500d", "--", "sh", "-c", "exit 4",
        ],
    );
    assert_eq!(code(&out), 4);
}

#[test]
fn term_ignoring_child_is_killed_after_the_grace() {
    let dir = TempDir::new("kill");
    let start = Instant::now();
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "300ms",
            "-k",
            "400ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 30",
        ],
    );
    let took = start.elapsed();
    assert_eq!(code(&out), 124, "a timeout is 124 even when SIGKILL was needed");
    assert!(took >= Duration::from_millis(650), "waited the grace: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn child_that_traps_term_and_exits_zero_still_timed_out() {
    let dir = TempDir::new("trap0");
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "300ms",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ],
    );
    assert_eq!(code(&out), 124);
}

#[test]
fn timeout_takes_down_the_whole_tree() {
    let dir = TempDir::new("tree");
    let marker = unique_sleep_secs();
    let script = format!("sleep {marker} & sleep {marker}; wait");
    let out = run(&dir, &["-a", "1", "-t", "300ms", "--", "sh", "-c", &script]);
    assert_eq!(code(&out), 124);
    assert!(
        eventually(Duration::from_secs(3), || processes_matching(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "survivors: {:?}",
        processes_matching(&format!("sleep {marker}"))
    );
}

#[test]
fn grandchild_ignoring_term_gets_killed_too() {
    let dir = TempDir::new("gctrap");
    let marker = unique_sleep_secs();
    let script = format!("sh -c 'trap \"\" TERM; sleep {marker}' & sleep 100");
    let out = run(
        &dir,
        &["-a", "1", "-t", "300ms", "-k", "300ms", "--", "sh", "-c", &script],
    );
    assert_eq!(code(&out), 124);
    assert!(eventually(Duration::from_secs(3), || processes_matching(
        &format!("sleep {marker}")
    )
    .is_empty()));
}

#[test]
fn sigterm_to_patience_is_forwarded_and_gives_143() {
    let dir = TempDir::new("sigterm");
    let marker = unique_sleep_secs();
    let script = format!("sleep {marker} & sleep {marker}; wait");
    let child = patience(&dir)
        .args(["-a", "5", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Guard::new(child);
    assert!(eventually(Duration::from_secs(5), || processes_matching(
        &format!("sleep {marker}")
    )
    .len()
        >= 2));
    let start = Instant::now();
    send_signal(guard.id(), "TERM");
    let out = guard.wait_output(Duration::from_secs(10));
    assert_eq!(code(&out), 143);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        stderr(&out).contains("stopped by SIGTERM after 1 attempt"),
        "{}",
        stderr(&out)
    );
    assert!(eventually(Duration::from_secs(3), || processes_matching(
        &format!("sleep {marker}")
    )
    .is_empty()));
}

#[test]
fn sigint_during_a_delay_ends_the_run_at_once() {
    let dir = TempDir::new("sigint");
    let child = patience(&dir)
        .args(["-a", "5", "-d", "60s", "--", "false"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    // Wait for the first failure message: the delay has begun.
    let err = guard.child().stderr.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(err), &mut line).unwrap();
    assert!(line.contains("retrying in 1m"), "{line}");
    let start = Instant::now();
    send_signal(guard.id(), "INT");
    let status = guard.wait_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[test]
fn death_by_signal_is_128_plus_n() {
    let dir = TempDir::new("signal");
    let out = run(&dir, &["-a", "2", "-d", "1ms", "--", "sh", "-c", "kill -USR1 $$"]);
    assert_eq!(code(&out), 128 + 10);
    assert!(stderr(&out).contains("killed by SIGUSR1"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed after 2 attempts"),
        "a signal death is retried"
    );
}

#[test]
fn deadline_caps_delays_and_stops_a_running_attempt() {
    let dir = TempDir::new("deadline");
    // The second delay (2s) would cross the 1.5s deadline: the run ends then.
    let start = Instant::now();
    let out = run(
        &dir,
        &["-a", "10", "-d", "1s", "--deadline", "1.5s", "--", "false"],
    );
    let took = start.elapsed();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("deadline reached"), "{}", stderr(&out));
    assert!(
        took < Duration::from_millis(1400),
        "no delay runs past the deadline: {took:?}"
    );

    // An attempt still running at the deadline is stopped as by --timeout.
    let start = Instant::now();
    let out = run(
        &dir,
        &["-a", "3", "-t", "60s", "--deadline", "500ms", "--", "sleep", "30"],
    );
    let took = start.elapsed();
    assert_eq!(code(&out), 124);
    assert!(
        took >= Duration::from_millis(480) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(
        stderr(&out).contains("failed after 1 attempt"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn delays_follow_the_schedule_and_none_after_the_last_attempt() {
    let dir = TempDir::new("sched");
    // exponential 200ms: 200 + 400 = 600ms of delays for 3 attempts.
    let start = Instant::now();
    let out = run(&dir, &["-a", "3", "-d", "200ms", "--", "false"]);
    let took = start.elapsed();
    assert_eq!(code(&out), 1);
    assert!(took >= Duration::from_millis(590), "{took:?}");
    assert!(
        took < Duration::from_millis(590 + 800),
        "no delay after the last attempt: {took:?}"
    );
    // fixed: 3 x 150ms.
    let start = Instant::now();
    let out = run(&dir, &["-a", "4", "-d", "150ms", "-b", "fixed", "--", "false"]);
    assert_eq!(code(&out), 1);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(440) && took < Duration::from_millis(440 + 800),
        "{took:?}"
    );
}

#[test]
fn bad_input_is_a_usage_error_naming_it() {
    let dir = TempDir::new("usage");
    let cases: &[(&[&str], &str)] = &[
        (&["--attempts", "-1", "true"], "--attempts"),
        (
            &["--attempts", "99999999999999999999", "true"],
            "99999999999999999999",
        ),
        (&["--timeout", "1e999s", "true"], "1e999s"),
        (&["--timeout", "-5s", "true"], "-5s"),
        (&["--delay", "abc", "true"], "abc"),
        (&["--backoff", "nope", "true"], "nope"),
        (&["--multiplier", "nan", "true"], "nan"),
        (&["--jitter", "2", "true"], "--jitter"),
        (&["--signal", "NOPE", "true"], "NOPE"),
        (&["--no-such-option", "true"], "--no-such-option"),
        (&["--timeout"], "--timeout"),
        (&[], "no command"),
        (&[""], "empty"),
        (&["-k", "10€", "true"], "10€"),
        (&["-d", "1.5.5s", "true"], "1.5.5s"),
        (&["-t", "9223372036854775808d", "true"], "9223372036854775808d"),
        (&["--max-delay", "0", "true"], "--max-delay"),
    ];
    for (args, needle) in cases {
        let out = run(&dir, args);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: message should name {needle:?}: {err}"
        );
        assert!(err.starts_with("patience: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn options_after_the_command_belong_to_it() {
    let dir = TempDir::new("argv");
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "--",
            "sh",
            "-c",
            "echo \"$@\"",
            "sh",
            "-k",
            "5",
            "--timeout",
            "x",
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "-k 5 --timeout x\n");
    let out = run(&dir, &["-a", "1", "echo", "-a", "9"]);
    assert_eq!(stdout(&out), "-a 9\n");
}

#[test]
fn non_utf8_arguments_pass_through_byte_exact() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("utf8");
    let weird = std::ffi::OsStr::from_bytes(b"caf\xe9\xff");
    let out = patience(&dir)
        .args(["--", "printf", "%s"])
        .arg(weird)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert_eq!(out.stdout, b"caf\xe9\xff");
}

#[test]
fn help_and_version() {
    let dir = TempDir::new("help");
    let out = run(&dir, &["--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: patience"));
    let out = run(&dir, &["-V"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("patience "));
}

#[test]
fn dry_run_prints_the_schedule_and_runs_nothing() {
    let dir = TempDir::new("dry");
    let flag = dir.join("ran");
    let cmd = format!("touch {}", flag.display());
    let out = run(
        &dir,
        &[
            "--dry-run",
            "-a",
            "4",
            "-d",
            "1s",
            "-b",
            "linear",
            "--",
            "sh",
            "-c",
            &cmd,
        ],
    );
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("after attempt 1: 1s") && text.contains("after attempt 3: 3s"),
        "{text}"
    );
    assert!(!text.contains("after attempt 4"), "{text}");
    assert!(!flag.exists(), "--dry-run must not run the command");
    let out = run(&dir, &["--dry-run", "-b", "jitter", "--", "true"]);
    assert!(
        stdout(&out).contains("after attempt 2: 0ms to 2s"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn summary_json_records_every_attempt() {
    let dir = TempDir::new("json");
    let path = dir.join("report.json");
    let out = run(
        &dir,
        &[
            "-a",
            "3",
            "-d",
            "10ms",
            "--summary-json",
            path.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(code(&out), 3);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["exit_status"], 3);
    assert_eq!(v["reason"], "max attempts reached");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["exit_code"], 3);
    assert_eq!(attempts[0]["delay_after_s"], 0.01);
    assert!(attempts[2]["delay_after_s"].is_null());
}

#[test]
fn summary_prints_statistics() {
    let dir = TempDir::new("summary");
    let out = run(&dir, &["--summary", "--", "true"]);
    assert_eq!(code(&out), 0);
    let err = stderr(&out);
    assert!(
        err.contains("summary: attempts 1, succeeded 1, failed 0"),
        "{err}"
    );
}

#[test]
fn quiet_prints_only_the_final_failure() {
    let dir = TempDir::new("quiet");
    let out = run(&dir, &["-q", "-a", "2", "-d", "1ms", "--", "false"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("failed after 2 attempts"));
    let out = run(&dir, &["-v", "-a", "1", "--", "true"]);
    assert!(
        stderr(&out).contains("attempt 1/1 starting: true"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn color_only_when_asked_or_on_a_terminal() {
    let dir = TempDir::new("color");
    let out = run(&dir, &["-a", "1", "--", "false"]);
    assert!(!stderr(&out).contains('\x1b'), "no colour into a pipe");
    let out = run(&dir, &["--color", "always", "-a", "1", "--", "false"]);
    assert!(
        stderr(&out).contains("\x1b[31m") && stderr(&out).contains('❌'),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ignored_sigpipe_stays_ignored_in_the_child() {
    // GNU's test: (trap '' PIPE && timeout 10 yes | :) expects "Broken pipe".
    let script = format!("trap '' PIPE; {} -a 1 -- yes | :", patience_bin());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Broken pipe"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn default_sigpipe_reaches_the_child_as_default() {
    let dir = TempDir::new("pipe");
    // yes dies of SIGPIPE (141) without retrying: nobody reads any more.
    let script = format!(
        "{} -a 3 -d 1s -- yes | head -1; echo \"${{PIPESTATUS[0]}}\"",
        patience_bin()
    );
    let start = Instant::now();
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "y\n141\n");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a SIGPIPE death is not retried"
    );
    drop(dir);
}

#[test]
fn inherited_ignored_sigint_is_kept_for_the_child() {
    let dir = TempDir::new("ign");
    let script = format!(
        "trap '' INT; {} -a 1 -- sh -c 'grep SigIgn /proc/self/status'",
        patience_bin()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let mask = u64::from_str_radix(line.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert!(mask & (1 << (2 - 1)) != 0, "SIGINT should stay ignored: {line}");
    assert!(mask & (1 << (13 - 1)) == 0, "SIGPIPE should be default: {line}");
    assert!(
        mask & (1 << (21 - 1)) == 0 && mask & (1 << (22 - 1)) == 0,
        "TTIN/TTOU default: {line}"
    );
    drop(dir);
}

#[test]
fn child_exit_noticed_with_sigchld_ignored_or_blocked() {
    // Python sets the dispositions and mask, then execs patience.
    let dir = TempDir::new("chld");
    let py = format!(
        "import signal,os\nsignal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGCHLD, signal.SIGALRM, signal.SIGTERM}})\n\
         os.execv('{}', ['patience', '-a', '1', '-t', '400ms', '--', 'sh', '-c', 'exit 5'])",
        patience_bin()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    // patience's own clock: noticed at once, not at the 400ms timeout.
    assert!(
        err.contains("(exit code 5, 0.0s)") || err.contains("(exit code 5, 0.1s)"),
        "{err}"
    );
    // With SIGALRM blocked the timeout still fires.
    let py = py.replace("'sh', '-c', 'exit 5'", "'sleep', '10'");
    let out = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    drop(dir);
}

#[test]
fn closed_stderr_does_not_break_the_run() {
    let script = format!("{} -a 2 -d 1ms -- sh -c 'exit 3' 2>&-; echo $?", patience_bin());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3\n");
    // A broken stderr pipe neither: the messages are lost, the status is not.
    let script = format!(
        "{} -a 2 -d 1ms -- sh -c 'exit 3' 2>&1 | true; echo ${{PIPESTATUS[0]}}",
        patience_bin()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3\n");
}

#[test]
fn child_gets_only_the_standard_descriptors() {
    let dir = TempDir::new("fds");
    // Whatever the caller passed down (a jobserver fd, say) passes through,
    // as with timeout(1); patience itself must add nothing.
    let listing = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let direct = listing(
        std::process::Command::new("sh")
            .args(["-c", "ls /proc/$$/fd"])
            .output()
            .unwrap(),
    );
    let under = listing(run(&dir, &["-a", "1", "--", "sh", "-c", "ls /proc/$$/fd"]));
    assert_eq!(under, direct);
}

#[test]
fn sigkill_to_patience_takes_the_child_along() {
    let dir = TempDir::new("pdeath");
    let marker = unique_sleep_secs();
    let child = patience(&dir)
        .args(["--", "sleep", &marker])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    assert!(eventually(Duration::from_secs(5), || processes_matching(
        &format!("sleep {marker}")
    )
    .len()
        == 1));
    send_signal(guard.id(), "KILL");
    let _ = guard.wait_status(Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(3), || processes_matching(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "the attempt outlived patience"
    );
}

#[test]
fn nested_patience_passes_signals_down() {
    let dir = TempDir::new("nested");
    let marker = unique_sleep_secs();
    let child = patience(&dir)
        .args(["-a", "1", "--", patience_bin(), "-a", "1", "--", "sleep", &marker])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    assert!(eventually(Duration::from_secs(5), || processes_matching(
        &format!("sleep {marker}")
    )
    .len()
        == 1));
    send_signal(guard.id(), "TERM");
    let status = guard.wait_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(143));
    assert!(eventually(Duration::from_secs(3), || processes_matching(
        &format!("sleep {marker}")
    )
    .is_empty()));
}

#[test]
fn foreground_signals_only_the_child() {
    let dir = TempDir::new("fg");
    let out = run(
        &dir,
        &["--foreground", "-a", "1", "-t", "300ms", "--", "sleep", "10"],
    );
    assert_eq!(code(&out), 124);
}

#[test]
fn a_child_inherited_from_the_exec_ing_shell_does_not_confuse_patience() {
    // GNU Bug#9098: the shell forks a background child, then execs patience,
    // which thus has a child it never started.
    let script = format!("sleep 0.3 & exec {} -a 1 -t 5s -- sh -c 'exit 6'", patience_bin());
    let start = Instant::now();
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    let script = format!("sleep 0.2 & exec {} -a 1 -t 2s -- sleep 1", patience_bin());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the stranger's exit is not the attempt's"
    );
}

#[test]
fn an_inherited_ignored_sigint_is_not_acted_upon() {
    let dir = TempDir::new("ignint");
    // patience inherits SIGINT ignored (a background job); a SIGINT sent to
    // it changes nothing: the command ends with its own status. The signal
    // goes once the command runs, so patience's handlers are in place by
    // then (they are installed before the first spawn).
    let ready = dir.join("ready");
    let script = format!(
        "trap '' INT; {} -a 1 -- sh -c 'touch \"$0\"; sleep 1; exit 4' \"{}\" & pid=$!; \
         while [ ! -e \"{}\" ]; do sleep 0.01; done; kill -INT $pid; wait $pid",
        patience_bin(),
        ready.display(),
        ready.display()
    );
    let mut c = around_patience("sh", &dir);
    c.args(["-c", &script]);
    let out = output(c);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
}

#[test]
fn a_stopped_child_is_continued_so_the_timeout_can_end_it() {
    let dir = TempDir::new("stopped");
    // The child stops itself; SIGTERM alone would wait for a SIGCONT that
    // never comes, and only the SIGKILL after 5 s would end it.
    let start = Instant::now();
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "300ms",
            "-k",
            "5s",
            "--",
            "sh",
            "-c",
            "kill -STOP $$; sleep 10",
        ],
    );
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

#[test]
fn a_child_that_closes_its_output_still_times_out() {
    let dir = TempDir::new("closed-out");
    for extra in [&[][..], &["--failure-pattern", "x"][..], &["--hold-output"][..]] {
        let start = Instant::now();
        let out = run(
            &dir,
            &[
                &["-a", "1", "-t", "800ms"][..],
                extra,
                &["--", "sh", "-c", "echo hi; exec >&- 2>&-; sleep 10"][..],
            ]
            .concat(),
        );
        assert_eq!(code(&out), 124, "{extra:?}: {}", stderr(&out));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{extra:?}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_zero_delay_stays_zero_past_attempt_1024() {
    // 0 * 2^1024 is NaN in f64; it once became the one-minute cap, and
    // attempt 1025 of a zero-delay loop waited a minute.
    let dir = TempDir::new("zero-1100");
    let start = Instant::now();
    let out = run(&dir, &["-a", "1100", "-d", "0", "-q", "--", "false"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed after 1100 attempts"),
        "{}",
        stderr(&out)
    );
    assert!(start.elapsed() < Duration::from_secs(40), "{:?}", start.elapsed());
}

#[test]
fn an_unwritable_summary_json_is_refused_before_the_command_runs() {
    let dir = TempDir::new("sj");
    let marker = dir.join("ran");
    let path = dir.join("no-such-dir/report.json");
    let out = run(
        &dir,
        &[
            "--summary-json",
            path.to_str().unwrap(),
            "touch",
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("--summary-json"), "{}", stderr(&out));
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn a_signal_right_after_the_start_leaves_no_process_behind() {
    // RELIABILITY C.22: the signal may come before the attempt is spawned,
    // while it is, or just after; whatever the moment, nothing survives.
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("early");
    let marker = unique_sleep_secs();
    for i in 0..40u64 {
        let child = patience(&dir)
            .args(["-a", "3", "--", "sleep", &marker])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut guard = Guard::new(child);
        std::thread::sleep(Duration::from_micros(i * 250));
        patience::sys::kill(guard.id(), libc::SIGTERM).unwrap();
        let st = guard.wait_status(Duration::from_secs(10));
        // Before its handlers are installed (before any spawn) patience dies
        // of the signal itself; after, it forwards it and exits 143.
        assert!(
            st.code() == Some(143) || st.signal() == Some(libc::SIGTERM),
            "after {} us: {st:?}",
            i * 250
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || processes_matching(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "a sleep outlived its patience"
    );
}

#[test]
fn no_signal_ever_reaches_a_reaped_pid() {
    // RELIABILITY C.23: every kill(2) of an attempt's pid or group comes
    // before the wait4(2) that reaps it, for timeouts, plain exits, and
    // leftovers killed after the leader exited.
    if !have_strace() {
        return;
    }
    let dir = TempDir::new("reaped");
    let trace = dir.join("trace");
    for args in [
        &[
            "-a",
            "2",
            "-d",
            "10ms",
            "-t",
            "200ms",
            "--",
            "sh",
            "-c",
            "sleep 5 & sleep 5",
        ][..],
        &["-a", "3", "-d", "1ms", "--", "sh", "-c", "sleep 5 & exit 1"][..],
        &[
            "-a",
            "2",
            "-d",
            "1ms",
            "--init",
            "--",
            "sh",
            "-c",
            "setsid sleep 5 & exit 1",
        ][..],
    ] {
        let out = around_patience("strace", &dir)
            .args(["-f", "-e", "trace=kill,wait4", "-o"])
            .arg(&trace)
            .arg(patience_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.code().is_some(), "{args:?}: {:?}", out.status);
        let text = std::fs::read_to_string(&trace).unwrap();
        let mut reaped = std::collections::HashSet::new();
        let mut kills = 0;
        for line in text.lines() {
            if let Some(rest) = line.split("kill(").nth(1) {
                let target: i64 = rest.split(',').next().unwrap().trim().parse().unwrap();
                kills += 1;
                assert!(
                    !reaped.contains(&target.abs()),
                    "{args:?}: {line} after it was reaped:\n{text}"
                );
            } else if line.contains("wait4") {
                if let Some(pid) = line
                    .rsplit("= ")
                    .next()
                    .and_then(|n| n.trim().parse::<i64>().ok())
                {
                    if pid > 0 {
                        reaped.insert(pid);
                    }
                }
            }
        }
        assert!(kills > 0 && !reaped.is_empty(), "{args:?}: nothing seen:\n{text}");
    }
}
