//! `patience --services` as a container's PID 1: `docker stop` of a stack
//! whose middle service ignores SIGTERM (in a new PID namespace), the
//! static binary as PID 1 of an empty chroot (no /proc, no /dev, no shell
//! but the busybox copied in), and the README's container
//! (contrib/container/): its Dockerfile's root built in a temp dir, run
//! with unshare and chroot, its HEALTHCHECK through nsenter.
//!
//! All need root (unshare, chroot); the chroot tests need `make static`
//! and busybox-static. Without them they skip with the reason; under
//! `CI=true` they fail instead. Killing unshare (`--kill-child`) takes the
//! whole namespace down, so a failing assertion leaves nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

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
        let mut c = Command::new("unshare");
        c.args(["--fork", "--pid", "--kill-child", "--", chroot])
            .arg(root.path())
            .args(["/patience", "--services", "/stack.toml"])
            .env_clear();
        spawn_command(c)
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

// ---- contrib/container/: the README's container, built and run ----

/// A root laid out as contrib/container/Dockerfile says, and what it
/// says to run in it.
struct Image {
    root: TempDir,
    env: Vec<(String, String)>,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    stop_signal: String,
}

/// The PATH docker gives a container whose image sets none.
const DOCKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An exec-form (JSON array) argument of a Dockerfile instruction.
fn exec_form(text: &str, what: &str) -> Vec<String> {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{what} {text:?} is not a JSON array of strings: {e}"))
}

/// Builds the image of `dockerfile` in a temp dir, reading the
/// instructions the example uses (others are refused, so the test is
/// changed with the Dockerfile): `FROM busybox` is a busybox binary in
/// /bin with a symlink per applet (the image has a hard link per applet);
/// a COPY from `target/` takes the `make static` binaries; RUN runs in
/// the root with chroot. `build_args` are docker build's --build-arg.
fn build_image(
    dockerfile: &Path,
    build_args: &[(&str, &str)],
    bin: &Path,
    busybox: &Path,
    chroot: &str,
) -> Image {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dockerfile).expect("read the Dockerfile");
    let mut image = Image {
        root: TempDir::new("container"),
        env: vec![
            ("PATH".into(), DOCKER_PATH.into()),
            ("HOME".into(), "/root".into()),
        ],
        healthcheck: Vec::new(),
        entrypoint: Vec::new(),
        stop_signal: "TERM".into(),
    };
    let root = image.root.path().to_path_buf();
    let mut vars: Vec<(String, String)> = Vec::new();
    let expand = |vars: &[(String, String)], s: &str| {
        let mut s = s.to_string();
        for (k, v) in vars {
            s = s.replace(&format!("${{{k}}}"), v);
        }
        assert!(!s.contains('$'), "a variable the test does not know in {s:?}");
        s
    };
    let joined = text.replace("\\\n", " ");
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" if rest == "scratch" => {}
            "FROM" if rest.starts_with("busybox") => {
                for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp", "var"] {
                    std::fs::create_dir_all(root.join(d)).unwrap();
                }
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
                std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
                let list = Command::new(busybox)
                    .arg("--list")
                    .output()
                    .expect("busybox --list");
                for applet in stdout(&list).lines().filter(|a| *a != "busybox") {
                    std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
                }
            }
            "ARG" => {
                let (k, default) = rest.split_once('=').unwrap_or((rest, ""));
                let v = build_args
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map_or(default, |(_, v)| v);
                vars.push((k.to_string(), v.to_string()));
            }
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(' '))
                    .unwrap_or_else(|| panic!("ENV {rest:?}"));
                let v = expand(&vars, v.trim().trim_matches('"'));
                image.env.retain(|(e, _)| e != k);
                image.env.push((k.to_string(), v));
            }
            "RUN" => {
                let argv = if rest.starts_with('[') {
                    exec_form(rest, "RUN")
                } else {
                    vec!["/bin/sh".into(), "-c".into(), expand(&vars, rest)]
                };
                let out = Command::new(chroot)
                    .arg(&root)
                    .args(&argv)
                    .env_clear()
                    .envs(image.env.iter().cloned())
                    .stdin(Stdio::null())
                    .output()
                    .expect("chroot for RUN");
                assert!(out.status.success(), "RUN {rest}: {}", stderr(&out));
            }
            "COPY" => {
                let words: Vec<String> = rest.split_whitespace().map(|w| expand(&vars, w)).collect();
                assert!(
                    words.len() == 2 && !words[0].starts_with("--"),
                    "COPY SRC DEST is all the test reads: {rest:?}"
                );
                let (src, dest) = (&words[0], &words[1]);
                let from = match src.strip_prefix("target/") {
                    Some(built) => {
                        let target = bin
                            .parent()
                            .and_then(Path::parent)
                            .and_then(Path::parent)
                            .unwrap();
                        let from = target.join(built);
                        assert_eq!(
                            from, bin,
                            "the Dockerfile copies another build than `make static`'s"
                        );
                        from
                    }
                    None => repo.join(src),
                };
                let mut to = root.join(dest.trim_start_matches('/'));
                if dest.ends_with('/') {
                    to = to.join(from.file_name().unwrap());
                }
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("COPY {}: {e}", from.display()));
            }
            "EXPOSE" | "LABEL" => {}
            "STOPSIGNAL" => image.stop_signal = rest.trim_start_matches("SIG").to_string(),
            "HEALTHCHECK" => {
                let (_, cmd) = rest.split_once("CMD").expect("HEALTHCHECK [OPTIONS] CMD [...]");
                image.healthcheck = exec_form(cmd, "HEALTHCHECK CMD");
            }
            "ENTRYPOINT" => image.entrypoint = exec_form(rest, "ENTRYPOINT"),
            other => panic!("the test does not read {other} (in {line:?}); teach build_image"),
        }
    }
    assert!(!image.entrypoint.is_empty(), "no ENTRYPOINT");
    assert!(!image.healthcheck.is_empty(), "no HEALTHCHECK");
    image
}

/// Whether `unshare` gives a container's namespaces here (pid, net,
/// mount with its /proc) and nsenter is there for `docker exec`.
fn container_namespaces(test: &str) -> bool {
    if !namespaces(test) {
        return false;
    }
    let out = Command::new("unshare")
        .args(["--fork", "--pid", "--net", "--mount", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            skip_test(
                test,
                &format!("unshare --net --mount fails here: {}", stderr(&o).trim()),
            );
            return false;
        }
        Err(e) => {
            skip_test(test, &format!("unshare: {e}"));
            return false;
        }
    }
    if Command::new("nsenter").arg("--version").output().is_err() {
        skip_test(test, "needs nsenter(1) (util-linux)");
        return false;
    }
    true
}

/// The processes (in any namespace) whose root directory is `root`.
fn processes_rooted_at(root: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            (std::fs::read_link(e.path().join("root")).ok()? == root).then_some(pid)
        })
        .collect()
}

#[test]
fn the_readme_container_runs_its_stack_as_pid1_and_stops_on_docker_stop() {
    let test = "the_readme_container_runs_its_stack_as_pid1_and_stops_on_docker_stop";
    if !container_namespaces(test) {
        return;
    }
    let (bin, busybox) = match (static_binary(), static_busybox()) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(why), _) | (_, Err(why)) => return skip_test(test, &why),
    };
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chroot");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let image = build_image(
        &repo.join("contrib/container/Dockerfile"),
        &[("TARGET", &triple)],
        &bin,
        &busybox,
        chroot,
    );
    let root = image.root.path().canonicalize().unwrap();
    assert_eq!(image.healthcheck, ["/patience", "--ctl", "check"]);

    // docker run: new pid, network (loopback up) and mount namespaces,
    // /proc mounted in the root, the entrypoint as PID 1 (the shell and
    // chroot exec into it), the image's environment only.
    let mut cmd = Command::new("unshare");
    cmd.args(["--fork", "--pid", "--net", "--mount", "--kill-child"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .args(["--", "/bin/busybox", "sh", "-c"])
        .arg("/bin/busybox ip link set lo up && exec \"$0\" \"$@\"")
        .arg(chroot)
        .arg(&root)
        .args(&image.entrypoint)
        .env_clear()
        .envs(image.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let guard = Guard::new(cmd.spawn().expect("spawn unshare"));
    let pid1 = only_child(guard.id());
    // Found maybe as the shell: nsenter takes its root, so wait for chroot.
    let in_root = || std::fs::read_link(format!("/proc/{pid1}/root")).is_ok_and(|r| r == root);
    assert!(
        eventually(Duration::from_secs(10), in_root),
        "the entrypoint never ran in the root"
    );
    // docker exec: the container's namespaces, root and environment.
    let exec = |argv: &[String]| {
        Command::new("nsenter")
            .args(["-t", &pid1.to_string(), "-p", "-n", "-m", "-r", "-w", "--"])
            .args(argv)
            .env_clear()
            .envs(image.env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    };

    // The HEALTHCHECK: 1 while a service is not ready yet, 3 before the
    // supervisor listens, 0 once db and app are ready and migrate has
    // succeeded.
    let mut last = String::new();
    let healthy = eventually(Duration::from_secs(60), || {
        let out = exec(&image.healthcheck);
        last = format!("{}: {}{}", code(&out), stdout(&out), stderr(&out));
        assert!(matches!(code(&out), 0 | 1 | 3), "HEALTHCHECK: {last}");
        std::thread::sleep(Duration::from_millis(200));
        code(&out) == 0
    });
    assert!(healthy, "never healthy; the last check said {last}");
    assert!(
        is_pid1_inside(pid1),
        "the entrypoint is not PID 1 of the container"
    );

    // In order, each on its first attempt: migrate could read its schema
    // back through db, and app found it there when it first started.
    let ctl = |verb: &[&str]| {
        let mut argv = vec!["/patience".to_string(), "--ctl".into()];
        argv.extend(verb.iter().map(|s| s.to_string()));
        exec(&argv)
    };
    let out = ctl(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status --json");
    let svc = |name: &str| {
        status["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    let (db, migrate, app) = (svc("db"), svc("migrate"), svc("app"));
    for (s, state) in [(&db, "ready"), (&migrate, "succeeded"), (&app, "ready")] {
        assert_eq!(s["state"], state, "{status}");
        assert_eq!(
            (&s["attempt"], &s["restarts"]),
            (&1.into(), &0.into()),
            "{} needed more than one attempt: {status}",
            s["name"]
        );
    }
    let since = |s: &serde_json::Value| s["since"].as_f64().unwrap_or_else(|| panic!("since in {s}"));
    assert!(
        since(&db) <= since(&migrate) && since(&migrate) <= since(&app),
        "not db, migrate, app: {status}"
    );
    let page = exec(&[
        "/bin/wget".into(),
        "-q".into(),
        "-O".into(),
        "-".into(),
        "http://127.0.0.1:8080/".into(),
    ]);
    assert_eq!(stdout(&page), "schema 3\n", "{}", stderr(&page));

    // docker stop: app, then db; 128+SIGTERM; nobody left in the root.
    let sent = Instant::now();
    send_signal(pid1, &image.stop_signal);
    let out = guard.wait_output(Duration::from_secs(30));
    let took = sent.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 143, "{err}");
    assert!(took < Duration::from_secs(9), "docker stop took {took:?}: {err}");
    let stopped = |name: &str| {
        err.find(&format!("[patience] {name}: stopped by SIGTERM after 1 attempt"))
            .unwrap_or_else(|| panic!("{name} not stopped by SIGTERM: {err}"))
    };
    assert!(stopped("app") < stopped("db"), "db stopped before app: {err}");
    assert!(stdout(&out).contains("migrate | schema 3\n"), "{}", stdout(&out));
    let left = processes_rooted_at(&root);
    assert!(left.is_empty(), "left in the container's root: {left:?}");
}
