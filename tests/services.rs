//! `patience --services FILE`: the file and its errors, dependencies and
//! conditions, readiness, prefixed output, ordered shutdown and signals,
//! all through the real binary. Every process a test starts is reaped by
//! its Guard (killed on drop), and a unique sleep length finds survivors.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn stack(dir: &TempDir, text: &str) -> String {
    let path = dir.join("services.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn services(dir: &TempDir, file: &str, more: &[&str]) -> std::process::Output {
    let mut args = vec!["--services", file];
    args.extend_from_slice(more);
    run(dir, &args)
}

#[test]
fn file_errors_name_file_line_and_key_with_status_125() {
    let dir = TempDir::new("svc-errors");
    for (text, want) in [
        ("[service.a]\ncommand = [\"true\"]\nbogus = 1\n", ":3: unknown key 'bogus'"),
        ("[service.a]\ncommand = [\"true\"]\nattempts = -2\n", ":3: key 'attempts' in [service.a]"),
        ("[service.a]\ncommand = [\"true\"]\ndepends-on = [\"db\"]\n", ":3: key 'depends-on' in [service.a]: unknown service 'db'"),
        (
            "[service.app]\ncommand = [\"true\"]\ndepends-on = [\"migrate\"]\n[service.migrate]\ncommand = [\"true\"]\ndepends-on = [\"app\"]\n",
            "app -> migrate -> app",
        ),
        (
            "[service.db]\ncommand = [\"true\"]\nrestart = \"always\"\nforever = true\n[service.app]\ncommand = [\"true\"]\ndepends-on = { db = \"succeeded\" }\n",
            ":7: key 'depends-on' in [service.app]: 'db' can never have succeeded",
        ),
        ("[defaults]\ntimeout = \"soon\"\n[service.a]\ncommand = [\"true\"]\n", ":2: key 'timeout' in [defaults]"),
        ("[service.a]\ncommand = [\"true\"]\nquiet = true\n", "[supervisor]"),
    ] {
        let file = stack(&dir, text);
        let out = services(&dir, &file, &[]);
        assert_eq!(code(&out), 125, "{text}\n{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&file) && err.contains(want), "{text}\nwant {want}\ngot {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let file = stack(&dir, "[service.a]\ncommand = [\"true\"]\n");
    let out = run(&dir, &["-a", "5", "--services", &file]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("--attempts") && stderr(&out).contains("[service.NAME]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_shows_settings_sources_conditions_order_and_command_line() {
    let dir = TempDir::new("svc-dry");
    let file = stack(
        &dir,
        "[supervisor]\nname = \"shop\"\n[defaults]\nkill-after = \"3s\"\n\
         [service.app]\ncommand = [\"./server\", \"--port\", \"8080\"]\ndepends-on = [\"db\"]\nattempts = 4\n\
         [service.db]\ncommand = [\"postgres\"]\nrestart = \"always\"\nforever = true\nready-tcp = \"127.0.0.1:5432\"\n",
    );
    let out = services(&dir, &file, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("start order: db, app"), "{text}");
    assert!(text.contains("depends-on: db ready (short form)"), "{text}");
    assert!(text.contains("readiness: tcp 127.0.0.1:5432"), "{text}");
    assert!(
        text.contains("command line: patience --no-config --init --name=shop.app --stdin=null --kill-after=3s --attempts=4 -- ./server --port 8080"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("kill-after") && l.contains("[defaults] in")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("attempts") && l.contains("[service.app] in")),
        "{text}"
    );
}

#[test]
fn dependencies_start_in_order_and_output_is_prefixed_whole_lines() {
    let dir = TempDir::new("svc-order");
    let file = stack(
        &dir,
        "[service.db]\ncommand = [\"sh\", \"-c\", \"sleep 0.3; echo ready now; exec sleep 30\"]\nrestart = \"always\"\nforever = true\nready-pattern = \"ready now\"\n\
         [service.migrate]\ncommand = [\"sh\", \"-c\", \"echo migrating; printf 'no newline'\"]\ndepends-on = [\"db\"]\n\
         [service.app]\ncommand = [\"sh\", \"-c\", \"echo app up; echo oops >&2\"]\ndepends-on = { migrate = \"succeeded\" }\n\
         [supervisor]\nmain = \"app\"\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("no {l:?} in {text:?}"))
    };
    assert!(at("db      | ready now") < at("migrate | migrating"));
    assert!(at("migrate | no newline") < at("app     | app up"));
    assert!(stderr(&out).contains("app     | oops\n"), "{}", stderr(&out));
}

#[test]
fn a_failed_dependency_blocks_its_dependents_with_the_root_cause_status() {
    let dir = TempDir::new("svc-blocked");
    let file = stack(
        &dir,
        "[service.migrate]\ncommand = [\"sh\", \"-c\", \"exit 7\"]\nattempts = 1\ncritical = false\n\
         [service.app]\ncommand = [\"echo\", \"never\"]\ndepends-on = [\"migrate\"]\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(!stdout(&out).contains("never"));
    assert!(
        stderr(&out).contains("[patience] app: blocked: migrate failed (exit code 7)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn selection_starts_the_named_service_and_what_it_needs_only() {
    let dir = TempDir::new("svc-select");
    let file = stack(
        &dir,
        "[service.a]\ncommand = [\"echo\", \"a ran\"]\n[service.b]\ncommand = [\"echo\", \"b ran\"]\ndepends-on = [\"a\"]\n\
         [service.c]\ncommand = [\"echo\", \"c ran\"]\n[service.tool]\ncommand = [\"echo\", \"tool ran\"]\nautostart = false\n",
    );
    let out = services(&dir, &file, &["b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("a ran")
            && text.contains("b ran")
            && !text.contains("c ran")
            && !text.contains("tool ran"),
        "{text}"
    );
    let out = services(&dir, &file, &[]);
    assert!(!stdout(&out).contains("tool ran"));
    let out = services(&dir, &file, &["nope"]);
    assert_eq!(code(&out), 125);
}

#[test]
fn exit_any_and_non_critical_failures() {
    let dir = TempDir::new("svc-exit");
    let sleep = unique_sleep_secs();
    let file = stack(
        &dir,
        &format!(
            "[supervisor]\nexit = \"any\"\n[service.long]\ncommand = [\"sleep\", \"{sleep}\"]\n\
             [service.quick]\ncommand = [\"sh\", \"-c\", \"exit 4\"]\nattempts = 1\ncritical = false\n"
        ),
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(processes_matching(&format!("sleep {sleep}")).is_empty());
}

#[test]
fn ready_timeout_ends_the_attempt_with_124_when_it_was_the_last() {
    let dir = TempDir::new("svc-ready-timeout");
    let file = stack(
        &dir,
        "[service.slow]\ncommand = [\"sleep\", \"30\"]\nattempts = 1\nready-tcp = \"127.0.0.1:9\"\nready-timeout = \"300ms\"\nkill-after = \"1s\"\n",
    );
    let t = Instant::now();
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        stderr(&out).contains("[patience] slow: not ready after 300ms"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ready_command_gates_a_dependent() {
    let dir = TempDir::new("svc-ready-command");
    let flag = dir.join("flag");
    let file = stack(
        &dir,
        &format!(
            "[service.maker]\ncommand = [\"sh\", \"-c\", \"sleep 0.4; touch {f}; exec sleep 30\"]\nrestart = \"always\"\nforever = true\n\
             ready-command = [\"test\", \"-e\", \"{f}\"]\nready-interval = \"100ms\"\n\
             [service.user]\ncommand = [\"sh\", \"-c\", \"test -e {f} && echo saw it\"]\ndepends-on = [\"maker\"]\n\
             [supervisor]\nmain = \"user\"\n",
            f = flag.display()
        ),
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("user  | saw it"), "{}", stdout(&out));
}

#[test]
fn sigterm_stops_in_reverse_order_and_kills_a_term_ignoring_service() {
    let dir = TempDir::new("svc-shutdown");
    let log = dir.join("order");
    let sleep = unique_sleep_secs();
    let file = stack(
        &dir,
        &format!(
            "[service.db]\ncommand = [\"sh\", \"-c\", \"trap 'echo db >> {l}; exit 0' TERM; while :; do sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\n\
             [service.app]\ncommand = [\"sh\", \"-c\", \"trap 'echo app >> {l}; exit 0' TERM; while :; do sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\ndepends-on = [\"db\"]\n\
             [service.stubborn]\ncommand = [\"sh\", \"-c\", \"trap '' TERM; sleep {sleep}\"]\nrestart = \"always\"\nforever = true\nkill-after = \"1s\"\ndepends-on = [\"app\"]\n",
            l = log.display()
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    assert!(eventually(Duration::from_secs(10), || !processes_matching(
        &format!("sleep {sleep}")
    )
    .is_empty()));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    send_signal(guard.id(), "TERM");
    let status = guard.wait_status(Duration::from_secs(20));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "app\ndb\n");
    assert!(processes_matching(&format!("sleep {sleep}")).is_empty());
}

#[test]
fn hup_passes_to_every_running_attempt_and_stops_nothing() {
    let dir = TempDir::new("svc-hup");
    let log = dir.join("hups");
    let svc = |n: &str| {
        format!(
            "[service.{n}]\ncommand = [\"sh\", \"-c\", \"trap 'echo {n} >> {l}' HUP; echo up; while :; do sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\nkill-after = \"1s\"\n",
            l = log.display()
        )
    };
    let file = stack(&dir, &format!("{}{}", svc("one"), svc("two")));
    let mut guard = spawn(&dir, &["--services", &file]);
    std::thread::sleep(Duration::from_millis(800));
    send_signal(guard.id(), "HUP");
    assert!(eventually(Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("one") && t.contains("two")
    }));
    assert!(
        guard.child().try_wait().unwrap().is_none(),
        "HUP stopped the stack"
    );
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(10)).code(), Some(143));
}

#[test]
fn every_line_is_out_before_patience_exits() {
    // The shim's exit ends the run (and the stack), but its last lines may
    // still be in the pipe: patience exits only once they are written.
    let dir = TempDir::new("svc-drain");
    let file = stack(
        &dir,
        "[service.app]\ncommand = [\"sh\", \"-c\", \"seq 1 30000; seq 1 3000 >&2; printf tail\"]\n",
    );
    for _ in 0..3 {
        let out = services(&dir, &file, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 30001, "lost lines: {}", lines.last().unwrap_or(&""));
        assert_eq!(lines[29999], "app | 30000");
        assert_eq!(lines[30000], "app | tail");
        let err = stderr(&out);
        assert_eq!(
            err.lines().filter(|l| l.starts_with("app | ")).count(),
            3000,
            "{err}"
        );
    }
}

// ---- a service's subtree dies with it ----

/// Kills a test's leftover `sleep MARKER` processes on drop, should a
/// failed assertion leave a stack's orphans behind (a SIGKILLed supervisor
/// cannot stop its services).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in &self.0 {
            for pid in processes_matching(&format!("sleep {m}")) {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

/// Pids written by the services' shells, one a line, once there are `n`.
fn pids_in(path: &std::path::Path, n: usize) -> Vec<i32> {
    let mut pids = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            pids = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            pids.len() >= n
        }),
        "no {n} pids in {}",
        path.display()
    );
    pids
}

/// Whether `pid` is alive and not a zombie, and its command line is still
/// `sleep MARKER` (so a reused pid does not count).
fn alive_sleep(pid: i32, marker: &str) -> bool {
    processes_matching(&format!("sleep {marker}")).contains(&pid)
}

#[test]
fn a_setsid_grandchild_dies_with_its_service_when_the_stack_stops() {
    let dir = TempDir::new("svc-setsid");
    let pids = dir.join("pids");
    let (daemon, main) = (unique_sleep_secs(), unique_sleep_secs());
    let _cleanup = Cleanup(vec![daemon.clone(), main.clone()]);
    // setsid: a new session and group, out of the attempt's group, so only
    // the shim's subreaper duty can find it.
    let file = stack(
        &dir,
        &format!(
            "[service.server]\ncommand = [\"sh\", \"-c\", \"setsid sleep {daemon} & echo $! >> {p}; echo $$ >> {p}; exec sleep {main}\"]\n\
             restart = \"always\"\nforever = true\nkill-after = \"1s\"\n",
            p = pids.display()
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    let found = pids_in(&pids, 2);
    let (grandchild, attempt) = (found[0], found[1]);
    assert!(eventually(Duration::from_secs(5), || alive_sleep(
        grandchild, &daemon
    ) && alive_sleep(
        attempt, &main
    )));
    let sid = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(3)?
                    .parse::<i32>()
                    .ok()
            })
    };
    assert_ne!(sid(grandchild), sid(attempt), "setsid did not take");
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(20)).code(), Some(143));
    assert!(
        !alive_sleep(grandchild, &daemon),
        "the setsid grandchild {grandchild} survived"
    );
    assert!(!alive_sleep(attempt, &main), "the attempt {attempt} survived");
}

#[test]
fn a_setsid_grandchild_of_a_task_dies_when_the_task_ends_not_with_the_stack() {
    let dir = TempDir::new("svc-setsid-task");
    let pids = dir.join("pids");
    let (daemon, long) = (unique_sleep_secs(), unique_sleep_secs());
    let _cleanup = Cleanup(vec![daemon.clone(), long.clone()]);
    let file = stack(
        &dir,
        &format!(
            "[service.task]\ncommand = [\"sh\", \"-c\", \"setsid sleep {daemon} & echo $! >> {p}; exit 0\"]\nkill-after = \"1s\"\n\
             [service.long]\ncommand = [\"sleep\", \"{long}\"]\n",
            p = pids.display()
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    let grandchild = pids_in(&pids, 1)[0];
    // The task succeeded; its leftover goes then, while the stack runs on.
    assert!(
        eventually(Duration::from_secs(10), || !alive_sleep(grandchild, &daemon)),
        "the task's setsid grandchild {grandchild} outlived the task"
    );
    assert!(eventually(Duration::from_secs(5), || !processes_matching(
        &format!("sleep {long}")
    )
    .is_empty()));
    assert!(
        guard.child().try_wait().unwrap().is_none(),
        "the stack ended with the task"
    );
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(20)).code(), Some(143));
    assert!(processes_matching(&format!("sleep {long}")).is_empty());
}

#[test]
fn a_setsid_daemon_of_a_stopped_service_gets_its_stop_signal_before_any_sigkill() {
    let dir = TempDir::new("svc-setsid-term");
    let (got, pids) = (dir.join("got"), dir.join("pids"));
    let main = unique_sleep_secs();
    let _cleanup = Cleanup(vec![main.clone()]);
    // The daemon, in a session of its own, exits on TERM; the group signal
    // cannot reach it, so only the shim can pass the stop on to it once
    // its parent (the attempt) is gone. kill-after 20s: a SIGKILL after
    // the grace would take far longer than the test allows.
    let daemon = dir.join("daemon.sh");
    std::fs::write(
        &daemon,
        format!(
            "trap 'echo term >> {g}; exit 0' TERM; echo $$ >> {p}; while :; do sleep 0.05; done\n",
            g = got.display(),
            p = pids.display()
        ),
    )
    .unwrap();
    let file = stack(
        &dir,
        &format!(
            "[service.server]\ncommand = [\"sh\", \"-c\", \"setsid sh {d} & exec sleep {main}\"]\n\
             restart = \"always\"\nforever = true\nkill-after = \"20s\"\n",
            d = daemon.display()
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    let pid = pids_in(&pids, 1)[0];
    assert!(eventually(Duration::from_secs(5), || !processes_matching(
        &format!("sleep {main}")
    )
    .is_empty()));
    let t = Instant::now();
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(40)).code(), Some(143));
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert_eq!(std::fs::read_to_string(&got).unwrap_or_default(), "term\n");
    let daemons = processes_matching(&format!("sh {}", daemon.display()));
    assert!(!daemons.contains(&pid), "the daemon {pid} survived");
}

// ---- HUP, USR1, USR2: passed on, nothing stops ----

#[test]
fn hup_usr1_and_usr2_reach_every_running_attempt_and_stop_nothing() {
    let dir = TempDir::new("svc-usr");
    let log = dir.join("got");
    let svc = |n: &str| {
        format!(
            "[service.{n}]\ncommand = [\"sh\", \"-c\", \"for s in HUP USR1 USR2; do trap \\\"echo {n} got $s; echo {n} $s >> {l}\\\" $s; done; \
             echo {n} up; echo {n} up >> {l}; while :; do sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\nkill-after = \"1s\"\n",
            l = log.display()
        )
    };
    // `done` ended long ago; `later` waits in its backoff: neither has an
    // attempt to signal, and neither may be disturbed.
    let file = stack(
        &dir,
        &format!(
            "{}{}[service.done]\ncommand = [\"true\"]\n\
             [service.later]\ncommand = [\"sh\", \"-c\", \"echo later ran >> {l}; exit 1\"]\nattempts = 2\ndelay = \"30s\"\ncritical = false\n",
            svc("one"),
            svc("two"),
            l = log.display()
        ),
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut guard = spawn(&dir, &["--services", &file]);
    assert!(eventually(Duration::from_secs(10), || {
        let t = read();
        t.contains("one up") && t.contains("two up") && t.contains("later ran")
    }));
    // The shells' traps are set before `up` is written.
    for sig in ["HUP", "USR1", "USR2"] {
        send_signal(guard.id(), sig);
        assert!(
            eventually(Duration::from_secs(5), || {
                let t = read();
                t.contains(&format!("one {sig}")) && t.contains(&format!("two {sig}"))
            }),
            "{sig} did not reach both: {}",
            read()
        );
        assert!(
            guard.child().try_wait().unwrap().is_none(),
            "{sig} stopped the stack"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    send_signal(guard.id(), "TERM");
    let out = guard.wait_output(Duration::from_secs(20));
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    let text = stdout(&out);
    for n in ["one", "two"] {
        assert_eq!(
            text.matches(&format!("{n} up")).count(),
            1,
            "{n} restarted: {text}"
        );
        for sig in ["HUP", "USR1", "USR2"] {
            assert!(text.contains(&format!("{n:<5} | {n} got {sig}\n")), "{text}");
        }
    }
    assert_eq!(read().matches("later ran").count(), 1, "{}", read());
    assert!(!stderr(&out).contains("attempt 2"), "{}", stderr(&out));
}

// ---- exit statuses (patience-services(5) EXIT STATUS) ----

/// Runs a stack with a long-running service beside it (which must be
/// stopped for the stack to end) and returns its status and stderr.
fn status_of_stack(dir: &TempDir, text: &str) -> (i32, String) {
    let long = unique_sleep_secs();
    let file = stack(
        dir,
        &format!("{text}[service.bystander]\ncommand = [\"sleep\", \"{long}\"]\n"),
    );
    let t = Instant::now();
    let out = services(dir, &file, &[]);
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert!(processes_matching(&format!("sleep {long}")).is_empty());
    (code(&out), stderr(&out))
}

#[test]
fn main_sets_the_status_whatever_its_run_ended_with() {
    let dir = TempDir::new("svc-main-status");
    let main = |cmd: &str, more: &str| {
        format!("[supervisor]\nmain = \"app\"\n[service.app]\ncommand = {cmd}\nattempts = 1\n{more}")
    };
    for (text, want, says) in [
        (
            main(r#"["sh", "-c", "sleep 0.2; exit 0"]"#, ""),
            0,
            "bystander: stopped by SIGTERM",
        ),
        (
            main(r#"["sh", "-c", "sleep 0.2; exit 3"]"#, ""),
            3,
            "(exit code 3",
        ),
        (
            main(r#"["sh", "-c", "sleep 0.2; kill -KILL $$"]"#, ""),
            128 + 9,
            "killed by SIGKILL",
        ),
        (
            main(r#"["sleep", "30"]"#, "timeout = \"200ms\"\n"),
            124,
            "(timeout after 200ms",
        ),
        (main(r#"["/nonexistent/command"]"#, ""), 127, "command not found"),
        (main(r#"["/etc/passwd"]"#, ""), 126, "not executable"),
        // A critical service that is not main failing ends the stack too,
        // with its status, even though main had not ended.
        (
            main(
                r#"["sleep", "30"]"#,
                "[service.helper]\ncommand = [\"sh\", \"-c\", \"exit 9\"]\nattempts = 1\n",
            ),
            9,
            "helper: failed (exit code 9); stopping the stack",
        ),
    ] {
        let (status, err) = status_of_stack(&dir, &text);
        assert_eq!(status, want, "{text}\n{err}");
        assert!(err.contains(says), "{text}\nwant {says}\n{err}");
    }
}

#[test]
fn main_refused_a_slot_is_75() {
    let dir = TempDir::new("svc-main-75");
    let (status, err) = status_of_stack(
        &dir,
        "[supervisor]\nmain = \"app\"\n\
         [service.holder]\ncommand = [\"sleep\", \"30\"]\nkey = \"svc-main-75\"\nmax-concurrent = 1\n\
         [service.app]\ncommand = [\"echo\", \"ran\"]\nkey = \"svc-main-75\"\nmax-concurrent = 1\ndepends-on = { holder = \"started\" }\n",
    );
    assert_eq!(status, 75, "{err}");
    assert!(err.contains("no free slot for key 'svc-main-75'"), "{err}");
}

#[test]
fn exit_all_is_0_when_every_critical_service_succeeded_else_the_first_failure() {
    let dir = TempDir::new("svc-exit-all");
    // A non-critical failure changes nothing.
    let file = stack(
        &dir,
        "[service.opt]\ncommand = [\"sh\", \"-c\", \"exit 5\"]\nattempts = 1\ncritical = false\n\
         [service.ok]\ncommand = [\"sh\", \"-c\", \"sleep 0.3\"]\n[service.ok2]\ncommand = [\"true\"]\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("opt: failed after 1 attempt (exit code 5"),
        "{}",
        stderr(&out)
    );
    // The first critical service to give up (after its retries) decides,
    // and stops the rest; a later failure during the stop does not count.
    let (status, err) = status_of_stack(
        &dir,
        "[service.first]\ncommand = [\"sh\", \"-c\", \"exit 5\"]\nattempts = 2\ndelay = \"100ms\"\n\
         [service.second]\ncommand = [\"sh\", \"-c\", \"trap 'exit 8' TERM; while :; do sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\n",
    );
    assert_eq!(status, 5, "{err}");
    assert!(
        err.contains("first: failed after 2 attempts (exit code 5"),
        "{err}"
    );
}

#[test]
fn exit_any_is_the_first_run_that_ended_even_a_success() {
    let dir = TempDir::new("svc-exit-any-0");
    let (status, err) = status_of_stack(
        &dir,
        "[supervisor]\nexit = \"any\"\n[service.quick]\ncommand = [\"sh\", \"-c\", \"sleep 0.2\"]\n\
         [service.later]\ncommand = [\"sh\", \"-c\", \"sleep 5; exit 3\"]\n",
    );
    assert_eq!(status, 0, "{err}");
}

#[test]
fn a_blocked_critical_service_ends_the_stack_with_the_root_cause_through_a_chain() {
    let dir = TempDir::new("svc-blocked-chain");
    let (status, err) = status_of_stack(
        &dir,
        "[service.c]\ncommand = [\"sh\", \"-c\", \"exit 6\"]\nattempts = 1\ncritical = false\n\
         [service.b]\ncommand = [\"echo\", \"never\"]\ndepends-on = [\"c\"]\ncritical = false\n\
         [service.a]\ncommand = [\"echo\", \"never\"]\ndepends-on = [\"b\"]\n",
    );
    assert_eq!(status, 6, "{err}");
    assert!(err.contains("b: blocked: c failed (exit code 6)"), "{err}");
    assert!(
        err.contains("a: blocked: b is blocked (c failed (exit code 6)"),
        "{err}"
    );
}

#[test]
fn stopped_by_int_or_quit_is_128_plus_n() {
    for (sig, want) in [("INT", 130), ("QUIT", 131)] {
        let dir = TempDir::new("svc-int");
        let sleep = unique_sleep_secs();
        let file = stack(
            &dir,
            &format!(
                "[service.a]\ncommand = [\"sleep\", \"{sleep}\"]\nrestart = \"always\"\nforever = true\n"
            ),
        );
        let mut guard = spawn(&dir, &["--services", &file]);
        assert!(eventually(Duration::from_secs(10), || !processes_matching(
            &format!("sleep {sleep}")
        )
        .is_empty()));
        send_signal(guard.id(), sig);
        assert_eq!(
            guard.wait_status(Duration::from_secs(20)).code(),
            Some(want),
            "{sig}"
        );
        assert!(processes_matching(&format!("sleep {sleep}")).is_empty());
    }
}

#[test]
fn a_second_term_kills_everything_left_at_once() {
    let dir = TempDir::new("svc-second");
    let sleep = unique_sleep_secs();
    let file = stack(
        &dir,
        &format!(
            "[service.stubborn]\ncommand = [\"sh\", \"-c\", \"trap '' TERM; exec sleep {sleep}\"]\nrestart = \"always\"\nforever = true\nkill-after = \"60s\"\n"
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    assert!(eventually(Duration::from_secs(10), || !processes_matching(
        &format!("sleep {sleep}")
    )
    .is_empty()));
    send_signal(guard.id(), "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        guard.child().try_wait().unwrap().is_none(),
        "a TERM-ignoring service went at once"
    );
    let t = Instant::now();
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(20)).code(), Some(143));
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(processes_matching(&format!("sleep {sleep}")).is_empty());
}

#[test]
fn shutdown_timeout_kills_everything_left() {
    let dir = TempDir::new("svc-shutdown-timeout");
    let sleep = unique_sleep_secs();
    let file = stack(
        &dir,
        &format!(
            "[supervisor]\nshutdown-timeout = \"1s\"\n\
             [service.stubborn]\ncommand = [\"sh\", \"-c\", \"trap '' TERM; exec sleep {sleep}\"]\nrestart = \"always\"\nforever = true\nkill-after = \"60s\"\n"
        ),
    );
    let mut guard = spawn(&dir, &["--services", &file]);
    assert!(eventually(Duration::from_secs(10), || !processes_matching(
        &format!("sleep {sleep}")
    )
    .is_empty()));
    let t = Instant::now();
    send_signal(guard.id(), "TERM");
    assert_eq!(guard.wait_status(Duration::from_secs(20)).code(), Some(143));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    assert!(processes_matching(&format!("sleep {sleep}")).is_empty());
}
