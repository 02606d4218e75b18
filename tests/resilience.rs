//! Cross-process resilience: the concurrency limit, the circuit breaker and
//! the rate limit shared by every patience process of a key, and the state
//! store under them (locking, atomicity, corrupt files, unsafe paths). Each
//! test has its own temporary state directory (`PATIENCE_STATE_DIR`, set by
//! `common::patience`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The state directory `common::patience` points patience at.
fn state_dir(dir: &TempDir) -> PathBuf {
    dir.join("state-dir")
}

/// Creates the state directory by hand (0700), for tests that plant files.
fn make_state_dir(dir: &TempDir) -> PathBuf {
    let d = state_dir(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `patience --state KEY`, parsed.
fn state(dir: &TempDir, key: &str) -> serde_json::Value {
    let out = run(dir, &["--state", key]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Runs and also returns how long it took.
fn timed(dir: &TempDir, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = run(dir, args);
    (out, start.elapsed())
}

fn slot_pids(dir: &TempDir, key: &str) -> Vec<i64> {
    state(dir, key)["slots"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

const LONG: Duration = Duration::from_secs(30);

// ---- concurrency limit ----

#[test]
fn a_second_run_is_refused_while_the_first_holds_the_only_slot() {
    let dir = TempDir::new("slot");
    let marker = dir.join("ran");
    let marker_s = marker.to_str().unwrap();
    let first = spawn(&dir, &["--key", "k", "--max-concurrent", "1", "sleep", "2"]);
    let pid = i64::from(first.id());
    assert!(eventually(LONG, || slot_pids(&dir, "k") == [pid]));
    let (out, took) = timed(
        &dir,
        &[
            "--key",
            "k",
            "--max-concurrent",
            "1",
            "-a",
            "1",
            "touch",
            marker_s,
        ],
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not after {took:?}"
    );
    assert!(!marker.exists(), "the command must not run");
    let err = stderr(&out);
    assert!(
        err.contains("rejected") && err.contains(&pid.to_string()),
        "{err}"
    );
    // The holder ends: its slot is given back and the next run gets in.
    let done = first.wait_output(LONG);
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    assert_eq!(slot_pids(&dir, "k"), Vec::<i64>::new());
    let out = run(&dir, &["--key", "k", "--max-concurrent", "1", "touch", marker_s]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marker.exists());
}

#[test]
fn n_slots_admit_n_runs_and_refuse_one_more() {
    let dir = TempDir::new("slots3");
    let holders: Vec<Guard> = (0..3)
        .map(|_| spawn(&dir, &["--key", "k", "--max-concurrent", "3", "sleep", "30"]))
        .collect();
    assert!(eventually(LONG, || slot_pids(&dir, "k").len() == 3));
    let out = run(&dir, &["--key", "k", "--max-concurrent", "3", "true"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    // A different key is not affected.
    let out = run(&dir, &["--key", "other", "--max-concurrent", "3", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    drop(holders);
}

#[test]
fn slot_wait_admits_the_run_when_the_holder_ends() {
    let dir = TempDir::new("slotwait");
    let first = spawn(&dir, &["--key", "k", "--max-concurrent", "1", "sleep", "1.5"]);
    assert!(eventually(LONG, || slot_pids(&dir, "k").len() == 1));
    let (out, took) = timed(
        &dir,
        &[
            "--key",
            "k",
            "--max-concurrent",
            "1",
            "--slot-wait",
            "20s",
            "true",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("waiting up to 20s"), "{}", stderr(&out));
    assert!(
        took > Duration::from_millis(300) && took < Duration::from_secs(15),
        "{took:?}"
    );
    drop(first);
}

#[test]
fn slot_wait_takes_a_freed_slot_at_once() {
    // Seven hand-overs on seven keys, at different moments: a waiter that
    // polled (its pause grows to 1 s: 855 ms and more after 2.5 s of
    // waiting) would be hundreds of milliseconds late in most; one woken by
    // the holder's lock is late by the few milliseconds of giving the slot
    // back and starting `date`. The median is held to a bound that a loaded
    // machine keeps; `make bench` measures the real figure.
    let dir = TempDir::new("handover");
    let now_ns = "date +%s%N";
    let holders: Vec<Guard> = (0..7)
        .map(|i| {
            let hold = format!("sleep {}; {now_ns}", 2.5 + f64::from(i) * 0.15);
            spawn(
                &dir,
                &[
                    "--key",
                    &format!("k{i}"),
                    "--max-concurrent",
                    "1",
                    "sh",
                    "-c",
                    &hold,
                ],
            )
        })
        .collect();
    for (i, h) in holders.iter().enumerate() {
        let pid = i64::from(h.id());
        assert!(eventually(LONG, || slot_pids(&dir, &format!("k{i}")) == [pid]));
    }
    let waiters: Vec<Guard> = (0..7)
        .map(|i| {
            let key = format!("k{i}");
            spawn(
                &dir,
                &[
                    "--key",
                    &key,
                    "--max-concurrent",
                    "1",
                    "--slot-wait",
                    "30s",
                    "-q",
                    "date",
                    "+%s%N",
                ],
            )
        })
        .collect();
    let ns = |g: Guard| -> i128 {
        let out = g.wait_output(LONG);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
    };
    let late: Vec<i128> = holders
        .into_iter()
        .zip(waiters)
        .map(|(h, w)| (ns(w) - ns(h)) / 1_000_000)
        .collect();
    assert!(late.iter().all(|&ms| ms >= 0), "{late:?} ms");
    let mut sorted = late.clone();
    sorted.sort_unstable();
    assert!(sorted[3] < 150, "hand-overs late by {late:?} ms");
    for i in 0..7 {
        let left = std::fs::read_dir(state_dir(&dir))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("k{i}.slot."))
            })
            .count();
        assert_eq!(left, 0, "every holder removed its lock file");
    }
}

#[test]
fn a_waiter_is_woken_when_the_holder_is_sigkilled() {
    let dir = TempDir::new("handoverkill");
    // The kernel releases a SIGKILLed holder's lock: the waiter wakes, and
    // the dead holder (swept once reaped) leaves no lock file behind.
    let mut first = spawn(&dir, &["--key", "k", "--max-concurrent", "1", "sleep", "30"]);
    let pid = i64::from(first.id());
    assert!(eventually(LONG, || slot_pids(&dir, "k") == [pid]));
    let waiter = spawn(
        &dir,
        &[
            "--key",
            "k",
            "--max-concurrent",
            "1",
            "--slot-wait",
            "30s",
            "true",
        ],
    );
    assert!(eventually(LONG, || catches(waiter.id(), libc::SIGTERM)));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    send_signal(first.id(), "KILL");
    first.wait_status(LONG);
    let out = waiter.wait_output(LONG);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        !state_dir(&dir).join(format!("k.slot.{pid}")).exists(),
        "the dead holder's lock file is removed"
    );
}

#[test]
fn slot_wait_gives_up_after_its_time_and_ends_on_a_signal() {
    let dir = TempDir::new("slotgiveup");
    let first = spawn(&dir, &["--key", "k", "--max-concurrent", "1", "sleep", "30"]);
    assert!(eventually(LONG, || slot_pids(&dir, "k").len() == 1));
    let (out, took) = timed(
        &dir,
        &["--key", "k", "--max-concurrent", "1", "--slot-wait", "1s", "true"],
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("after waiting"), "{}", stderr(&out));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // A signal ends the wait at once, with the signal's status.
    let mut waiter = spawn(
        &dir,
        &["--key", "k", "--max-concurrent", "1", "--slot-wait", "1m", "true"],
    );
    assert!(eventually(LONG, || catches(waiter.id(), libc::SIGTERM)));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    send_signal(waiter.id(), "TERM");
    let st = waiter.wait_status(LONG);
    assert_eq!(st.code(), Some(128 + 15));
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(first);
}

#[test]
fn the_slot_of_a_sigkilled_holder_is_swept() {
    let dir = TempDir::new("slotkill");
    let mut first = spawn(&dir, &["--key", "k", "--max-concurrent", "1", "sleep", "30"]);
    let pid = i64::from(first.id());
    assert!(eventually(LONG, || slot_pids(&dir, "k") == [pid]));
    send_signal(first.id(), "KILL");
    first.wait_status(LONG);
    // The stale entry is still in the file, but its PID is dead: the next
    // run sweeps it and gets in at once.
    let (out, took) = timed(&dir, &["--key", "k", "--max-concurrent", "1", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_daemonizing_command_does_not_keep_the_slot() {
    let dir = TempDir::new("daemon");
    let secs = unique_sleep_secs();
    let started = dir.join("started");
    // The daemon leaves the command's process group (setsid) before the run
    // ends, or the end-of-attempt group cleanup would take it down.
    let script = format!(
        "setsid sh -c 'echo > {0}; exec sleep {secs}' </dev/null >/dev/null 2>&1 & \
         while [ ! -s {0} ]; do sleep 0.05; done",
        started.display()
    );
    let out = run(
        &dir,
        &["--key", "k", "--max-concurrent", "1", "sh", "-c", &script],
    );
    let cleanup = || {
        for pid in processes_matching(&format!("sleep {secs}")) {
            send_signal(pid, "KILL");
        }
    };
    let second = run(&dir, &["--key", "k", "--max-concurrent", "1", "true"]);
    let still_there = !processes_matching(&format!("sleep {secs}")).is_empty();
    cleanup();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        still_there,
        "the daemon should outlive the run for this test to mean anything"
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
}

// ---- circuit breaker ----

fn breaker_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--key",
        "api",
        "--breaker",
        "3",
        "--breaker-cooldown",
        "2s",
        "-a",
        "1",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn the_breaker_opens_refuses_then_lets_one_probe_through_and_closes() {
    let dir = TempDir::new("breaker");
    let marker = dir.join("ran");
    let marker_s = marker.to_str().unwrap();
    for _ in 0..3 {
        let out = run(&dir, &breaker_args(&["false"]));
        assert_eq!(code(&out), 1, "{}", stderr(&out));
    }
    let opened = Instant::now();
    let s = state(&dir, "api");
    assert_eq!(s["breaker"]["state"], "open");
    assert_eq!(s["breaker"]["consecutive_failures"], 3);
    // Open: refused at once, without running the command, with the time left.
    let (out, took) = timed(&dir, &breaker_args(&["touch", marker_s]));
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(took < Duration::from_secs(2));
    assert!(!marker.exists(), "an open breaker must not run the command");
    let err = stderr(&out);
    assert!(
        err.contains("circuit breaker") && err.contains("next try in"),
        "{err}"
    );
    // After the cooldown, one probe: it succeeds and closes the breaker.
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(opened.elapsed()));
    let out = run(&dir, &breaker_args(&["touch", marker_s]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marker.exists());
    let s = state(&dir, "api");
    assert_eq!(s["breaker"]["state"], "closed");
    assert_eq!(s["breaker"]["consecutive_failures"], 0);
}

#[test]
fn one_probe_at_a_time_and_a_failed_probe_reopens() {
    let dir = TempDir::new("probe");
    let args = |cmd: &[&'static str]| {
        let mut v = vec![
            "--key",
            "api",
            "--breaker",
            "1",
            "--breaker-cooldown",
            "1s",
            "-a",
            "1",
        ];
        v.extend_from_slice(cmd);
        v
    };
    assert_eq!(code(&run(&dir, &args(&["false"]))), 1);
    std::thread::sleep(Duration::from_millis(1200));
    let probe = spawn(&dir, &args(&["sh", "-c", "sleep 2; exit 4"]));
    let pid = probe.id();
    assert!(eventually(LONG, || state(&dir, "api")["breaker"]["probe_pid"] == pid));
    let out = run(&dir, &args(&["true"]));
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("probe"), "{}", stderr(&out));
    let done = probe.wait_output(LONG);
    assert_eq!(code(&done), 4, "{}", stderr(&done));
    let s = state(&dir, "api");
    assert_eq!(s["breaker"]["state"], "open");
    assert!(s["breaker"]["retry_in_s"].as_f64().unwrap() > 0.0);
    assert_eq!(code(&run(&dir, &args(&["true"]))), 75);
}

#[test]
fn a_sigkilled_probe_is_forgotten() {
    let dir = TempDir::new("probekill");
    let args = |cmd: &[&'static str]| {
        let mut v = vec![
            "--key",
            "api",
            "--breaker",
            "1",
            "--breaker-cooldown",
            "1s",
            "-a",
            "1",
        ];
        v.extend_from_slice(cmd);
        v
    };
    assert_eq!(code(&run(&dir, &args(&["false"]))), 1);
    std::thread::sleep(Duration::from_millis(1200));
    let mut probe = spawn(&dir, &args(&["sleep", "30"]));
    let pid = probe.id();
    assert!(eventually(LONG, || state(&dir, "api")["breaker"]["probe_pid"] == pid));
    send_signal(pid, "KILL");
    probe.wait_status(LONG);
    // The lease of a dead process is not waited for.
    let out = run(&dir, &args(&["true"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(state(&dir, "api")["breaker"]["state"], "closed");
}

#[test]
fn a_breaker_opening_mid_run_stops_the_retries() {
    let dir = TempDir::new("midrun");
    let (out, took) = timed(
        &dir,
        &[
            "--key",
            "k",
            "--breaker",
            "2",
            "-a",
            "10",
            "--delay",
            "3s",
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("failed after 2 attempts") && err.contains("circuit breaker"),
        "{err}"
    );
    // The attempt that opened the breaker is not announced as a retry, and
    // its delay is not waited: only the first one's 3 s.
    assert_eq!(err.matches("retrying in").count(), 1, "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
}

#[test]
fn twenty_four_concurrent_failures_are_all_counted() {
    let dir = TempDir::new("many");
    let procs: Vec<Guard> = (0..24)
        .map(|_| spawn(&dir, &["--key", "many", "--breaker", "1000", "-a", "1", "false"]))
        .collect();
    for p in procs {
        let out = p.wait_output(Duration::from_secs(60));
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    }
    assert_eq!(state(&dir, "many")["breaker"]["consecutive_failures"], 24);
}

// ---- rate limit ----

#[test]
fn six_attempts_at_two_per_second_take_about_two_seconds() {
    let dir = TempDir::new("rate");
    let (out, took) = timed(
        &dir,
        &[
            "--key",
            "r",
            "--rate-limit",
            "2/1s",
            "-a",
            "6",
            "--delay",
            "0",
            "false",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("failed after 6 attempts"), "{err}");
    assert!(err.contains("waiting") && err.contains("for a token"), "{err}");
    // Burst of 2, then one every 0.5 s: the 6th starts at 2.0 s.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn waits_are_silent_in_cron_mode() {
    let dir = TempDir::new("ratecron");
    let args = ["--key", "r", "--rate-limit", "1/1s", "-a", "1"];
    assert_eq!(code(&run(&dir, &[&args[..], &["true"]].concat())), 0);
    // The bucket is empty: this run waits about a second, and says nothing
    // about it since it succeeds under --hold-output.
    let (out, took) = timed(&dir, &[&args[..], &["--hold-output", "true"]].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert_eq!(stderr(&out), "");
}

#[test]
fn the_rate_limit_is_shared_between_processes() {
    let dir = TempDir::new("rateshared");
    let start = Instant::now();
    let args = [
        "--key",
        "r",
        "--rate-limit",
        "2/1s",
        "-a",
        "3",
        "--delay",
        "0",
        "false",
    ];
    let (a, b) = (spawn(&dir, &args), spawn(&dir, &args));
    assert_eq!(code(&a.wait_output(LONG)), 1);
    assert_eq!(code(&b.wait_output(LONG)), 1);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_token_wait_respects_the_deadline_and_signals() {
    let dir = TempDir::new("ratedeadline");
    let args = ["--key", "r", "--rate-limit", "1/1m", "-a", "3", "--delay", "0"];
    let (out, took) = timed(&dir, &[&args[..], &["--deadline", "2s", "false"]].concat());
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The bucket is empty: a first attempt whose token comes after the
    // deadline is refused before running.
    let marker = dir.join("ran");
    let out = run(
        &dir,
        &[
            &args[..],
            &["--deadline", "1s", "touch", marker.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(!marker.exists());
    // A signal during the wait ends the run at once.
    let mut waiting = spawn(&dir, &[&args[..], &["true"]].concat());
    assert!(eventually(LONG, || catches(waiting.id(), libc::SIGINT)));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    send_signal(waiting.id(), "INT");
    assert_eq!(waiting.wait_status(LONG).code(), Some(128 + 2));
    assert!(start.elapsed() < Duration::from_secs(5));
}

// ---- the store ----

#[test]
fn state_and_reset_state_need_no_command() {
    let dir = TempDir::new("show");
    let fresh = state(&dir, "never-used");
    assert_eq!(fresh["breaker"]["state"], "closed");
    assert_eq!(fresh["key"], "never-used");
    for _ in 0..2 {
        run(&dir, &["--key", "k", "--breaker", "5", "-a", "1", "false"]);
    }
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 2);
    let out = run(&dir, &["--reset-state", "k"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 0);
    assert_eq!(code(&run(&dir, &["--state"])), 125);
    assert_eq!(code(&run(&dir, &["--state", ""])), 125);
}

#[test]
fn bad_values_are_usage_errors_and_nothing_runs() {
    let dir = TempDir::new("usage");
    let marker = dir.join("ran");
    let m = marker.to_str().unwrap();
    for (opt, val) in [
        ("--rate-limit", "10"),
        ("--rate-limit", "0/1s"),
        ("--rate-limit", "5/0s"),
        ("--breaker", "-1"),
        ("--breaker", "x"),
        ("--max-concurrent", "1.5"),
        ("--breaker-cooldown", "0"),
        ("--slot-wait", "soon"),
        ("--key", ""),
    ] {
        let out = run(&dir, &[opt, val, "touch", m]);
        assert_eq!(code(&out), 125, "{opt} {val}: {}", stderr(&out));
        assert!(stderr(&out).contains(opt), "{opt}: {}", stderr(&out));
    }
    assert!(!marker.exists());
}

#[test]
fn a_rejected_run_reports_status_rejected() {
    let dir = TempDir::new("rejected");
    run(&dir, &["--key", "k", "--breaker", "1", "-a", "1", "false"]);
    let report = dir.join("report.json");
    let out = run(
        &dir,
        &[
            "--key",
            "k",
            "--breaker",
            "1",
            "--summary-json",
            report.to_str().unwrap(),
            "true",
        ],
    );
    assert_eq!(code(&out), 75);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["status"], "rejected");
    assert_eq!(json["exit_status"], 75);
    assert_eq!(json["attempts_total"], 0);
}

#[test]
fn a_rejected_run_sends_status_rejected_to_patienced() {
    let dir = TempDir::new("rejectmetrics");
    run(&dir, &["--key", "k", "--breaker", "1", "-a", "1", "false"]);
    // Stand in for patienced on the socket common::patience points at.
    let sock = std::os::unix::net::UnixDatagram::bind(dir.join("no-daemon.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let out = run(&dir, &["--key", "k", "--breaker", "1", "true"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let mut buf = [0u8; 4096];
    // The run-start datagram comes first.
    let msg = loop {
        let n = sock.recv(&mut buf).expect("a run datagram");
        let msg: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        if msg["event"] != "run-start" {
            break msg;
        }
    };
    assert_eq!(msg["event"], "run", "{msg}");
    assert_eq!(msg["status"], "rejected", "{msg}");
    assert_eq!(msg["attempts"], 0, "{msg}");
}

/// Sets up the three refusals on keys `breaker`, `full` and `late`; returns
/// the holder of the only slot of `full`, and the options that refuse.
fn three_refusals(dir: &TempDir) -> (Guard, [[&'static str; 6]; 3]) {
    run(dir, &["--key", "breaker", "--breaker", "1", "-a", "1", "false"]);
    run(dir, &["--key", "late", "--rate-limit", "1/1h", "true"]);
    let holder = spawn(dir, &["--key", "full", "--max-concurrent", "1", "sleep", "30"]);
    let pid = i64::from(holder.id());
    assert!(eventually(LONG, || slot_pids(dir, "full") == [pid]));
    let refusals = [
        ["--key", "breaker", "--breaker", "1", "-a", "1"],
        ["--key", "full", "--max-concurrent", "1", "-a", "1"],
        ["--key", "late", "--rate-limit", "1/1h", "--deadline", "5s"],
    ];
    (holder, refusals)
}

#[test]
fn refusals_are_silent_under_quiet_and_cron_mode_and_still_reported() {
    let dir = TempDir::new("silentrefusal");
    let (_holder, refusals) = three_refusals(&dir);
    let sock = std::os::unix::net::UnixDatagram::bind(dir.join("no-daemon.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let report = dir.join("report.json");
    let report_s = report.to_str().unwrap();
    for refusal in refusals {
        for quiet in [&["-q"][..], &["--output", "failure"], &["--hold-output"], &[]] {
            let mut args = refusal.to_vec();
            args.extend_from_slice(quiet);
            args.extend_from_slice(&["--summary-json", report_s, "true"]);
            let out = run(&dir, &args);
            assert_eq!(code(&out), 75, "{args:?}: {}", stderr(&out));
            if quiet.is_empty() {
                assert!(stderr(&out).contains("rejected: "), "{args:?}: {}", stderr(&out));
            } else {
                assert_eq!(stderr(&out), "", "{args:?}: silent, as flock -n");
            }
            let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            assert_eq!(
                (&json["status"], &json["exit_status"]),
                (&"rejected".into(), &75.into()),
                "{args:?}"
            );
            let mut buf = [0u8; 4096];
            // The run-start datagram comes first; the run's follows.
            let msg: serde_json::Value = loop {
                let n = sock.recv(&mut buf).expect("a run datagram");
                let msg: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
                if msg["event"] != "run-start" {
                    break msg;
                }
            };
            assert_eq!(
                (&msg["status"], &msg["exit_code"]),
                (&"rejected".into(), &75.into()),
                "{args:?}: {msg}"
            );
        }
    }
}

#[test]
fn refused_exit_chooses_the_status_of_a_refusal_only() {
    let dir = TempDir::new("refusedexit");
    let (_holder, refusals) = three_refusals(&dir);
    let marker = dir.join("ran");
    let marker_s = marker.to_str().unwrap();
    let report = dir.join("report.json");
    let report_s = report.to_str().unwrap();
    for refusal in refusals {
        // An overlap treated as success, as `flock -n -E 0` does.
        let mut args = refusal.to_vec();
        args.extend_from_slice(&[
            "--refused-exit",
            "0",
            "--summary-json",
            report_s,
            "touch",
            marker_s,
        ]);
        let out = run(&dir, &args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(!marker.exists(), "{args:?}: refused, not run");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(
            (&json["status"], &json["exit_status"]),
            (&"rejected".into(), &0.into()),
            "{args:?}"
        );
    }
    // The config key, and the command line over it.
    let config = dir.join("config/patience/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[defaults]\nrefused-exit = 3\n").unwrap();
    let refused = |extra: &[&str]| {
        let mut args = refusals[0].to_vec();
        args.extend_from_slice(extra);
        args.push("true");
        code(&run(&dir, &args))
    };
    assert_eq!(refused(&[]), 3);
    assert_eq!(refused(&["--refused-exit", "255"]), 255);
    // A run that is not refused keeps the command's status.
    let out = run(
        &dir,
        &[
            "--key",
            "other",
            "--breaker",
            "5",
            "-a",
            "1",
            "sh",
            "-c",
            "exit 4",
        ],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let dry = stdout(&run(&dir, &["--dry-run", "true"]));
    assert!(
        dry.contains(&format!(
            "refused-exit      3                        ({})",
            config.display()
        )),
        "{dry}"
    );
    // Bad values: 125 and one line naming the option and the value.
    for bad in ["256", "-1", "x", "", "7.5"] {
        let out = run(&dir, &["--refused-exit", bad, "true"]);
        assert_eq!(code(&out), 125, "{bad:?}");
        let err = stderr(&out);
        assert!(err.contains(&format!("--refused-exit '{bad}'")), "{bad:?}: {err}");
    }
    std::fs::write(&config, "[defaults]\nrefused-exit = 300\n").unwrap();
    let out = run(&dir, &["true"]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("refused-exit") && stderr(&out).contains("'300'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_state_files_are_reported_and_replaced() {
    let dir = TempDir::new("corrupt");
    let d = make_state_dir(&dir);
    let path = d.join("k.json");
    let samples: [&[u8]; 4] = [
        b"{\"version\":1,\"breaker\":{\"pha",
        b"",
        &[0u8; 100],
        b"{\"version\":99}",
    ];
    for bad in samples {
        std::fs::write(&path, bad).unwrap();
        let shown = run(&dir, &["--state", "k"]);
        assert_eq!(code(&shown), 0, "{}", stderr(&shown));
        assert!(stderr(&shown).contains("unreadable"), "{}", stderr(&shown));
        let out = run(&dir, &["--key", "k", "--breaker", "3", "-a", "1", "false"]);
        assert_eq!(
            code(&out),
            1,
            "the command's status, not a crash: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(err.contains("unreadable") && err.contains("replacing"), "{err}");
        let text = std::fs::read(&path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&text).expect("rewritten cleanly");
        assert_eq!(json["version"], 1);
        assert_eq!(json["breaker"]["failures"], 1);
        assert!(!d.join("k.json.tmp").exists());
    }
}

fn refused(dir: &TempDir, what: &str) {
    let marker = dir.join("ran");
    let out = run(
        dir,
        &["--key", "k", "--breaker", "3", "touch", marker.to_str().unwrap()],
    );
    assert_eq!(code(&out), 125, "{what}: {}", stderr(&out));
    assert!(!marker.exists(), "{what}: the command must not run");
    assert!(stderr(&out).contains("refusing"), "{what}: {}", stderr(&out));
}

#[test]
fn a_symlinked_state_directory_is_refused() {
    let dir = TempDir::new("symdir");
    let real = dir.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&real, state_dir(&dir)).unwrap();
    refused(&dir, "symlinked dir");
    assert_eq!(code(&run(&dir, &["--state", "k"])), 125);
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing written through the link"
    );
}

#[test]
fn a_state_directory_others_can_write_or_own_is_refused() {
    let dir = TempDir::new("baddir");
    let d = make_state_dir(&dir);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&dir, "world-writable dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Owned by another user: only root can set that up.
    if std::process::Command::new("chown")
        .arg("65534")
        .arg(&d)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        refused(&dir, "dir owned by another user");
    } else {
        skip("the case of a dir owned by another user needs root (chown)");
    }
    std::fs::remove_dir(&d).unwrap();
    std::fs::write(&d, b"").unwrap();
    refused(&dir, "a file, not a directory");
}

#[test]
fn planted_symlinks_and_fifos_are_refused_without_blocking() {
    let dir = TempDir::new("planted");
    let d = make_state_dir(&dir);
    let target = dir.join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, d.join("k.json")).unwrap();
    refused(&dir, "state file symlink");
    std::fs::remove_file(d.join("k.json")).unwrap();
    let _ = std::fs::remove_file(d.join("k.lock"));
    std::os::unix::fs::symlink(&target, d.join("k.lock")).unwrap();
    refused(&dir, "lock file symlink");
    std::fs::remove_file(d.join("k.lock")).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let st = std::process::Command::new("mkfifo")
        .arg(d.join("k.json"))
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    refused(&dir, "state file FIFO");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_default_state_directory_is_created_private() {
    let dir = TempDir::new("xdg");
    let out = patience(&dir)
        .env_remove("PATIENCE_STATE_DIR")
        .env("XDG_STATE_HOME", dir.join("xdg/state"))
        .args(["--key", "k", "--breaker", "3", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let d = dir.join("xdg/state/patience");
    let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(d.join("k.json").exists() && d.join("k.lock").exists());
    let mode = std::fs::metadata(d.join("k.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

// ---- where the state directory is ----

/// Runs `patience ARGS` as a system user (nobody, uid 65534) from a crontab:
/// nothing in the environment but PATH and `home`, with a /tmp of its own
/// (a private mount namespace, so the machine's /tmp is not touched), after
/// `setup` ran there as root. None when this cannot be set up (not root, no
/// unshare): the caller skips.
fn as_system_user(setup: &str, home: &str, args: &[&str]) -> Option<Output> {
    let can = patience::sys::geteuid() == 0
        && std::process::Command::new("unshare")
            .args(["--mount", "sh", "-c", "mount -t tmpfs tmpfs /tmp"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !can {
        eprintln!("skipped: running as another user in a private /tmp needs root and unshare(1)");
        return None;
    }
    // The binary goes to a tmpfs of the namespace first: a checkout under
    // /tmp would vanish under the private /tmp (and the copy with it).
    let script = format!(
        "mount -t tmpfs tmpfs /mnt && cp \"$0\" /mnt/patience && chmod 755 /mnt/patience && \
         mount -t tmpfs tmpfs /tmp && {setup} && home=$1 && shift && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin HOME=\"$home\" /mnt/patience \"$@\""
    );
    let mut c = std::process::Command::new("unshare");
    c.args(["--mount", "sh", "-c", &script, patience_bin(), home])
        .args(args);
    Some(output(c))
}

#[test]
fn a_system_user_without_a_home_runs_its_cron_job() {
    for home in ["/nonexistent", "/"] {
        let Some(out) = as_system_user("true", home, &["--max-concurrent", "1", "--", "echo", "ran"]) else {
            return;
        };
        assert_eq!(code(&out), 0, "HOME={home}: {}", stderr(&out));
        assert_eq!(stdout(&out), "ran\n", "HOME={home}");
        assert_eq!(stderr(&out), "", "HOME={home}: the last resort is silent");
    }
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn a_squatted_last_resort_runs_the_command_with_one_warning() {
    // Another user (root here) made /tmp/patience-65534 first, or planted a
    // symlink there: patience neither uses it nor refuses to run.
    for squat in [
        "mkdir -m 700 /tmp/patience-65534",
        "mkdir -m 777 /tmp/x && ln -s /tmp/x /tmp/patience-65534",
    ] {
        let Some(out) = as_system_user(
            squat,
            "/nonexistent",
            &["--max-concurrent", "1", "--", "echo", "ran"],
        ) else {
            return;
        };
        assert_eq!(code(&out), 0, "{squat}: {}", stderr(&out));
        assert_eq!(stdout(&out), "ran\n", "{squat}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{squat}: one warning: {err}");
        assert!(
            err.contains("warning: no usable state directory") && err.contains("PATIENCE_STATE_DIR"),
            "{squat}: {err}"
        );
        assert!(err.contains("/tmp/patience-65534"), "{squat}: {err}");
    }
}

#[test]
fn a_missing_home_is_not_created_even_by_root_and_dry_run_says_why() {
    let dir = TempDir::new("nohome");
    let home = dir.join("nonexistent");
    let runtime = dir.join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let with = |c: &mut std::process::Command, home: &Path| {
        c.env_remove("PATIENCE_STATE_DIR")
            .env_remove("XDG_STATE_HOME")
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", &runtime);
    };
    let mut c = patience(&dir);
    with(&mut c, &home);
    c.args(["--dry-run", "--max-concurrent", "1", "true"]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let chosen = runtime.join("patience");
    assert!(
        text.contains(&format!("state-dir         {}", chosen.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "state directory: $XDG_RUNTIME_DIR/patience (would be created); passed over: $XDG_STATE_HOME is not set; ~/.local/state/patience: {} does not exist",
            home.display()
        )),
        "{text}"
    );
    assert!(!chosen.exists(), "a dry run creates nothing");
    let mut c = patience(&dir);
    with(&mut c, &home);
    c.args(["--key", "k", "--max-concurrent", "1", "true"]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!home.exists(), "HOME is never created");
    assert!(chosen.join("k.json").exists());
    // HOME=/ is no home: the state does not go to /.local.
    let mut c = patience(&dir);
    with(&mut c, Path::new("/"));
    c.args(["--dry-run", "true"]);
    let text = stdout(&output(c));
    assert!(
        text.contains("passed over: $XDG_STATE_HOME is not set; HOME is /"),
        "{text}"
    );
}

#[test]
fn a_configured_directory_that_cannot_be_had_fails_open() {
    let dir = TempDir::new("squatdry");
    // Only the configured directory is tried; here it cannot be created.
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"").unwrap();
    let out = patience(&dir)
        .env("PATIENCE_STATE_DIR", blocker.join("state"))
        .args(["--dry-run", "--breaker", "2", "true"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("state-dir         none"), "{text}");
    assert!(
        text.contains("state directory: none can be had (the configured directory: cannot "),
        "{text}"
    );
    let marker = dir.join("ran");
    let out = patience(&dir)
        .env("PATIENCE_STATE_DIR", blocker.join("state"))
        .args(["--breaker", "2", "touch", marker.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(marker.exists(), "fail open: the command runs");
    assert!(
        stderr(&out).contains("set PATIENCE_STATE_DIR"),
        "{}",
        stderr(&out)
    );
}

/// A process holding `path`'s flock, as `flock(1)` does (without forking,
/// so killing it releases the lock and leaves no orphan).
fn hold_lock(path: &Path) -> Guard {
    let child = std::process::Command::new("flock")
        .args(["--no-fork", "--exclusive"])
        .arg(path)
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock(1) from util-linux");
    Guard::new(child)
}

#[test]
fn a_lock_held_too_long_fails_open_with_a_warning() {
    let dir = TempDir::new("lockheld");
    let d = make_state_dir(&dir);
    let lock = d.join("k.lock");
    let holder = hold_lock(&lock);
    // Wait until it really holds the lock (flock -n fails while it does).
    assert!(eventually(LONG, || {
        std::process::Command::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .is_ok_and(|s| !s.success())
    }));
    let (out, took) = timed(
        &dir,
        &["--key", "k", "--breaker", "3", "-a", "1", "sh", "-c", "exit 3"],
    );
    assert_eq!(code(&out), 3, "the command's own status: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("running without"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(holder);
    // Once released, the same key works again.
    let out = run(&dir, &["--key", "k", "--breaker", "3", "-a", "1", "false"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 1);
}

#[test]
fn lock_and_state_descriptors_are_not_inherited() {
    let dir = TempDir::new("fds");
    let out = run(
        &dir,
        &[
            "--key",
            "k",
            "--breaker",
            "3",
            "--rate-limit",
            "10/1s",
            "--max-concurrent",
            "2",
            "-a",
            "1",
            "sh",
            "-c",
            "for f in /proc/$$/fd/*; do readlink \"$f\"; done; true",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let fds = stdout(&out);
    assert!(!fds.is_empty());
    assert!(
        !fds.contains("state-dir"),
        "the child holds state files open:\n{fds}"
    );
}

/// Runs patience under `strace -f` with `strace_args` (a fault to inject),
/// in the test's environment.
fn under_strace(dir: &TempDir, strace_args: &[&str], args: &[&str]) -> Output {
    let mut c = around_patience("strace", dir);
    c.args(["-f", "-o"])
        .arg(dir.join("trace"))
        .args(strace_args)
        .arg("--")
        .arg(patience_bin())
        .args(args);
    output(c)
}

const FAILING: [&str; 9] = ["--key", "k", "--breaker", "5", "-a", "1", "sh", "-c", "exit 3"];

#[test]
fn a_lock_that_fails_with_enolck_or_eio_fails_open() {
    // RELIABILITY K.66: flock on NFS, or a broken file system.
    if !have_strace() {
        return;
    }
    let dir = TempDir::new("enolck");
    for err in ["ENOLCK", "EIO"] {
        let start = Instant::now();
        let out = under_strace(&dir, &["-e", &format!("inject=flock:error={err}")], &FAILING);
        assert_eq!(code(&out), 3, "{err}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("running without --breaker"),
            "{err}: {}",
            stderr(&out)
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{err}: {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_full_disk_keeps_the_old_state_and_leaves_no_temp_file() {
    // RELIABILITY K.67: ENOSPC while the new state is written.
    if !have_strace() {
        return;
    }
    let dir = TempDir::new("enospc");
    assert_eq!(code(&run(&dir, &FAILING)), 3);
    let file = dir.join("state-dir/k.json");
    let before = std::fs::read(&file).unwrap();
    let tmp = dir.join("state-dir/k.json.tmp");
    let inject = ["-P", tmp.to_str().unwrap(), "-e", "inject=write:error=ENOSPC"];
    let out = under_strace(&dir, &inject, &FAILING);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before, "the old state was changed");
    assert!(!tmp.exists(), "the temp file was left behind");
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 1);
}

#[test]
fn a_run_killed_between_write_and_rename_leaves_the_old_state() {
    // RELIABILITY K.62: SIGKILL mid-update.
    if !have_strace() {
        return;
    }
    let dir = TempDir::new("killmid");
    assert_eq!(code(&run(&dir, &FAILING)), 3);
    let inject = ["-e", "inject=rename,renameat,renameat2:signal=SIGKILL"];
    let out = under_strace(&dir, &inject, &FAILING);
    assert_eq!(
        out.status.code(),
        None,
        "strace and patience are killed: {:?}",
        out.status
    );
    assert!(
        dir.join("state-dir/k.json.tmp").exists(),
        "no write was cut short"
    );
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 1);
    // The next run takes the lock at once, with no warning, and counts on.
    let (out, took) = timed(&dir, &FAILING);
    assert_eq!(code(&out), 3);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(state(&dir, "k")["breaker"]["consecutive_failures"], 2);
    assert!(!dir.join("state-dir/k.json.tmp").exists());
}

#[test]
fn the_state_write_is_fsync_rename_fsync_dir() {
    // RELIABILITY K.63, checked with strace when it is installed.
    if !have_strace() {
        return;
    }
    let dir = TempDir::new("strace");
    let trace = dir.join("trace");
    let out = around_patience("strace", &dir)
        .args(["-f", "-e", "trace=fsync,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(patience_bin())
        .args(["--key", "k", "--breaker", "1", "-a", "1", "false"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .filter_map(|l| ["fsync(", "rename"].into_iter().find(|c| l.contains(c)))
        .collect();
    // Each breaker change: fsync(tmp), rename(tmp, file), fsync(dir).
    assert!(calls.len() >= 3, "{text}");
    for w in calls.chunks(3) {
        assert_eq!(w, ["fsync(", "rename", "fsync("], "{text}");
    }
    assert!(text.contains("k.json.tmp"), "{text}");
}
