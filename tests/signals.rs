//! Signals patience receives while it runs an attempt: which ones stop the
//! run and how it then exits, which are passed on and to whom, and what the
//! attempt leaves behind (issue 11 items 4, 5, 6, 8, 9; RELIABILITY N.81–84).
mod common;

use common::*;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts `patience ARGS -- sh -c SCRIPT` with stderr piped, and waits for
/// the line `ready` the script prints on stderr once its traps are set.
/// The reader is returned so the pipe stays open (a closed one would kill
/// the shell with SIGPIPE before its trap runs).
fn start(
    dir: &TempDir,
    args: &[&str],
    script: &str,
) -> (Guard, std::io::BufReader<std::process::ChildStderr>) {
    let mut child = patience(dir)
        .args(args)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let guard = Guard::new(child);
    let mut reader = std::io::BufReader::new(err);
    wait_line(&mut reader, "ready");
    (guard, reader)
}

/// Reads stderr lines until one equals `want`; fails if the stream ends.
fn wait_line(reader: &mut impl BufRead, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "no {want:?} line; saw {seen:?}");
        if line.trim_end() == want {
            return seen;
        }
        seen.push(line);
    }
}

/// Kills the processes whose pids a test's command wrote to a file, when
/// the test ends: a member of an attempt's group outlives a patience that a
/// failed assertion SIGKILLed.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in read(&self.0) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn rest(reader: &mut impl BufRead) -> String {
    let mut s = String::new();
    let _ = std::io::Read::read_to_string(reader, &mut s);
    s
}

fn read(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_passed_on_stop_signal_ends_the_run_with_the_attempts_own_status() {
    // GNU timeout and tini exit as the command did: a server that exits 0
    // on SIGTERM gives 0, not 143 (item 6).
    for (sig, n) in [("TERM", 15), ("INT", 2), ("QUIT", 3), ("HUP", 1)] {
        for (exit, want) in [("exit 0", 0), ("exit 5", 5)] {
            let dir = TempDir::new("fwdstatus");
            let got = dir.join("got");
            let script = format!(
                "trap 'echo {sig} >> \"{}\"; {exit}' {sig}; echo ready >&2; while :; do sleep 0.05; done",
                got.display()
            );
            let (mut guard, mut err) = start(&dir, &["-a", "3"], &script);
            send_signal(guard.id(), sig);
            let status = guard.wait_status(Duration::from_secs(15));
            let text = rest(&mut err);
            assert_eq!(status.code(), Some(want), "SIG{sig}, {exit}: {text}");
            assert_eq!(read(&got), [sig], "the command got SIG{sig} once");
            assert!(
                text.contains(&format!("stopped by SIG{sig} after 1 attempt")),
                "{text}"
            );
        }
        // A command that dies of the signal: 128+N, as before.
        let dir = TempDir::new("fwddies");
        let (mut guard, _err) = start(&dir, &["-a", "3"], "echo ready >&2; exec sleep 30");
        send_signal(guard.id(), sig);
        assert_eq!(
            guard.wait_status(Duration::from_secs(15)).code(),
            Some(128 + n),
            "SIG{sig}"
        );
    }
}

#[test]
fn usr1_usr2_and_other_signals_reach_the_command_and_stop_nothing() {
    // The command records each signal it gets and keeps running; the run
    // ends only when the command exits by itself (items 5 and 8).
    let dir = TempDir::new("pass");
    let got = dir.join("got");
    let done = dir.join("done");
    let sigs = [
        "USR1", "USR2", "ALRM", "WINCH", "URG", "PWR", "XCPU", "VTALRM", "PROF", "IO",
    ];
    let traps: String = sigs
        .iter()
        .chain(&["TSTP", "CONT"])
        .map(|s| format!("trap 'echo {s} >> \"{}\"' {s}; ", got.display()))
        .collect();
    let script = format!(
        "{traps} echo ready >&2; while [ ! -e \"{}\" ]; do sleep 0.02; done; exit 3",
        done.display()
    );
    let (mut guard, mut err) = start(&dir, &["-a", "1"], &script);
    for (i, sig) in sigs.iter().enumerate() {
        send_signal(guard.id(), sig);
        assert!(
            eventually(Duration::from_secs(10), || read(&got).len() == i + 1),
            "SIG{sig} did not reach the command: {:?}",
            read(&got)
        );
        assert!(
            guard.child().try_wait().unwrap().is_none(),
            "SIG{sig} ended patience"
        );
    }
    // No SIGCONT follows a signal that is not a stop: the command saw each
    // once, in order, and no CONT at all.
    assert_eq!(read(&got), sigs, "each signal once, in order, no extra SIGCONT");
    // SIGTSTP goes to the group too (the command's sleep stops), and the
    // SIGCONT sent after it brings it back.
    send_signal(guard.id(), "TSTP");
    std::thread::sleep(Duration::from_millis(300));
    send_signal(guard.id(), "CONT");
    assert!(
        eventually(Duration::from_secs(10), || read(&got).len() == sigs.len() + 2),
        "{:?}",
        read(&got)
    );
    let mut last = read(&got)[sigs.len()..].to_vec();
    last.sort();
    assert_eq!(last, ["CONT", "TSTP"]);
    std::fs::write(&done, "").unwrap();
    let status = guard.wait_status(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{}", rest(&mut err));
}

#[test]
fn a_real_time_signal_reaches_the_command() {
    let dir = TempDir::new("rt");
    let got = dir.join("got");
    // 40 is a real-time signal on Linux (SIGRTMIN is 34 under glibc).
    let script = format!(
        "trap 'echo 40 >> \"{}\"; exit 7' 40; echo ready >&2; while :; do sleep 0.02; done",
        got.display()
    );
    let (mut guard, _err) = start(&dir, &["-a", "1"], &script);
    send_signal(guard.id(), "40");
    assert_eq!(guard.wait_status(Duration::from_secs(15)).code(), Some(7));
    assert_eq!(read(&got), ["40"]);
}

#[test]
fn a_signal_that_stops_nothing_is_dropped_during_a_delay() {
    // Between attempts there is no command to pass it to; the run goes on.
    let dir = TempDir::new("delaysig");
    let mut child = patience(&dir)
        .args(["-a", "2", "-d", "1s", "--", "sh", "-c", "echo ran >&2; exit 1"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut guard = Guard::new(child);
    wait_line(&mut err, "ran");
    std::thread::sleep(Duration::from_millis(200));
    send_signal(guard.id(), "USR1");
    send_signal(guard.id(), "ALRM");
    let status = guard.wait_status(Duration::from_secs(15));
    let text = rest(&mut err);
    assert_eq!(status.code(), Some(1), "{text}");
    assert_eq!(text.matches("ran").count(), 1, "the second attempt ran: {text}");
}

#[test]
fn a_supervisor_passes_reload_signals_to_the_main_process_only_and_keeps_running() {
    // Under --restart always, HUP reloads: the main process gets it, its
    // worker in the same group does not, nothing is escalated even past
    // --kill-after, and the run goes on; TERM still goes to the group
    // (item 5).
    let dir = TempDir::new("reload");
    let main = dir.join("main");
    let worker = dir.join("worker");
    let _reaped = KillOnDrop(dir.join("worker.pid"));
    let script = format!(
        "sh -c 'echo $$ > {w}.pid; trap \"echo HUP >> {w}\" HUP; trap \"echo TERM >> {w}; exit 0\" TERM; while :; do sleep 0.02; done' & \
         trap 'echo HUP >> \"{m}\"' HUP; trap 'echo TERM >> \"{m}\"; wait; exit 0' TERM; \
         sleep 0.2; echo ready >&2; while :; do sleep 0.02; done",
        w = worker.display(),
        m = main.display()
    );
    let (mut guard, mut err) = start(&dir, &["--restart", "always", "--forever", "-k", "1s"], &script);
    // One at a time: signals of one kind sent together may merge.
    for i in 1..=3 {
        send_signal(guard.id(), "HUP");
        assert!(
            eventually(Duration::from_secs(10), || read(&main).len() == i),
            "main: {:?}",
            read(&main)
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        guard.child().try_wait().unwrap().is_none(),
        "HUP ended the supervisor"
    );
    assert_eq!(read(&main), ["HUP", "HUP", "HUP"]);
    assert!(read(&worker).is_empty(), "the worker got {:?}", read(&worker));
    send_signal(guard.id(), "TERM");
    let status = guard.wait_status(Duration::from_secs(15));
    let text = rest(&mut err);
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(read(&main), ["HUP", "HUP", "HUP", "TERM"]);
    assert_eq!(read(&worker), ["TERM"], "TERM goes to the whole group, once");
}

#[test]
fn a_passed_on_term_is_not_escalated_unless_kill_after_was_given() {
    // docker stop gives its own grace: a clean shutdown longer than the 5 s
    // default finishes (item 9).
    let dir = TempDir::new("noescalate");
    let script = "trap 'sleep 5.6; exit 0' TERM; echo ready >&2; while :; do sleep 0.05; done";
    let (mut guard, mut err) = start(&dir, &["-a", "1"], script);
    let sent = Instant::now();
    send_signal(guard.id(), "TERM");
    let status = guard.wait_status(Duration::from_secs(30));
    let text = rest(&mut err);
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        sent.elapsed() >= Duration::from_millis(5500),
        "{:?}",
        sent.elapsed()
    );
    // With --kill-after it is escalated, and the final line says so.
    let dir = TempDir::new("escalate");
    let script = "trap 'sleep 30; exit 0' TERM; echo ready >&2; while :; do sleep 0.05; done";
    let (mut guard, mut err) = start(&dir, &["-a", "1", "-k", "500ms"], script);
    let sent = Instant::now();
    send_signal(guard.id(), "TERM");
    let status = guard.wait_status(Duration::from_secs(30));
    let text = rest(&mut err);
    assert_eq!(status.code(), Some(137), "{text}");
    assert!(sent.elapsed() < Duration::from_secs(10), "{:?}", sent.elapsed());
    assert!(text.contains("SIGKILL needed"), "{text}");
}

#[test]
fn what_an_attempt_leaves_in_its_group_is_killed_after_kill_after() {
    // The main process exits 1 at once and leaves a member of its group
    // that ignores SIGTERM; three attempts leave three. None outlives the
    // run (item 4).
    let dir = TempDir::new("leftovers");
    let secs = unique_sleep_secs();
    let script = format!("sh -c 'trap \"\" TERM; exec sleep {secs}' & sleep 0.1; exit 1");
    let start = Instant::now();
    let out = output({
        let mut c = patience(&dir);
        c.args(["-a", "3", "-d", "0", "-k", "700ms", "--", "sh", "-c", &script]);
        c
    });
    let took = start.elapsed();
    let left = processes_matching(&format!("sleep {secs}"));
    for pid in &left {
        send_signal(*pid, "KILL");
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Each attempt waited its grace for its leftover (0.7 s each).
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn leftovers_that_exit_on_the_stop_signal_cost_no_grace() {
    let dir = TempDir::new("politeleft");
    let secs = unique_sleep_secs();
    let script = format!("sleep {secs} & exit 0");
    let start = Instant::now();
    let out = output({
        let mut c = patience(&dir);
        c.args(["-a", "1", "--", "sh", "-c", &script]);
        c
    });
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(processes_matching(&format!("sleep {secs}")).is_empty());
}

#[test]
fn leftovers_get_the_stop_signal_once() {
    // A member of the group that counts the TERMs it gets: after a timeout
    // and after a normal exit, with and without --init, one (item 8).
    for (init, how) in [
        (false, "exit"),
        (true, "exit"),
        (false, "timeout"),
        (true, "timeout"),
    ] {
        let dir = TempDir::new("once");
        let count = dir.join("count");
        let main = if how == "exit" {
            "sleep 0.3; exit 0"
        } else {
            "exec sleep 30"
        };
        let script = format!(
            "sh -c 'trap \"echo t >> {}\" TERM; while :; do sleep 0.02; done' & {main}",
            count.display()
        );
        let mut args = vec!["-a", "1", "-t", "1s", "-k", "1s"];
        if init {
            args.push("--init");
        }
        let out = output({
            let mut c = patience(&dir);
            c.args(&args).args(["--", "sh", "-c", &script]);
            c
        });
        assert!(
            code(&out) == 0 || code(&out) == 124,
            "{how} init={init}: {}",
            stderr(&out)
        );
        assert_eq!(read(&count), ["t"], "{how} init={init}: TERM count");
    }
}
