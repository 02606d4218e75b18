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
