//! Supervision and containers: restart policies, `--reset-after`, init duty
//! (PID 1 in a PID namespace, `--init` outside one), the static binary in an
//! empty chroot, and job control with `--foreground` under a terminal.
//!
//! Tests that need root (namespaces, chroot), the static build or tmux skip
//! with a printed reason when those are missing; under `CI=true` they fail
//! instead wherever the capability should exist (CI runs as root and
//! `.ci/run` builds `make static` first).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Says why a test cannot run here and returns; under CI=true, fails.
fn skip(test: &str, why: &str) {
    skip_test(test, why);
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary json")).expect("valid json")
}

/// The parent pid and state letter of `pid`, from /proc; None once gone.
fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every process whose parent is `parent`, with its state letter.
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((ppid, state)) = ppid_and_state(pid) {
            if ppid == parent {
                found.push((pid, state));
            }
        }
    }
    found
}

/// Live `sleep MARKER` processes (not the shell or unshare whose command
/// line mentions the marker too).
fn sleeps_matching(marker: &str) -> Vec<i32> {
    processes_matching(&format!("sleep {marker}"))
}

fn kill_sleeps(marker: &str) {
    for pid in sleeps_matching(marker) {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

// ---- restart policies ----

#[test]
fn on_success_runs_until_the_first_failure() {
    let dir = TempDir::new("on-success");
    let log = dir.join("log");
    let script = format!(
        "echo $PATIENCE_ATTEMPT >> {}; [ $PATIENCE_ATTEMPT -lt 4 ]",
        log.display()
    );
    let out = run(
        &dir,
        &[
            "--restart",
            "on-success",
            "--forever",
            "-b",
            "fixed",
            "-d",
            "10ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(lines(&log), ["1", "2", "3", "4"], "{err}");
    assert!(
        err.contains("attempt 3 succeeded (exit code 0); running again in 10ms"),
        "{err}"
    );
    assert!(err.contains("failed after 4 attempts (exit code 1"), "{err}");

    // Under a limit, a run whose attempts all succeeded succeeds.
    let out = run(
        &dir,
        &["--restart", "on-success", "-a", "3", "-d", "10ms", "--", "true"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("succeeded after 3 attempts"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn always_runs_every_attempt_whatever_the_result() {
    let dir = TempDir::new("always");
    for (parity, status) in [(0, 0), (1, 1)] {
        let log = dir.join(format!("log{parity}"));
        // Attempts alternate between failing and succeeding; the last one
        // (the fourth) decides the exit status.
        let script = format!(
            "echo $PATIENCE_ATTEMPT >> {}; exit $(( ($PATIENCE_ATTEMPT + {parity}) % 2 ))",
            log.display()
        );
        let out = run(
            &dir,
            &[
                "--restart",
                "always",
                "-a",
                "4",
                "-b",
                "fixed",
                "-d",
                "10ms",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let err = stderr(&out);
        assert_eq!(lines(&log), ["1", "2", "3", "4"], "{err}");
        assert_eq!(code(&out), status, "{err}");
        assert_eq!(err.matches("; restarting in 10ms").count(), 3, "{err}");
        assert!(
            err.contains("succeeded (exit code 0); restarting in 10ms"),
            "{err}"
        );
        assert!(err.contains("failed (exit code 1); restarting in 10ms"), "{err}");
    }
}

#[test]
fn a_deadline_ends_a_supervisor_as_its_last_attempt_ended() {
    let dir = TempDir::new("always-deadline");
    let out = run(
        &dir,
        &[
            "--restart",
            "always",
            "--forever",
            "--deadline",
            "1s",
            "-b",
            "fixed",
            "-d",
            "600ms",
            "--",
            "true",
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("succeeded after 2 attempts"), "{err}");
    assert!(!err.contains("failed"), "{err}");
}

#[test]
fn reset_after_restarts_the_backoff() {
    let dir = TempDir::new("reset-after");
    let report = dir.join("summary.json");
    // Attempt 3 runs longer than --reset-after: the delay after it is the
    // first delay again (50ms, not 200ms), and the sequence goes on from there.
    let script = "[ $PATIENCE_ATTEMPT = 3 ] && sleep 1.5; exit 1";
    let out = run(
        &dir,
        &[
            "-a",
            "5",
            "-b",
            "exponential",
            "-d",
            "50ms",
            "--reset-after",
            "1s",
            "--summary-json",
            report.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    let delays: Vec<_> = json(&report)["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["delay_after_s"].as_f64())
        .collect();
    assert_eq!(
        delays,
        [Some(0.05), Some(0.1), Some(0.05), Some(0.1), None],
        "{err}"
    );
    assert!(
        err.contains("attempt 3/5 failed (exit code 1); retrying in 50ms"),
        "{err}"
    );

    // Without it, the same run keeps growing.
    let out = run(
        &dir,
        &[
            "-a",
            "4",
            "-b",
            "exponential",
            "-d",
            "50ms",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(
        stderr(&out).contains("attempt 3/4 failed (exit code 1); retrying in 200ms"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn supervisor_logs_each_exit_and_sigterm_stops_it() {
    let dir = TempDir::new("supervisor");
    let log = dir.join("log");
    let marker = unique_sleep_secs();
    // Attempt 1 exits 0, attempt 2 exits 1, attempt 3 keeps running.
    let script = format!(
        "echo $PATIENCE_ATTEMPT >> {}; [ $PATIENCE_ATTEMPT -ge 3 ] && exec sleep {marker}; exit $(( $PATIENCE_ATTEMPT - 1 ))",
        log.display()
    );
    let child = patience(&dir)
        .args([
            "--restart",
            "always",
            "--forever",
            "-b",
            "fixed",
            "-d",
            "50ms",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patience");
    let guard = Guard::new(child);
    let _cleanup = Cleanup(marker.clone());
    let running = || !sleeps_matching(&marker).is_empty();
    assert!(eventually(Duration::from_secs(20), running));
    send_signal(guard.id(), "TERM");
    let start = Instant::now();
    let out = guard.wait_output(Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(code(&out), 143, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(lines(&log), ["1", "2", "3"], "{err}");
    assert!(
        err.contains("attempt 1 succeeded (exit code 0); restarting in 50ms"),
        "{err}"
    );
    assert!(
        err.contains("attempt 2 failed (exit code 1); restarting in 50ms"),
        "{err}"
    );
    assert!(err.contains("stopped by SIGTERM after 3 attempts"), "{err}");
    assert!(
        sleeps_matching(&marker).is_empty(),
        "the attempt outlived patience"
    );
}

/// Kills a test's leftover `sleep MARKER` processes, on drop.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_sleeps(&self.0);
    }
}

// ---- init duty outside a namespace (--init) ----

#[test]
fn init_reaps_a_grandchild_that_reparents_to_patience() {
    let dir = TempDir::new("init-reparent");
    let gc = dir.join("grandchild");
    // The inner shell starts a grandchild and exits: the grandchild is an
    // orphan, re-parented to patience (the nearest subreaper), and must be
    // reaped when it exits while the attempt still runs. The attempt's own
    // status (7) must not be stolen by that reaping.
    let script = format!(
        "sh -c 'sleep 0.6 & echo $! > {}; exit 0'; sleep 2.5; exit 7",
        gc.display()
    );
    let child = patience(&dir)
        .args(["--init", "-a", "1", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patience");
    let guard = Guard::new(child);
    let me = guard.id();
    assert!(eventually(Duration::from_secs(5), || !lines(&gc).is_empty()));
    let gc_pid: i32 = lines(&gc)[0].parse().expect("pid");
    let mut adopted = false;
    let gone = eventually(Duration::from_secs(2), || match ppid_and_state(gc_pid) {
        Some((ppid, _)) => {
            adopted |= ppid == me;
            false
        }
        None => true,
    });
    let out = guard.wait_output(Duration::from_secs(20));
    let err = stderr(&out);
    assert!(
        adopted,
        "the grandchild {gc_pid} never re-parented to patience {me}: {err}"
    );
    assert!(
        gone,
        "the grandchild {gc_pid} was not reaped: {:?}",
        ppid_and_state(gc_pid)
    );
    assert_eq!(code(&out), 7, "{err}");
}

#[test]
fn init_reaps_many_orphans_during_the_delay() {
    let dir = TempDir::new("init-many");
    let done = dir.join("done");
    // 50 orphans exit after their parent attempt, while patience waits out
    // the delay. --foreground: the attempt's end does not kill them, they
    // die on their own; none may stay a zombie.
    let script = format!(
        "for i in $(seq 50); do sh -c 'sleep 0.3 & exit 0'; done; echo $PATIENCE_ATTEMPT >> {}; exit 3",
        done.display()
    );
    let child = patience(&dir)
        .args([
            "--init",
            "--foreground",
            "--restart",
            "always",
            "-a",
            "2",
            "-b",
            "fixed",
            "-d",
            "4s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn patience");
    let guard = Guard::new(child);
    let me = guard.id();
    assert!(eventually(Duration::from_secs(20), || !lines(&done).is_empty()));
    let mut seen = Vec::new();
    let cleared = eventually(Duration::from_secs(3), || {
        seen = children_of(me);
        seen.is_empty()
    });
    let during_delay = lines(&done).len() == 1;
    let out = guard.wait_output(Duration::from_secs(30));
    let err = stderr(&out);
    assert!(
        cleared,
        "children of patience left during the delay: {seen:?}\n{err}"
    );
    assert!(during_delay, "the second attempt had already started: {err}");
    assert_eq!(code(&out), 3, "{err}");
    assert_eq!(lines(&done).len(), 2, "{err}");
}

#[test]
fn init_kills_orphans_that_left_the_group_with_the_attempt() {
    let dir = TempDir::new("init-setsid");
    let marker = unique_sleep_secs();
    let _cleanup = Cleanup(marker.clone());
    let up = dir.join("up");
    // The attempt exits only once the daemon is in its own session, out of
    // reach of the attempt's group signal.
    let script = format!(
        "setsid sh -c 'echo $$ > {up}; exec sleep {marker}' < /dev/null > /dev/null 2>&1 & \
         while [ ! -s {up} ]; do sleep 0.01; done; exit 0",
        up = up.display()
    );
    let out = run(&dir, &["--init", "-a", "1", "--", "sh", "-c", &script]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let daemon: i32 = lines(&up)[0].parse().expect("pid");
    assert!(
        eventually(Duration::from_secs(5), || ppid_and_state(daemon).is_none()),
        "a setsid orphan outlived its attempt under --init: {:?}",
        ppid_and_state(daemon)
    );
}

#[test]
fn init_leaves_alone_a_child_it_did_not_start() {
    let dir = TempDir::new("init-stranger");
    let marker = unique_sleep_secs();
    let _cleanup = Cleanup(marker.clone());
    // The shell's background job becomes patience's child through exec:
    // patience reaps it if it exits, but it is no orphan of an attempt.
    let script = format!(
        "sleep {marker} </dev/null >/dev/null 2>&1 & exec {} --init -a 2 -d 10ms -- false",
        patience_bin()
    );
    let child = around_patience("sh", &dir)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = Guard::new(child).wait_output(Duration::from_secs(20));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        sleeps_matching(&marker).len(),
        1,
        "the stranger was signalled: {}",
        stderr(&out)
    );
}

// ---- PID 1 in a new PID namespace ----

/// `unshare … patience ARGS`, patience being PID 1 of a new PID namespace,
/// with the clean environment of `common::patience`. --kill-child: if the
/// test kills unshare, patience (and with it the namespace) dies too.
fn as_pid1(dir: &TempDir, args: &[&str]) -> Command {
    let mut c = around_patience("unshare", dir);
    c.args(["--fork", "--pid", "--mount-proc", "--kill-child", "--"])
        .arg(patience_bin())
        .args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run_as_pid1(dir: &TempDir, args: &[&str]) -> Output {
    Guard::new(as_pid1(dir, args).spawn().expect("spawn unshare")).wait_output(Duration::from_secs(60))
}

#[test]
fn pid1_reaps_orphaned_grandchildren_and_keeps_the_attempts_status() {
    let test = "pid1_reaps_orphaned_grandchildren_and_keeps_the_attempts_status";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("pid1-reap");
    // 50 grandchildren are orphaned (their shell exits at once) and exit
    // 0.2 s later, re-parented to PID 1 = patience. A second later `ps`
    // inside the namespace must show no zombie, and the attempt's status
    // (7) must be the one patience exits with.
    let script = "for i in $(seq 50); do sh -c 'sleep 0.2 & exit 0'; done; sleep 1.5; \
                  ps -eo stat=,pid=,ppid=,args=; exit 7";
    let out = run_as_pid1(&dir, &["-a", "1", "--", "sh", "-c", script]);
    let (ps, err) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 7, "{err}");
    assert!(ps.contains("patience"), "ps saw nothing: {ps}");
    let zombies: Vec<_> = ps.lines().filter(|l| l.trim_start().starts_with('Z')).collect();
    assert!(zombies.is_empty(), "zombies inside the namespace:\n{ps}");
}

#[test]
fn pid1_stops_on_sigterm_from_outside_with_143() {
    let test = "pid1_stops_on_sigterm_from_outside_with_143";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("pid1-term");
    let marker = unique_sleep_secs();
    let _cleanup = Cleanup(marker.clone());
    let guard = Guard::new(
        as_pid1(
            &dir,
            &["--restart", "always", "--forever", "--", "sleep", &marker],
        )
        .spawn()
        .expect("spawn unshare"),
    );
    // The attempt runs, so patience's handlers are installed (a signal
    // from outside reaches PID 1 only if it has a handler; one sent earlier
    // would be lost). unshare's command line names the marker too: look for
    // the sleep itself.
    let running = || !sleeps_matching(&marker).is_empty();
    assert!(eventually(Duration::from_secs(10), running));
    // patience is unshare's only child; seen from here it has an ordinary pid.
    let unshare = guard.id();
    let pid1 = children_of(unshare)
        .first()
        .map(|&(pid, _)| pid)
        .expect("patience under unshare");
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "{status}"
    );
    send_signal(pid1, "TERM");
    let out = guard.wait_output(Duration::from_secs(20));
    let err = stderr(&out);
    assert_eq!(code(&out), 143, "{err}");
    assert!(err.contains("stopped by SIGTERM after 1 attempt"), "{err}");
    assert!(sleeps_matching(&marker).is_empty());
}

#[test]
fn pid1_gives_remaining_processes_term_and_a_grace_before_exiting() {
    let test = "pid1_gives_remaining_processes_term_and_a_grace_before_exiting";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("pid1-grace");
    let got = dir.join("got-term");
    let up = dir.join("up");
    // Two daemons outlive the attempt (--foreground: the attempt's end does
    // not touch them): one exits cleanly on TERM (leaving a file), one
    // ignores TERM and needs the SIGKILL after the 1s grace.
    let script = format!(
        "setsid sh -c 'trap \"echo term > {got}; exit 0\" TERM; echo a >> {up}; while :; do sleep 0.05; done' \
             </dev/null >/dev/null 2>&1 & \
         setsid sh -c 'trap \"\" TERM; echo b >> {up}; while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 & \
         while [ \"$(wc -l < {up} 2>/dev/null)\" != 2 ]; do sleep 0.02; done; exit 0",
        got = got.display(),
        up = up.display()
    );
    let start = Instant::now();
    let out = run_as_pid1(
        &dir,
        &["--foreground", "-a", "1", "-k", "1s", "--", "sh", "-c", &script],
    );
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert_eq!(
        lines(&got),
        ["term"],
        "the daemon did not get TERM before PID 1 exited: {err}"
    );
    assert!(
        err.contains("did not exit within 1s of SIGTERM: sent SIGKILL"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "took {took:?}"
    );
}

// ---- the static binary in an empty chroot ----

#[test]
fn static_binary_runs_in_an_empty_chroot() {
    let test = "static_binary_runs_in_an_empty_chroot";
    if !is_root() {
        skip(test, "needs root for chroot");
        return;
    }
    let bin = match static_binary() {
        Ok(bin) => bin,
        Err(why) => return skip(test, &why),
    };
    let root = TempDir::new("chroot");
    std::fs::copy(&bin, root.join("patience")).expect("copy the static binary");
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chroot");
    // Nothing but the binary: no /proc, no /dev, no libraries, no shell.
    let run_in = |args: &[&str]| {
        let child = Command::new(chroot)
            .arg(root.path())
            .arg("/patience")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chroot");
        Guard::new(child).wait_output(Duration::from_secs(60))
    };
    let out = run_in(&["--version"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("patience "), "{}", stdout(&out));

    // A retried command: the inner patience times its command out (124),
    // and the outer one, an init-mode supervisor, retries it.
    let out = run_in(&[
        "--init",
        "-a",
        "2",
        "-d",
        "10ms",
        "--",
        "/patience",
        "-a",
        "1",
        "--timeout",
        "100ms",
        "--",
        "/patience",
        "--restart",
        "always",
        "--forever",
        "-d",
        "10s",
        "--",
        "/patience",
        "--version",
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 124, "{err}");
    assert!(
        err.contains("attempt 1/2 failed (exit code 124); retrying in 10ms"),
        "{err}"
    );
    assert!(err.contains("failed after 2 attempts (exit code 124"), "{err}");
    assert_eq!(stdout(&out).matches("patience ").count(), 2, "{}", stdout(&out));
}

// ---- job control under a terminal (tmux) ----

/// A tmux server on a private socket, killed on drop. The socket lives in
/// the test's temp dir: tmux's kill-server leaves the file behind.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        c
    }

    fn send(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        stdout(&out)
    }

    /// Waits until a `cat` under the pane's shell is running (not stopped)
    /// and so owns the terminal: keys typed earlier could reach the shell
    /// while readline has echo off, and never be echoed.
    fn wait_for_running_cat(&self) {
        let out = self
            .cmd()
            .args(["display", "-p", "-t", "t", "#{pane_pid}"])
            .output()
            .expect("tmux display");
        let pane: i32 = stdout(&out).trim().parse().expect("pane pid");
        let cat_state = || {
            let mut todo = vec![pane];
            while let Some(pid) = todo.pop() {
                for (child, state) in children_of(pid) {
                    let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                    if comm.trim() == "cat" {
                        return Some(state);
                    }
                    todo.push(child);
                }
            }
            None
        };
        let running = eventually(Duration::from_secs(15), || matches!(cat_state(), Some('S' | 'R')));
        assert!(
            running,
            "cat is not running: {:?}\n{}",
            cat_state(),
            self.screen()
        );
    }

    /// Waits until the screen holds `text`; fails with the screen if not.
    fn expect(&self, text: &str) {
        let mut screen = String::new();
        let seen = eventually(Duration::from_secs(15), || {
            screen = self.screen();
            screen.contains(text)
        });
        assert!(seen, "no {text:?} on the terminal:\n{screen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

#[test]
fn foreground_keeps_job_control_in_an_interactive_shell() {
    let test = "foreground_keeps_job_control_in_an_interactive_shell";
    let has = |tool: &str| {
        Command::new(tool)
            .arg(if tool == "tmux" { "-V" } else { "--version" })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("tmux") || !has("bash") {
        // tmux is an optional tool outside CI (.ci/run installs it).
        return skip(test, "needs tmux and bash");
    }
    let dir = TempDir::new("tmux");
    let tmux = Tmux {
        socket: dir.join("tmux.sock"),
    };
    let shell = "env -i PATH=/usr/bin:/bin TERM=screen PS1='$ ' bash --norc --noprofile -i";
    let st = tmux
        .cmd()
        .args(["new-session", "-d", "-s", "t", "-x", "100", "-y", "30", shell])
        .status()
        .expect("tmux new-session");
    assert!(st.success());
    tmux.expect("$");
    // cat reads the terminal: it must echo what is typed, not stop on SIGTTIN,
    // with --foreground (cat in patience's group) and without (patience hands
    // the terminal to cat's group while it runs).
    for (i, flag) in ["--foreground", "-a3"].iter().enumerate() {
        // (The status is read by a later command: with `cmd; echo $?` bash
        // would run the echo as soon as Ctrl-Z stops the job, with 148.)
        tmux.send(&[&format!("{} {flag} -- cat", patience_bin()), "Enter"]);
        tmux.wait_for_running_cat();
        tmux.send(&[&format!("first-line{i}"), "Enter"]);
        tmux.expect(&format!("first-line{i}\nfirst-line{i}"));
        // Ctrl-Z stops patience and cat together; fg resumes both.
        tmux.send(&["C-z"]);
        tmux.expect("Stopped");
        tmux.send(&["fg", "Enter"]);
        tmux.wait_for_running_cat();
        tmux.send(&[&format!("second-line{i}"), "Enter"]);
        tmux.expect(&format!("second-line{i}\nsecond-line{i}"));
        // Ctrl-C reaches the command and ends the run (no retry) with
        // 128+SIGINT.
        tmux.send(&["C-c"]);
        tmux.expect("stopped by SIGINT");
        assert!(!tmux.screen().contains("retrying"), "{}", tmux.screen());
        let rc = dir.join(format!("rc{i}"));
        tmux.send(&[&format!("echo rc=$? > {}; clear", rc.display()), "Enter"]);
        assert!(
            eventually(Duration::from_secs(15), || lines(&rc) == ["rc=130"]),
            "{flag}: rc: {:?}\n{}",
            lines(&rc),
            tmux.screen()
        );
    }
}

// ---- a command stopped for the terminal (script(1) gives a terminal) ----

/// Runs `shell` under script(1), on a terminal of its own, and returns what
/// the terminal showed; None when script(1) is not installed.
fn on_a_terminal(dir: &TempDir, shell: &str) -> Option<String> {
    let mut c = around_patience("script", dir);
    c.args(["-qec", shell, "/dev/null"]);
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let out = Guard::new(child).wait_output(Duration::from_secs(60));
    Some(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

#[test]
fn a_command_stopped_for_the_terminal_ends_at_once_and_is_not_retried() {
    let test = "a_command_stopped_for_the_terminal_ends_at_once_and_is_not_retried";
    let dir = TempDir::new("ttou");
    // patience in a process group of its own that is not the terminal's
    // foreground (a background job): it cannot hand the terminal on, and
    // stty, changing the terminal from the background, is stopped by
    // SIGTTOU, which nobody would ever continue.
    let background = format!("perl -e 'setpgrp(0, 0); exec @ARGV' {}", patience_bin());
    let start = Instant::now();
    let run = format!("{background} -a 3 -d 5s -- stty -echo; echo rc=$?");
    let Some(text) = on_a_terminal(&dir, &run) else {
        return skip(test, "needs script(1) (util-linux)");
    };
    assert!(text.contains("rc=150"), "{text}");
    assert!(
        text.contains("failed after 1 attempt (stopped by SIGTTOU"),
        "{text}"
    );
    assert!(text.contains("--foreground"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}: {text}",
        start.elapsed()
    );
    // A read is stopped by SIGTTIN the same way.
    let run = format!("{background} -a 2 -- sh -c 'read x'; echo rc=$?");
    let text = on_a_terminal(&dir, &run).unwrap();
    assert!(
        text.contains("rc=149") && text.contains("stopped by SIGTTIN"),
        "{text}"
    );
    // In init mode the reaper sees the stop instead of the waiter.
    let run = format!("{background} --init -a 3 -- stty -echo; echo rc=$?");
    let text = on_a_terminal(&dir, &run).unwrap();
    assert!(
        text.contains("rc=150") && text.contains("stopped by SIGTTOU"),
        "{text}"
    );
    // In the foreground the attempt's group gets the terminal while it runs
    // (with or without --init), and the shell has it back afterwards: its
    // own stty would be stopped otherwise and the script would hang.
    for flags in ["-a 1", "--init -a 1", "--foreground -a 1"] {
        let run = format!(
            "{} {flags} -- stty -echo; echo rc=$?; stty echo; echo back=$?",
            patience_bin()
        );
        let text = on_a_terminal(&dir, &run).unwrap();
        assert!(
            text.contains("rc=0") && text.contains("back=0"),
            "{flags}: {text}"
        );
    }
}

#[test]
fn pid1_under_restart_always_lets_no_leftover_pile_up() {
    // Issue 11 item 4: each attempt leaves a member of its group that
    // ignores SIGTERM; at most the current attempt's one is alive at any
    // moment, and none after the stop.
    let test = "pid1_under_restart_always_lets_no_leftover_pile_up";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("pid1-pile");
    let marker = unique_sleep_secs();
    let _cleanup = Cleanup(marker.clone());
    let script = format!("sh -c 'trap \"\" TERM; exec sleep {marker}' & sleep 0.1; exit 1");
    let guard = Guard::new(
        as_pid1(
            &dir,
            &[
                "--restart",
                "always",
                "--forever",
                "-d",
                "0",
                "-k",
                "200ms",
                "--",
                "sh",
                "-c",
                &script,
            ],
        )
        .spawn()
        .expect("spawn unshare"),
    );
    let mut most = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        most = most.max(sleeps_matching(&marker).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid1 = children_of(guard.id())
        .first()
        .map(|&(pid, _)| pid)
        .expect("patience under unshare");
    send_signal(pid1, "TERM");
    let out = guard.wait_output(Duration::from_secs(20));
    assert!(most <= 1, "{most} leftovers alive at once: {}", stderr(&out));
    assert!(stderr(&out).contains("attempt 3"), "{}", stderr(&out));
    assert!(sleeps_matching(&marker).is_empty());
}

#[test]
fn pid1_docker_stop_of_a_server_that_exits_cleanly_is_status_0() {
    // Issue 11 items 6 and 9: SIGTERM from outside reaches the server,
    // which takes 6 s (more than the 5 s default grace) to exit 0; nothing
    // SIGKILLs it, and the container's status is the server's.
    let test = "pid1_docker_stop_of_a_server_that_exits_cleanly_is_status_0";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("pid1-stop");
    let up = dir.join("up");
    let script = format!(
        "trap 'sleep 6; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        up.display()
    );
    let guard = Guard::new(
        as_pid1(
            &dir,
            &["--restart", "always", "--forever", "--", "sh", "-c", &script],
        )
        .spawn()
        .expect("spawn unshare"),
    );
    assert!(eventually(Duration::from_secs(10), || up.exists()));
    let pid1 = children_of(guard.id())
        .first()
        .map(|&(pid, _)| pid)
        .expect("patience under unshare");
    let sent = Instant::now();
    send_signal(pid1, "TERM");
    let out = guard.wait_output(Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(sent.elapsed() >= Duration::from_secs(5), "{:?}", sent.elapsed());
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert!(!err.contains("SIGKILL"), "{err}");
}
