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

#[test]
fn env_file_clear_env_and_cwd_shape_the_service_environment() {
    let dir = TempDir::new("svc-env");
    std::fs::create_dir_all(dir.join("conf/work")).unwrap();
    std::fs::write(
        dir.join("conf/app.env"),
        "# a comment\n; another\nexport GREETING=\"hello world\"\nQUOTED='$HOME stays'\n\nPLAIN = 1\nTABLE=from-file\n",
    )
    .unwrap();
    let file = dir.join("conf/services.toml");
    std::fs::write(
        &file,
        "[service.app]\ncommand = [\"sh\", \"-c\", \"echo \\\"G=$GREETING Q=$QUOTED P=$PLAIN T=$TABLE H=${HOME:-unset} S=$PATIENCE_SERVICE\\\"; pwd\"]\n\
         env-file = [\"app.env\", \"-missing.env\"]\nenv = { TABLE = \"from-table\", PATH = \"/usr/bin:/bin\" }\nclear-env = true\ncwd = \"work\"\n\
         [service.open]\ncommand = [\"sh\", \"-c\", \"echo open H=$HOME N=${NOTIFY_SOCKET:-none}\"]\n",
    )
    .unwrap();
    let mut c = patience(&dir);
    c.args(["--services", file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", dir.join("not-for-services.sock"));
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("app  | G=hello world Q=$HOME stays P=1 T=from-table H=unset S=app\n"),
        "{text}"
    );
    let work = std::fs::canonicalize(dir.join("conf/work")).unwrap();
    assert!(text.contains(&format!("app  | {}\n", work.display())), "{text}");
    assert!(
        text.contains(&format!("open | open H={} N=none\n", dir.path().display())),
        "{text}"
    );
}

#[test]
fn a_bad_env_file_line_names_the_file_and_the_line() {
    let dir = TempDir::new("svc-env-bad");
    std::fs::write(dir.join("bad.env"), "A=1\n# fine\nnot a pair\n").unwrap();
    std::fs::write(dir.join("badname.env"), "1A=x\n").unwrap();
    for (env, want) in [
        ("bad.env", "bad.env:3: expected KEY=VALUE"),
        ("badname.env", "badname.env:1: invalid variable name '1A'"),
        ("absent.env", "cannot read env file"),
    ] {
        let file = stack(
            &dir,
            &format!("[service.a]\ncommand = [\"true\"]\nenv-file = \"{env}\"\n"),
        );
        let out = services(&dir, &file, &[]);
        assert_eq!(code(&out), 125, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{file}:3: key 'env-file' in [service.a]")) && err.contains(want),
            "want {want}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn failing_health_checks_end_the_attempt_as_unhealthy_and_it_restarts() {
    let dir = TempDir::new("svc-health");
    let flag = dir.join("alive");
    let count = dir.join("attempts");
    let file = stack(
        &dir,
        &format!(
            "[service.web]\ncommand = [\"sh\", \"-c\", \"echo x >> {c}; touch {f}; exec sleep 30\"]\nrestart = \"always\"\nforever = true\ndelay = \"100ms\"\nkill-after = \"1s\"\n\
             health-command = [\"test\", \"-e\", \"{f}\"]\nhealth-interval = \"100ms\"\nhealth-failures = 3\n",
            f = flag.display(),
            c = count.display()
        ),
    );
    let guard = spawn(&dir, &["--services", &file]);
    let attempts = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(eventually(Duration::from_secs(10), || attempts() == 1 && flag.exists()));
    // Healthy for a while: no restart.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(attempts(), 1);
    let t = Instant::now();
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || attempts() == 2),
        "no second attempt after the health check failed"
    );
    // Three checks 100ms apart, then the stop and the delay: not at once.
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(attempts(), 2, "the healthy second attempt was ended too");
    send_signal(guard.id(), "TERM");
    let out = guard.wait_output(Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(143));
    let err = stderr(&out);
    assert!(
        err.contains("[patience] web: unhealthy: exit code 1 (3 checks in a row); ending the attempt"),
        "{err}"
    );
    assert_eq!(err.matches("unhealthy").count(), 1, "{err}");
}

/// A one-thread HTTP server on loopback answering every request with the
/// status `status` holds at the time; stops when dropped.
struct HttpServer {
    port: u16,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    hits: std::sync::Arc<std::sync::atomic::AtomicU32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(status: u16) -> HttpServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st2, hits2, stop2) = (st.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                if text.starts_with("GET /healthz HTTP/1.1\r\n") && text.contains("\r\nHost: 127.0.0.1:") {
                    hits2.fetch_add(1, SeqCst);
                }
                let code = st2.load(SeqCst);
                let _ = conn.write_all(
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        HttpServer {
            port,
            status: st,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, status: u16) {
        self.status.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    fn hits(&self) -> u32 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn ready_http_waits_for_a_2xx_or_3xx_and_health_http_ends_an_unhealthy_attempt() {
    let dir = TempDir::new("svc-http");
    let server = HttpServer::start(503);
    let url = format!("http://127.0.0.1:{}/healthz", server.port);
    let file = stack(
        &dir,
        &format!(
            "[service.api]\ncommand = [\"sleep\", \"30\"]\nattempts = 1\nkill-after = \"1s\"\n\
             ready-http = \"{url}\"\nready-interval = \"100ms\"\n\
             health-http = \"{url}\"\nhealth-interval = \"100ms\"\nhealth-failures = 2\nhealth-grace = \"300ms\"\n\
             [service.user]\ncommand = [\"sh\", \"-c\", \"echo api is ready; exec sleep 30\"]\ndepends-on = {{ api = \"ready\" }}\ncritical = false\nkill-after = \"1s\"\n\
             [supervisor]\nmain = \"api\"\n"
        ),
    );
    let guard = spawn(&dir, &["--services", &file]);
    assert!(eventually(Duration::from_secs(10), || server.hits() >= 3));
    // 503 is not ready: the dependent waits.
    assert!(processes_matching("sh -c echo api is ready").is_empty());
    server.set(302);
    let ready_at = Instant::now();
    let before = server.hits();
    // The readiness probe, then the health checks after their grace.
    assert!(eventually(Duration::from_secs(10), || server.hits() >= before + 4));
    server.set(500);
    let out = guard.wait_output(Duration::from_secs(20));
    // Ended as a timeout ends it: 124 for the last attempt, and main's
    // status is the stack's.
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(ready_at.elapsed() >= Duration::from_millis(300));
    let text = stdout(&out);
    let err = stderr(&out);
    assert!(text.contains("user | api is ready"), "{text}\n{err}");
    assert!(
        err.contains("[patience] api: unhealthy: HTTP 500 (2 checks in a row); ending the attempt"),
        "{err}"
    );
}

#[test]
fn dry_run_shows_health_and_the_new_readiness_kinds() {
    let dir = TempDir::new("svc-dry-health");
    let file = stack(
        &dir,
        "[service.a]\ncommand = [\"x\"]\nready-http = \"http://localhost:8080/up\"\nhealth-tcp = \"127.0.0.1:8080\"\nhealth-interval = \"2s\"\n\
         [service.b]\ncommand = [\"x\"]\nready-fd = 3\n[service.c]\ncommand = [\"x\"]\nready-notify = true\n",
    );
    let out = services(&dir, &file, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "readiness: http http://localhost:8080/up",
        "health: tcp 127.0.0.1:8080 every 2s within 5s, 3 failures in a row end the attempt, grace 0ms",
        "readiness: fd 3",
        "readiness: notify",
    ] {
        assert!(text.contains(want), "want {want}:\n{text}");
    }
}

#[test]
fn ready_fd_is_a_newline_on_the_descriptor_the_service_names() {
    let dir = TempDir::new("svc-ready-fd");
    let file = stack(
        &dir,
        "[service.three]\ncommand = [\"sh\", \"-c\", \"echo fd3=$(readlink /proc/self/fd/3 | cut -c1-5); sleep 0.4; echo >&3; exec sleep 30\"]\n\
         restart = \"always\"\nforever = true\nready-fd = 3\nready-timeout = \"20s\"\nkill-after = \"1s\"\n\
         [service.five]\ncommand = [\"sh\", \"-c\", \"echo >&5; exec sleep 30\"]\nrestart = \"always\"\nforever = true\nready-fd = 5\nkill-after = \"1s\"\n\
         [service.user]\ncommand = [\"sh\", \"-c\", \"echo after both; test ! -e /proc/self/fd/3 && echo no fd 3\"]\ndepends-on = [\"three\", \"five\"]\n\
         [supervisor]\nmain = \"user\"\n",
    );
    let t = Instant::now();
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let at = |l: &str| {
        text.lines()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no {l:?} in {text:?}"))
    };
    // The service's descriptor 3 is the readiness pipe, not the shim's
    // link to the supervisor (moved to 4 for it).
    assert!(at("three | fd3=pipe:") < at("user  | after both"));
    assert!(text.contains("user  | no fd 3\n"), "{text}");
    assert!(t.elapsed() >= Duration::from_millis(400));
}

#[test]
fn ready_notify_gives_the_service_its_own_socket() {
    if !have_tool("python3", "--version", "python3") {
        return;
    }
    let dir = TempDir::new("svc-ready-notify");
    let send = "import os, socket, time; p = os.environ['NOTIFY_SOCKET']; \
                print('dir mode', oct(os.stat(os.path.dirname(p)).st_mode & 0o777), 'at', p, flush=True); \
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); time.sleep(0.4); \
                s.sendto(b'STATUS=warming up\\\\nMAINPID=1', p); s.sendto(b'READY=1', p); time.sleep(30)";
    let file = stack(
        &dir,
        &format!(
            "[service.db]\ncommand = [\"python3\", \"-c\", \"{send}\"]\nattempts = 1\nready-notify = true\nready-timeout = \"20s\"\nkill-after = \"1s\"\n\
             [service.app]\ncommand = [\"sh\", \"-c\", \"echo app N=${{NOTIFY_SOCKET:-none}}\"]\ndepends-on = {{ db = \"ready\" }}\n\
             [supervisor]\nmain = \"app\"\n"
        ),
    );
    // The sockets go under XDG_RUNTIME_DIR when it exists, where the
    // directory of a supervisor that was killed (a pid that cannot run)
    // is removed.
    let run = dir.join("run");
    let stale = run.join("patience-notify-2147483646-1");
    std::fs::create_dir_all(&stale).unwrap();
    let mut c = patience(&dir);
    c.args(["-v", "--services", &file])
        .env("NOTIFY_SOCKET", dir.join("patience-own.sock"));
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stale.exists(), "the stale directory is still there");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("db  | dir mode"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with(&format!(
            "db  | dir mode 0o700 at {}/patience-notify-",
            run.display()
        )),
        "{line}"
    );
    let socket = line.rsplit(' ').next().unwrap();
    assert!(!socket.contains("patience-own"), "{line}");
    assert!(text.contains("app | app N=none\n"), "{text}");
    let err = stderr(&out);
    assert!(err.contains("[patience] db: status: warming up"), "{err}");
    assert!(err.contains("[patience] db: ready (notify)"), "{err}");
    // The private directory goes with the supervisor.
    let parent = std::path::Path::new(socket).parent().unwrap();
    assert!(!parent.exists(), "{} left behind", parent.display());
}

#[test]
fn under_systemd_the_stack_says_ready_status_watchdog_and_stopping() {
    let dir = TempDir::new("svc-sd-notify");
    let sock_path = dir.join("manager.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let file = stack(
        &dir,
        "[service.db]\ncommand = [\"sh\", \"-c\", \"sleep 0.5; echo up N=${NOTIFY_SOCKET:-none}; exec sleep 30\"]\nrestart = \"always\"\nforever = true\nready-pattern = \"^up\"\nkill-after = \"1s\"\n\
         [service.task]\ncommand = [\"true\"]\n",
    );
    let start = Instant::now();
    let child = patience(&dir)
        .args(["--services", &file])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Guard::new(child);
    let mut got: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut stopped = false;
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = manager.recv(&mut buf) {
            got.push((start.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
        let watchdogs = got.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).count();
        let ready = got.iter().any(|(_, m)| m.contains("READY=1"));
        if ready && watchdogs >= 4 && !stopped {
            send_signal(guard.id(), "TERM");
            stopped = true;
        }
        if got.iter().any(|(_, m)| m.contains("STOPPING=1")) {
            break;
        }
    }
    let out = guard.wait_output(Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let all: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    let ready: Vec<&(Duration, String)> = got.iter().filter(|(_, m)| m.contains("READY=1")).collect();
    assert_eq!(ready.len(), 1, "{all:?}");
    // Not before db is ready (0.5 s in), and with a status saying so.
    assert!(ready[0].0 >= Duration::from_millis(450), "{all:?}");
    assert!(
        ready[0].1.contains("STATUS=2 services: 1 ready, 1 succeeded"),
        "{all:?}"
    );
    assert!(
        got.iter()
            .any(|(t, m)| *t < ready[0].0 && m.contains("STATUS=") && m.contains("starting")),
        "{all:?}"
    );
    assert!(all.last().unwrap().contains("STOPPING=1"), "{all:?}");
    assert!(stdout(&out).contains("db   | up N=none\n"), "{}", stdout(&out));
}

#[test]
fn propagate_restart_stops_the_dependent_and_starts_it_again_when_the_dependency_is_back() {
    let dir = TempDir::new("svc-propagate");
    let pid = dir.join("db.pid");
    let starts = dir.join("app.starts");
    let plain = dir.join("plain.starts");
    let file = stack(
        &dir,
        &format!(
            "[service.db]\ncommand = [\"sh\", \"-c\", \"sleep 0.2; echo $$ > {p}; echo db ready; exec sleep 30\"]\nrestart = \"always\"\nforever = true\ndelay = \"300ms\"\nready-pattern = \"db ready\"\nkill-after = \"1s\"\n\
             [service.app]\ncommand = [\"sh\", \"-c\", \"echo x >> {s}; exec sleep 30\"]\nrestart = \"always\"\nforever = true\nkill-after = \"1s\"\n\
             depends-on = {{ db = {{ when = \"ready\", propagate = \"restart\" }} }}\n\
             [service.plain]\ncommand = [\"sh\", \"-c\", \"echo x >> {q}; exec sleep 30\"]\nrestart = \"always\"\nforever = true\nkill-after = \"1s\"\ndepends-on = [\"db\"]\n",
            p = pid.display(),
            s = starts.display(),
            q = plain.display()
        ),
    );
    let guard = spawn(&dir, &["--services", &file]);
    let count = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default().lines().count();
    assert!(eventually(Duration::from_secs(10), || count(&starts) == 1
        && count(&plain) == 1));
    let first = std::fs::read_to_string(&pid).unwrap();
    let t = Instant::now();
    send_signal(first.trim().parse().unwrap(), "KILL");
    assert!(
        eventually(Duration::from_secs(10), || count(&starts) == 2),
        "app was not started again"
    );
    // Only once db was ready again: after its delay and its 0.2 s.
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    assert_ne!(std::fs::read_to_string(&pid).unwrap(), first);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&starts), 2);
    // Without propagate, a later loss changes nothing.
    assert_eq!(count(&plain), 1);
    send_signal(guard.id(), "TERM");
    let out = guard.wait_output(Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[patience] app: db's attempt ended; stopping, to start again once it is back"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn propagate_needs_an_edge_that_can_hold_again() {
    let dir = TempDir::new("svc-propagate-bad");
    for (edge, want) in [
        (
            "{ when = \"succeeded\", propagate = \"restart\" }",
            "needs when = \"started\" or \"ready\"",
        ),
        (
            "{ when = \"ready\", propagate = \"later\" }",
            "'propagate' must be \"restart\" or \"none\"",
        ),
    ] {
        let file = stack(
            &dir,
            &format!("[service.db]\ncommand = [\"true\"]\n[service.app]\ncommand = [\"true\"]\ndepends-on = {{ db = {edge} }}\n"),
        );
        let out = services(&dir, &file, &[]);
        assert_eq!(code(&out), 125, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(":5: key 'depends-on' in [service.app]") && stderr(&out).contains(want),
            "{}",
            stderr(&out)
        );
    }
}

// ---- log files, timestamps, overflow, hold-output ----

#[test]
fn log_files_are_copies_rotated_by_size_and_a_fifo_is_only_appended_to() {
    let dir = TempDir::new("svc-logfile");
    let fifo = dir.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A reader of the FIFO, as a log shipper would be.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let file = stack(
        &dir,
        &format!(
            "[supervisor]\nlog-dir = \"logs\"\n\
             [service.big]\ncommand = [\"sh\", \"-c\", \"i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2\"]\n\
             log-file = \"big.log\"\nlog-max-size = 300\nlog-keep = 2\n\
             [service.small]\ncommand = [\"sh\", \"-c\", \"echo small\"]\n\
             [service.piped]\ncommand = [\"sh\", \"-c\", \"echo into the fifo\"]\nlog-file = \"{}\"\n",
            fifo.display()
        ),
    );
    std::fs::create_dir(dir.join("logs")).unwrap();
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The terminal still got everything.
    assert_eq!(
        stdout(&out).lines().filter(|l| l.starts_with("big ")).count(),
        100
    );
    let cur = std::fs::read_to_string(dir.join("big.log")).unwrap();
    let one = std::fs::read_to_string(dir.join("big.log.1")).unwrap();
    let two = std::fs::read_to_string(dir.join("big.log.2")).unwrap();
    assert!(!dir.join("big.log.3").exists());
    for f in [&cur, &one, &two] {
        assert!(f.len() <= 300, "{} bytes", f.len());
    }
    // The newest lines, whole and in order, no name prefix; stderr too.
    let all = format!("{two}{one}{cur}");
    assert!(
        all.ends_with("line-99\noops\n") || all.contains("line-99\n"),
        "{all}"
    );
    assert!(all.contains("oops\n"));
    assert!(
        all.lines().all(|l| l.starts_with("line-") || l == "oops"),
        "{all}"
    );
    // log-dir names the others' files.
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/small.log")).unwrap(),
        "small\n"
    );
    // The FIFO is still a FIFO and got its line.
    drop(out);
    let got = reader.join().unwrap();
    assert_eq!(got, b"into the fifo\n");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn log_timestamps_put_the_utc_time_before_each_line() {
    let dir = TempDir::new("svc-stamps");
    let file = stack(
        &dir,
        "[supervisor]\nlog-timestamps = true\n[service.a]\ncommand = [\"sh\", \"-c\", \"echo hello\"]\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0);
    let line = stdout(&out);
    // 2026-12-02T13:51:24.123Z a | hello
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "a | hello\n");
    assert_eq!(stamp.len(), 24, "{stamp}");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{stamp}");
}

#[test]
fn hold_output_is_silent_on_success_and_shows_the_failed_services_last_attempt() {
    let dir = TempDir::new("svc-hold");
    let text = "[supervisor]\nhold-output = true\n\
        [service.fine]\ncommand = [\"sh\", \"-c\", \"echo all good\"]\n\
        [service.flaky]\ncommand = [\"sh\", \"-c\", \"echo try; echo why >&2; exit 4\"]\nattempts = 3\ndelay = \"0\"\nSTATUS\n";
    let file = stack(&dir, &text.replace("STATUS", "success-exit = \"0,4\""));
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    let file = stack(&dir, &text.replace("STATUS", ""));
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    // The failed service's last attempt only; nothing of the one that was fine.
    assert_eq!(stdout(&out), "flaky | try\n");
    let err = stderr(&out);
    assert!(err.starts_with("flaky | why\n"), "{err}");
    assert_eq!(err.matches("flaky | why").count(), 1, "{err}");
    assert!(err.contains("[patience] flaky: failed after 3 attempts"), "{err}");
    assert!(!err.contains("fine"), "{err}");
    // The same from the command line.
    let file = stack(
        &dir,
        &text.replace("STATUS", "").replace("hold-output = true\n", ""),
    );
    let out = services(&dir, &file, &["--hold-output"]);
    assert_eq!(code(&out), 4);
    assert_eq!(stdout(&out), "flaky | try\n");
}

#[test]
fn log_overflow_drop_lets_services_run_past_a_reader_that_reads_nothing_and_counts() {
    let dir = TempDir::new("svc-drop");
    let done = dir.join("done");
    let file = stack(
        &dir,
        &format!(
            "[supervisor]\nlog-overflow = \"drop\"\n\
             [service.loud]\ncommand = [\"sh\", \"-c\", \"yes 0123456789012345678901234567890123456789 | head -c 4000000; touch {}; exec sleep 1000\"]\n\
             restart = \"always\"\nforever = true\n",
            done.display()
        ),
    );
    // stdout is a pipe nobody reads: full after 64 KiB.
    let sup = spawn(&dir, &["--services", &file]);
    assert!(
        eventually(Duration::from_secs(30), || done.exists()),
        "the service was held up by the full stdout"
    );
    let mut c = patience(&dir);
    c.args(["--ctl", "-f", &file, "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&stdout(&output(c))).unwrap();
    let dropped = st["services"][0]["log_dropped"].as_u64().unwrap();
    assert!(dropped > 10_000, "{st}");
    drop(sup);
}

// ---- the stack's own slot (key, max-concurrent, slot-wait) and summary-json ----

/// A stack in `dir` named `tag`: one service that touches `tag.started`,
/// sleeps `secs`, then touches `tag.ended`; the slot of key `nightly`.
fn slot_stack(dir: &TempDir, tag: &str, secs: &str, extra: &str) -> String {
    let path = dir.join(format!("{tag}.toml"));
    let d = dir.path().display();
    let text = format!(
        "[supervisor]\nkey = \"nightly\"\nmax-concurrent = 1\n{extra}\n\
         [service.job]\ncommand = [\"sh\", \"-c\", \"[ -e {d}/first.ended ] && touch {d}/{tag}.after; touch {d}/{tag}.started; sleep {secs}; touch {d}/{tag}.ended\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_second_stack_of_the_same_key_is_refused_with_75_and_starts_nothing() {
    let dir = TempDir::new("svc-slot");
    let first = slot_stack(&dir, "first", "3", "");
    let second = slot_stack(&dir, "second", "0", "summary-json = \"second.json\"");
    let guard = spawn(&dir, &["--services", &first]);
    assert!(
        eventually(Duration::from_secs(20), || dir.join("first.started").exists()),
        "the first stack never started its service"
    );
    let out = services(&dir, &second, &[]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no free slot for key 'nightly'"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !dir.join("second.started").exists(),
        "the refused stack started its service"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("second.json")).unwrap()).unwrap();
    assert_eq!(doc["status"], "rejected", "{doc}");
    assert_eq!(doc["exit_status"], 75, "{doc}");
    assert_eq!(doc["services"]["job"]["attempts"], 0, "{doc}");
    // Cron mode is silent about a refusal, as a refused run is; the status says it.
    let out = services(&dir, &second, &["--hold-output"]);
    assert_eq!((code(&out), stderr(&out).as_str()), (75, ""));
    let out = guard.wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!dir.join("second.started").exists());
    // The slot went back with the first stack: the second runs now.
    let out = services(&dir, &second, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(dir.join("second.started").exists());
}

#[test]
fn with_slot_wait_the_second_stack_starts_once_the_first_has_ended() {
    let dir = TempDir::new("svc-slot-wait");
    let first = slot_stack(&dir, "first", "1.5", "");
    let second = slot_stack(&dir, "second", "0", "slot-wait = \"60s\"");
    let guard = spawn(&dir, &["--services", &first]);
    assert!(
        eventually(Duration::from_secs(20), || dir.join("first.started").exists()),
        "the first stack never started its service"
    );
    let began = Instant::now();
    let out = services(&dir, &second, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );
    assert!(
        dir.join("second.after").exists(),
        "the second stack's service started before the first's ended"
    );
    let out = guard.wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn sigterm_while_waiting_for_the_stack_slot_exits_143_having_started_nothing() {
    let dir = TempDir::new("svc-slot-term");
    let first = slot_stack(&dir, "first", "3", "");
    let second = slot_stack(&dir, "second", "0", "slot-wait = \"60s\"");
    let first_guard = spawn(&dir, &["--services", &first]);
    assert!(
        eventually(Duration::from_secs(20), || dir.join("first.started").exists()),
        "the first stack never started its service"
    );
    let waiting = spawn(&dir, &["--services", &second]);
    std::thread::sleep(Duration::from_millis(1000));
    send_signal(waiting.id(), "TERM");
    let out = waiting.wait_output(Duration::from_secs(20));
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped by SIGTERM while waiting for a slot of key 'nightly'"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.join("second.started").exists(),
        "the stopped stack started its service"
    );
    let out = first_guard.wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_stack_slot_keys_are_checked_and_refused_on_the_command_line() {
    let dir = TempDir::new("svc-slot-keys");
    let file = stack(
        &dir,
        "[supervisor]\nslot-wait = \"5s\"\n[service.a]\ncommand = [\"true\"]\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("'slot-wait' in [supervisor] needs max-concurrent"),
        "{}",
        stderr(&out)
    );
    let file = stack(
        &dir,
        "[supervisor]\nmax-concurrent = \"x\"\n[service.a]\ncommand = [\"true\"]\n",
    );
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains(":2: key 'max-concurrent' in [supervisor]"),
        "{}",
        stderr(&out)
    );
    let file = stack(&dir, "[service.a]\ncommand = [\"true\"]\n");
    let out = run(&dir, &["--max-concurrent", "1", "--services", &file]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("--max-concurrent") && stderr(&out).contains("[supervisor]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn summary_json_describes_the_stack_and_each_service() {
    let dir = TempDir::new("svc-summary");
    let text = "[supervisor]\nname = \"batch\"\nsummary-json = \"out/summary.json\"\n\
         [service.bad]\ncommand = [\"sh\", \"-c\", \"echo nope; exit 3\"]\nattempts = 2\ndelay = \"0.1s\"\ncritical = false\n\
         [service.good]\ncommand = [\"true\"]\n";
    let file = stack(&dir, text);
    std::fs::create_dir(dir.join("out")).unwrap();
    let out = services(&dir, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // In the file, the path is relative to the services file.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(doc["name"], "batch", "{doc}");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["exit_status"], 0, "{doc}");
    assert!(doc["reason"].is_null(), "{doc}");
    assert!(doc["duration_s"].as_f64().is_some_and(|d| d > 0.0), "{doc}");
    let bad = &doc["services"]["bad"];
    assert_eq!(bad["state"], "failed", "{doc}");
    assert_eq!(bad["exit_status"], 3, "{doc}");
    assert_eq!(bad["attempts"], 2, "{doc}");
    assert_eq!(bad["restarts"], 1, "{doc}");
    assert_eq!(bad["last_exit"], "exit code 3", "{doc}");
    assert_eq!(bad["critical"], false, "{doc}");
    let good = &doc["services"]["good"];
    assert_eq!(good["state"], "succeeded", "{doc}");
    assert_eq!(good["exit_status"], 0, "{doc}");
    assert_eq!(good["attempts"], 1, "{doc}");
    // On the command line, relative to the working directory; it wins.
    let mut c = patience(&dir);
    c.current_dir(dir.path())
        .args(["--services", &file, "--summary-json", "cli.json"]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cli.json")).unwrap()).unwrap();
    assert_eq!(doc["services"]["bad"]["state"], "failed", "{doc}");
    // A path that cannot be written is patience's error before anything runs.
    let out = services(&dir, &file, &["--summary-json", "no/such/dir/x.json"]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
}

/// The cron example of README.md and patience-services(5) is a valid file
/// whose stack takes a slot of its own.
#[test]
fn the_cron_example_of_the_readme_and_the_man_page_is_valid() {
    let dir = TempDir::new("svc-cron-example");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let from_readme: String = readme
        .lines()
        .skip_while(|l| *l != "    # /etc/sync.toml")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let man = std::fs::read_to_string(root.join("man/patience-services.5")).unwrap();
    let from_man: String = man
        .lines()
        .skip_while(|l| *l != ".IR /etc/sync.toml :")
        .skip(3)
        .take_while(|l| *l != ".EE")
        .map(|l| format!("{}\n", l.replace("\\-", "-")))
        .collect();
    assert_eq!(from_readme.trim(), from_man.trim(), "the two examples differ");
    let file = stack(&dir, &from_readme);
    let out = services(&dir, &file, &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}\n{from_readme}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("stack slot: key 'sync', max-concurrent 1, slot-wait 2m, refused-exit 75"),
        "{text}"
    );
    assert!(text.contains("summary-json: /var/lib/sync/last.json"), "{text}");
}
