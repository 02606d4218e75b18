//! `patience --services` as a container's PID 1: `docker stop` of a stack
//! whose middle service ignores SIGTERM (in a new PID namespace), and the
//! static binary as PID 1 of an empty chroot (no /proc, no /dev, no shell
//! but the busybox copied in).
//!
//! Both need root (unshare, chroot); the chroot test needs `make static`
//! and busybox-static. Without them they skip with the reason; under
//! `CI=true` they fail instead. Killing unshare (`--kill-child`) takes the
//! whole namespace down, so a failing assertion leaves nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn is_root() -> bool {
    patience::sys::getuid() == 0
}

/// Whether `unshare --fork --pid` works here (with `--mount-proc` if
/// asked); says why not and returns false otherwise.
fn namespaces(test: &str) -> bool {
    if !is_root() {
        skip_test(test, "needs root for unshare --pid");
        return false;
    }
    match Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            skip_test(
                test,
                &format!("unshare --pid fails here: {}", stderr(&out).trim()),
            );
            false
        }
        Err(e) => {
            skip_test(test, &format!("no unshare(1): {e}"));
            false
        }
    }
}

/// The one child of `parent` (patience, PID 1 inside, under unshare).
fn only_child(parent: i32) -> i32 {
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            found = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .find_map(|e| {
                    let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let ppid: i32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
                    (ppid == parent).then_some(pid)
                });
            found.is_some()
        }),
        "nothing under unshare {parent}"
    );
    found.unwrap()
}

/// Whether `pid` is PID 1 of its namespace.
fn is_pid1_inside(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1"))
}

/// Kills a test's leftover `sleep MARKER` processes, on drop.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in &self.0 {
            for pid in processes_matching(&format!("sleep {m}")) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
    }
}

/// Seconds since the epoch in a line `NAME SECONDS` of `text`.
fn stamp(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text:?}"))
}

#[test]
fn docker_stop_of_three_with_a_term_ignoring_middle_leaves_nothing() {
    let test = "docker_stop_of_three_with_a_term_ignoring_middle_leaves_nothing";
    if !namespaces(test) {
        return;
    }
    let dir = TempDir::new("svc-pid1-stop");
    let (log, ps, up) = (dir.join("stopped"), dir.join("ps"), dir.join("up"));
    let (daemon, stubborn) = (unique_sleep_secs(), unique_sleep_secs());
    let _cleanup = Cleanup(vec![daemon.clone(), stubborn.clone()]);
    // a depends on b depends on c, each with kill-after 1s. b ignores TERM
    // and leaves a TERM-ignoring setsid daemon (out of its group, so only
    // b's shim can find it). c, stopped last, looks at the namespace from
    // inside as it stops: by then a and b, and all they started, must be
    // gone and reaped.
    let file = dir.join("services.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\nkill-after = \"1s\"\nrestart = \"always\"\nforever = true\n\
             [service.c]\ncommand = [\"sh\", \"-c\", \"trap 'echo c $(date +%s.%N) >> {log}; ps -eo stat=,pid=,ppid=,args= > {ps}; exit 0' TERM; \
             echo c >> {up}; while :; do sleep 0.05; done\"]\n\
             [service.b]\ncommand = [\"sh\", \"-c\", \"trap '' TERM; setsid sleep {daemon} & echo b >> {up}; exec sleep {stubborn}\"]\ndepends-on = [\"c\"]\n\
             [service.a]\ncommand = [\"sh\", \"-c\", \"trap 'echo a $(date +%s.%N) >> {log}; exit 0' TERM; \
             echo a >> {up}; while :; do sleep 0.05; done\"]\ndepends-on = [\"b\"]\n",
            log = log.display(),
            ps = ps.display(),
            up = up.display()
        ),
    )
    .unwrap();
    let mut cmd = around_patience("unshare", &dir);
    cmd.args(["--fork", "--pid", "--mount-proc", "--kill-child", "--"])
        .arg(patience_bin())
        .arg("--services")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let guard = Guard::new(cmd.spawn().expect("spawn unshare"));
    let started = || {
        std::fs::read_to_string(&up).unwrap_or_default().lines().count() == 3
            && processes_matching(&format!("sleep {daemon}")).len() == 1
            && processes_matching(&format!("sleep {stubborn}")).len() == 1
    };
    assert!(
        eventually(Duration::from_secs(15), started),
        "the stack did not come up"
    );
    let pid1 = only_child(guard.id());
    assert!(is_pid1_inside(pid1), "patience is not PID 1 of the namespace");
    // a's shell sets its trap before it writes `up`; give the shims a
    // moment to have reported their attempts' starts.
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    send_signal(pid1, "TERM");
    let out = guard.wait_output(Duration::from_secs(60));
    let took = sent.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 143, "{err}");
    // The longest chain is a -> b -> c: its kill-afters add up to 3 s.
    // b alone needs its 1 s; without the SIGKILL after kill-after (the
    // shim's or the supervisor's backstop), it would never end.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3 + 1),
        "docker stop took {took:?}: {err}"
    );
    // b's own shim ended b (its final line), not the supervisor's backstop.
    assert!(
        err.contains("[patience] b: stopped by SIGTERM after 1 attempt"),
        "{err}"
    );
    let stopped = std::fs::read_to_string(&log).unwrap_or_default();
    let (a, c) = (stamp(&stopped, "a"), stamp(&stopped, "c"));
    assert!(
        c - a >= 0.9,
        "c was stopped {:.3}s after a, before b was gone: {err}",
        c - a
    );
    let inside = std::fs::read_to_string(&ps).expect("c's view of the namespace");
    for line in inside.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(!fields[0].starts_with('Z'), "a zombie as c stopped:\n{inside}");
        let args = fields[3..].join(" ");
        assert!(
            args.contains(patience_bin()) || args.contains("trap 'echo c") || args.starts_with("ps "),
            "{args:?} survived b's or a's stop:\n{inside}"
        );
    }
    assert_eq!(
        inside.lines().count(),
        4,
        "not patience, c's shim, its shell and ps:\n{inside}"
    );
    for m in [&daemon, &stubborn] {
        assert!(processes_matching(&format!("sleep {m}")).is_empty());
    }
}

// ---- the static binary, PID 1 of an empty chroot ----

/// The `make static` binary, if it was built and is newer than the sources.
fn static_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = Path::new(patience_bin()).parent().and_then(Path::parent).unwrap();
    let bin = target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release/patience");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).map_err(|e| {
        format!(
            "no static build at {} ({e}); run `make static` first",
            bin.display()
        )
    })?;
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack = vec![root.join("src"), root.join("Cargo.toml"), root.join("Cargo.lock")];
    while let Some(p) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&p) {
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    if built < newest {
        return Err(format!(
            "{} is older than the sources; run `make static` again",
            bin.display()
        ));
    }
    Ok(bin)
}

/// busybox, if it is a static binary that runs in an empty chroot.
fn static_busybox() -> Result<PathBuf, String> {
    let bin = PathBuf::from("/bin/busybox");
    let out = Command::new("ldd")
        .arg(&bin)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    if !bin.exists() || !(text.contains("not a dynamic executable") || text.contains("statically linked")) {
        return Err("needs busybox-static at /bin/busybox".into());
    }
    Ok(bin)
}

#[test]
fn static_binary_runs_a_stack_as_pid1_of_an_empty_chroot() {
    let test = "static_binary_runs_a_stack_as_pid1_of_an_empty_chroot";
    if !namespaces(test) {
        return;
    }
    let (bin, busybox) = match (static_binary(), static_busybox()) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(why), _) | (_, Err(why)) => return skip_test(test, &why),
    };
    let root = TempDir::new("svc-chroot");
    std::fs::copy(&bin, root.join("patience")).expect("copy the static binary");
    std::fs::copy(&busybox, root.join("busybox")).expect("copy busybox");
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chroot");
    // db is ready once it says so; app needs it ready. Both note their
    // start and their stop in /log; the stack's file names main for the
    // second run.
    let stack = |main: &str, app_end: &str| {
        format!(
            "{main}[defaults]\nkill-after = \"1s\"\n\
             [service.db]\ncommand = [\"/busybox\", \"sh\", \"-c\", \"trap 'echo db stopping >> /log; exit 0' TERM; /busybox sleep 0.3; \
             echo db ready >> /log; echo db ready; while :; do /busybox sleep 0.05; done\"]\nrestart = \"always\"\nforever = true\nready-pattern = \"^db ready$\"\n\
             [service.app]\ncommand = [\"/busybox\", \"sh\", \"-c\", \"trap 'echo app stopping >> /log; exit 0' TERM; echo app up >> /log; echo app up; {app_end}\"]\n\
             depends-on = [\"db\"]\nattempts = 1\n"
        )
    };
    let run_in = |text: &str| {
        std::fs::write(root.join("stack.toml"), text).unwrap();
        let _ = std::fs::remove_file(root.join("log"));
        let child = Command::new("unshare")
            .args(["--fork", "--pid", "--kill-child", "--", chroot])
            .arg(root.path())
            .args(["/patience", "--services", "/stack.toml"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        Guard::new(child)
    };
    let log = || std::fs::read_to_string(root.join("log")).unwrap_or_default();

    // docker stop: app (started only once db was ready) stops first, then
    // db; the stack's status is 128+15.
    let guard = run_in(&stack("", "while :; do /busybox sleep 0.05; done"));
    assert!(
        eventually(Duration::from_secs(15), || log().contains("app up")),
        "{}",
        log()
    );
    let pid1 = only_child(guard.id());
    assert!(is_pid1_inside(pid1));
    std::thread::sleep(Duration::from_millis(200));
    send_signal(pid1, "TERM");
    let out = guard.wait_output(Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(code(&out), 143, "{err}");
    assert_eq!(log(), "db ready\napp up\napp stopping\ndb stopping\n", "{err}");
    let text = stdout(&out);
    assert!(
        text.contains("db  | db ready\n") && text.contains("app | app up\n"),
        "{text}"
    );
    assert!(err.contains("[patience] db: stopped by SIGTERM"), "{err}");

    // main = app: its status is the stack's, and db is stopped after it.
    let guard = run_in(&stack("[supervisor]\nmain = \"app\"\n", "exit 3"));
    let out = guard.wait_output(Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert_eq!(log(), "db ready\napp up\ndb stopping\n", "{err}");
    assert!(
        err.contains("[patience] app: failed after 1 attempt (exit code 3"),
        "{err}"
    );
}
