//! `--signal` and `--kill-after` as GNU timeout takes them: signal 0 (sent
//! as nothing, SIGKILL after the grace), the real-time signals by name, and
//! `-k 0` for no SIGKILL at all. The signal handling itself (forwarding,
//! escalation on a stop from outside) is tested in executor.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The attempts of a run's `--summary-json`, written to stderr.
fn summary_attempts(out: &std::process::Output) -> Vec<serde_json::Value> {
    let err = stderr(out);
    let start = err
        .find("\n{")
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no JSON report: {err}"));
    let v: serde_json::Value = serde_json::from_str(&err[start..]).unwrap();
    v["attempts"].as_array().unwrap().clone()
}

#[test]
fn signal_zero_sends_nothing_and_sigkill_follows_the_grace() {
    let dir = TempDir::new("sig0");
    let started = Instant::now();
    // A TERM would end it at once, saying so; signal 0 changes nothing.
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "200ms",
            "-s",
            "0",
            "-k",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap 'echo got a signal; exit 9' TERM INT HUP; while :; do sleep 0.05; done",
        ],
    );
    let took = started.elapsed();
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "signal 0 reached the command as a signal");
    assert!(
        took >= Duration::from_millis(650),
        "SIGKILL came before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn kill_after_zero_never_sends_sigkill() {
    let dir = TempDir::new("k0");
    let started = Instant::now();
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "200ms",
            "-k",
            "0",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 1; echo survived",
        ],
    );
    let took = started.elapsed();
    assert_eq!(code(&out), 124, "it still timed out: {}", stderr(&out));
    assert_eq!(stdout(&out), "survived\n", "SIGKILLed despite -k 0");
    assert!(took >= Duration::from_millis(950), "{took:?}");

    // GNU's `timeout -s0 -k0`: nothing is sent at all, the command ends
    // on its own and the attempt counts as timed out.
    let out = run(
        &dir,
        &[
            "-a",
            "1",
            "-t",
            "100ms",
            "-s",
            "0",
            "-k",
            "0",
            "--",
            "sh",
            "-c",
            "sleep 0.5; echo done",
        ],
    );
    assert_eq!(
        (code(&out), stdout(&out).as_str()),
        (124, "done\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn real_time_signals_by_name_reach_the_command_and_are_named_back() {
    let dir = TempDir::new("rt");
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    for (given, number) in [
        ("RTMIN", rtmin),
        ("sigrtmin+1", rtmin + 1),
        ("SIGRTMAX-1", rtmax - 1),
        ("rtmax", rtmax),
    ] {
        // The default action of a real-time signal is to terminate, so the
        // command dies of exactly the signal that was sent.
        let out = run(
            &dir,
            &[
                "-a",
                "1",
                "-t",
                "100ms",
                "-s",
                given,
                "--summary-json",
                "-",
                "--",
                "sleep",
                "10",
            ],
        );
        assert_eq!(code(&out), 124, "{given}: {}", stderr(&out));
        let attempts = summary_attempts(&out);
        let expected = patience::signals::name(number);
        assert_eq!(attempts[0]["signal"], expected.as_str(), "{given}");
        assert_eq!(attempts[0]["timed_out"], true);
        assert!(expected.starts_with("SIGRT"), "{expected}");
    }
    if (rtmin, rtmax) == (34, 64) {
        assert_eq!(patience::signals::name(40), "SIGRTMIN+6");
        assert_eq!(patience::signals::name(60), "SIGRTMAX-4");
    }
    // --dry-run shows the signal by the same name.
    let out = run(&dir, &["--dry-run", "-s", "rtmax-2", "--", "true"]);
    let shown = stdout(&out);
    let expected = patience::signals::name(rtmax - 2);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("signal ") && l.contains(&expected)),
        "{shown}"
    );
}

#[test]
fn signals_gnu_timeout_refuses_are_usage_errors() {
    let dir = TempDir::new("badsig");
    let rtmax = libc::SIGRTMAX();
    let span = rtmax - libc::SIGRTMIN();
    for bad in [
        format!("RTMIN+{}", span + 1),
        format!("RTMAX-{}", span + 1),
        (rtmax + 1).to_string(),
        "RTMIN-1".into(),
        "RTMAX+1".into(),
        "RT".into(),
        "-1".into(),
        "SIG".into(),
        "invalid".into(),
    ] {
        let out = run(&dir, &["-a", "1", "-s", &bad, "--", "true"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "-s {bad}: {err}");
        assert!(
            err.contains("--signal") && err.contains(&format!("'{bad}'")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 2, "one line and the --help hint: {err}");
    }
}
