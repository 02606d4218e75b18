//! `--state-url`: the breaker, the rate limit and the slots of a key shared
//! by a fleet through a real `redis-server` (Debian's), on a Unix socket in
//! a temp dir. Each "host" is a patience with its own state directory, so
//! nothing but the server can make them agree.

#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A `redis-server` of the test's own: killed and reaped on drop (after a
/// SIGCONT, should the test have stopped it), its directory removed.
#[cfg(feature = "redis")]
struct Server {
    child: Option<std::process::Child>,
    dir: TempDir,
}

#[cfg(feature = "redis")]
impl Server {
    /// Starts one with `extra` arguments, or skips the test (None).
    fn start(extra: &[&str]) -> Option<Server> {
        if !have_tool(
            "redis-server",
            "--version",
            "redis-server (Debian package redis-server)",
        ) {
            return None;
        }
        let dir = TempDir::new("fleet-redis");
        let sock = dir.join("r.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = Server {
            child: Some(child),
            dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || sock.exists()),
            "redis-server made no socket"
        );
        Some(server)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("child").id() as i32
    }

    /// The URL of this server, with `query` (`lease=1s`) if any.
    fn url(&self, query: &str) -> String {
        let mut u = format!("unix://{}", self.dir.join("r.sock").display());
        if !query.is_empty() {
            u.push('?');
            u.push_str(query);
        }
        u
    }
}

#[cfg(feature = "redis")]
impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id() as i32, "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One host of the fleet: its own temp dir (and so its own state dir).
struct Host {
    dir: TempDir,
    url: String,
}

impl Host {
    fn new(tag: &str, url: &str) -> Host {
        Host {
            dir: TempDir::new(tag),
            url: url.to_string(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = patience(&self.dir);
        c.env("PATIENCE_STATE_URL", &self.url).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        output(self.cmd(args))
    }

    fn spawn(&self, args: &[&str]) -> Guard {
        spawn_command(self.cmd(args))
    }

    fn state(&self, key: &str) -> serde_json::Value {
        let out = self.run(&["--state", key]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("--state is JSON")
    }
}

#[cfg(feature = "redis")]
#[test]
fn two_hosts_share_one_breaker_one_bucket_and_one_slot() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let a = Host::new("fleet-a", &server.url(""));
    let b = Host::new("fleet-b", &server.url(""));
    // The breaker: two failures on A open it for B.
    for _ in 0..2 {
        let out = a.run(&["-a", "1", "--key", "brk", "--breaker", "2", "false"]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
    }
    let out = b.run(&["-a", "1", "--key", "brk", "--breaker", "2", "true"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("circuit breaker for key 'brk' is open after 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.state("brk")["breaker"]["state"], "open");
    // --reset-state on A closes it for B.
    assert_eq!(code(&a.run(&["--reset-state", "brk"])), 0);
    assert_eq!(
        code(&b.run(&["-a", "1", "--key", "brk", "--breaker", "2", "true"])),
        0
    );
    // The bucket: two tokens an hour, one taken on each host, then none.
    let rate = [
        "-a",
        "1",
        "--key",
        "tok",
        "--rate-limit",
        "2/1h",
        "--deadline",
        "5s",
        "true",
    ];
    assert_eq!(code(&a.run(&rate)), 0);
    assert_eq!(code(&b.run(&rate)), 0);
    let out = a.run(&rate);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rate limit 2/1h for key 'tok'"),
        "{}",
        stderr(&out)
    );
    let tokens = b.state("tok")["rate_limit"]["tokens"].as_f64().unwrap();
    assert!(tokens < 0.1, "{tokens}");
    // The slot: held on A, refused on B, free again when A ends.
    let slot = |h: &Host, cmd: &str| {
        h.spawn(&[
            "-a",
            "1",
            "--key",
            "one",
            "--max-concurrent",
            "1",
            "sh",
            "-c",
            cmd,
        ])
    };
    let holder = slot(&a, "sleep 3");
    assert!(eventually(Duration::from_secs(10), || {
        b.state("one")["slots"]["holders"]
            .as_array()
            .is_some_and(|h| h.len() == 1)
    }));
    let out = b.run(&["-a", "1", "--key", "one", "--max-concurrent", "1", "true"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains(&format!("held by {}@", holder.id())), "{e}");
    let out = holder.wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        code(&b.run(&["-a", "1", "--key", "one", "--max-concurrent", "1", "true"])),
        0
    );
    assert_eq!(b.state("one")["slots"]["holders"], serde_json::json!([]));
}

#[cfg(feature = "redis")]
#[test]
fn a_live_holder_keeps_its_slot_and_a_sigkilled_one_frees_it_after_the_lease() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let url = server.url("lease=1s");
    let a = Host::new("fleet-kill-a", &url);
    let b = Host::new("fleet-kill-b", &url);
    let pidfile = a.dir.join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut holder = a.spawn(&[
        "-a",
        "1",
        "--key",
        "lease",
        "--max-concurrent",
        "1",
        "sh",
        "-c",
        &script,
    ]);
    assert!(eventually(Duration::from_secs(10), || pidfile.exists()
        && std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))));
    let try_b = || b.run(&["-a", "1", "--key", "lease", "--max-concurrent", "1", "true"]);
    // Three leases later the live holder's renewals still keep it.
    std::thread::sleep(Duration::from_secs(3));
    let out = try_b();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    // A crash: patience and its command SIGKILLed, nothing given back.
    let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    send_signal(holder.id(), "KILL");
    send_signal(child, "KILL");
    let _ = holder.wait_status(Duration::from_secs(10));
    let killed = Instant::now();
    let out = try_b();
    assert_eq!(
        code(&out),
        75,
        "the lease outlives its holder a while: {}",
        stderr(&out)
    );
    let mut freed = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if code(&try_b()) == 0 {
            freed = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let freed = freed.expect("the slot frees itself after the lease");
    assert!(freed < Duration::from_secs(5), "{freed:?}");
}

#[cfg(feature = "redis")]
#[test]
fn a_stopped_or_gone_server_fails_open_within_the_timeout() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let h = Host::new("fleet-stop", &server.url(""));
    let args = [
        "-a",
        "1",
        "--key",
        "k",
        "--breaker",
        "1",
        "--max-concurrent",
        "1",
        "true",
    ];
    assert_eq!(code(&h.run(&args)), 0);
    send_signal(server.pid(), "STOP");
    for gone in [false, true] {
        if gone {
            send_signal(server.pid(), "CONT");
            let mut c = server.child.take().unwrap();
            let _ = c.kill();
            let _ = c.wait();
        }
        let start = Instant::now();
        let out = h.run(&args);
        let took = start.elapsed();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let e = stderr(&out);
        let warnings: Vec<_> = e.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "{e}");
        assert!(warnings[0].contains("shared state of key 'k' unavailable"), "{e}");
        // 100 ms of timeout; the rest is a margin for a loaded machine.
        assert!(took < Duration::from_secs(3), "gone={gone}: {took:?}");
    }
    // --state has nothing to fail open for: an error naming the server.
    let out = h.run(&["--state", "k"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("r.sock"), "{}", stderr(&out));
}

#[cfg(feature = "redis")]
#[test]
fn twenty_four_processes_on_one_key_lose_no_update() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let url = server.url("");
    let hosts: Vec<Host> = (0..24).map(|i| Host::new(&format!("fleet-n{i}"), &url)).collect();
    let all = |args: &[&str]| -> Vec<i32> {
        let guards: Vec<Guard> = hosts.iter().map(|h| h.spawn(args)).collect();
        guards
            .into_iter()
            .map(|g| code(&g.wait_output(Duration::from_secs(60))))
            .collect()
    };
    // Every failure counts, once.
    let codes = all(&["-a", "1", "--key", "count", "--breaker", "1000", "false"]);
    assert!(codes.iter().all(|&c| c == 1), "{codes:?}");
    assert_eq!(hosts[0].state("count")["breaker"]["consecutive_failures"], 24);
    // Ten tokens an hour: exactly ten runs get one.
    let codes = all(&[
        "-a",
        "1",
        "--key",
        "rate",
        "--rate-limit",
        "10/1h",
        "--deadline",
        "30s",
        "true",
    ]);
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 75).count(), 14, "{codes:?}");
    // Ten slots, held long enough for all 24 to ask: exactly ten get one.
    let codes = all(&[
        "-a",
        "1",
        "--key",
        "slots",
        "--max-concurrent",
        "10",
        "sleep",
        "8",
    ]);
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 75).count(), 14, "{codes:?}");
    assert_eq!(hosts[0].state("slots")["slots"]["holders"], serde_json::json!([]));
}

#[cfg(feature = "redis")]
#[test]
fn the_password_comes_from_its_file_and_never_shows() {
    let Some(server) = Server::start(&["--requirepass", "hunter2-secret"]) else {
        return;
    };
    let h = Host::new("fleet-pass", &server.url(""));
    let pw = h.dir.join("pw");
    std::fs::write(&pw, "hunter2-secret\n").unwrap();
    let conf = h.dir.join("patience.toml");
    std::fs::write(
        &conf,
        format!("[defaults]\nstate-url-password-file = \"{}\"\n", pw.display()),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let args = [
        "--config",
        conf,
        "-a",
        "1",
        "--key",
        "pw",
        "--breaker",
        "1",
        "false",
    ];
    let out = h.run(&args);
    assert_eq!(code(&out), 1);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(h.state_with(conf, "pw")["breaker"]["state"], "open");
    // Without the file: refused by the server, so the run fails open.
    let out = h.run(&["-a", "1", "--key", "pw", "--breaker", "1", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    // A password in the URL: masked in --dry-run, refused on the command line.
    let url = "redis://:hunter2-secret@127.0.0.1:1/0";
    let mut c = patience(&h.dir);
    c.env("PATIENCE_STATE_URL", url)
        .args(["--dry-run", "--key", "pw", "true"]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("redis://:***@127.0.0.1:1/0"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("hunter2"), "{}", stdout(&out));
    let out = run(&h.dir, &["--state-url", url, "true"]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("--state-url 'redis://:***@127.0.0.1:1/0'"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    // A password file that cannot be read is patience's own error.
    std::fs::remove_file(&pw).unwrap();
    let out = h.run(&args);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("state-url-password-file"),
        "{}",
        stderr(&out)
    );
}

#[cfg(feature = "redis")]
impl Host {
    fn state_with(&self, conf: &str, key: &str) -> serde_json::Value {
        let out = self.run(&["--config", conf, "--state", key]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("--state is JSON")
    }
}

#[test]
fn malformed_urls_are_usage_errors_naming_the_option() {
    let dir = TempDir::new("fleet-bad");
    for (url, why) in [
        ("ftp://x", "unsupported scheme 'ftp'"),
        ("redis://h:99999", "bad port '99999'"),
        ("redis://h:0", "bad port '0'"),
        ("redis://u:hunter2@h:99999", "bad port"),
        ("unix://relative", "must be absolute"),
        ("rediss://h", "not supported"),
    ] {
        let out = run(&dir, &["--state-url", url, "true"]);
        assert_eq!(code(&out), 125, "{url}");
        let e = stderr(&out);
        assert!(e.starts_with("patience: --state-url: invalid state URL '"), "{e}");
        assert!(e.contains(why), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let mut c = patience(&dir);
    c.env("PATIENCE_STATE_URL", "ftp://x").arg("true");
    let out = output(c);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("PATIENCE_STATE_URL"), "{}", stderr(&out));
    let conf = dir.join("c.toml");
    std::fs::write(&conf, "[defaults]\nstate-url = \"redis://h:x\"\n").unwrap();
    let out = run(&dir, &["--config", conf.to_str().unwrap(), "true"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("state-url"), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad port 'x'"), "{}", stderr(&out));
}

#[cfg(feature = "redis")]
#[test]
fn a_services_file_hands_the_url_over_in_the_environment_masked_in_its_dry_run() {
    let dir = TempDir::new("fleet-services");
    let file = dir.join("s.toml");
    std::fs::write(
        &file,
        "[defaults]\nstate-url = \"redis://:hunter2@127.0.0.1:1/0\"\n[service.a]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = run(&dir, &["--services", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("hunter2"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("command line:"))
        .expect(&text);
    assert!(
        line.contains("PATIENCE_STATE_URL='redis://:***@127.0.0.1:1/0'"),
        "{line}"
    );
    assert!(!line.contains("--state-url"), "{line}");
}

/// The stack's own slot (`[supervisor] max-concurrent`) goes through the
/// same store as a run's: with `state-url`, two hosts share it.
#[cfg(feature = "redis")]
#[test]
fn two_hosts_share_the_slot_of_a_stack_through_state_url() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let url = server.url("");
    let a = Host::new("fleet-stack-a", &url);
    let b = Host::new("fleet-stack-b", &url);
    let file = |h: &Host, secs: &str| {
        let path = h.dir.join("stack.toml");
        let text = format!(
            "[supervisor]\nkey = \"stack\"\nmax-concurrent = 1\nstate-url = \"{url}\"\n\
             [service.job]\ncommand = [\"sh\", \"-c\", \"touch {}/started; sleep {secs}\"]\n",
            h.dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (fa, fb) = (file(&a, "3"), file(&b, "0"));
    let mut c = patience(&a.dir);
    c.args(["--services", &fa])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let guard = Guard::new(c.spawn().expect("spawn patience"));
    assert!(
        eventually(Duration::from_secs(20), || a.dir.join("started").exists()),
        "host A's stack never started"
    );
    let mut c = patience(&b.dir);
    c.args(["--services", &fb]);
    let out = output(c);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("key 'stack'"), "{}", stderr(&out));
    assert!(!b.dir.join("started").exists(), "host B's stack started");
    let out = guard.wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut c = patience(&b.dir);
    c.args(["--services", &fb]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(b.dir.join("started").exists());
}
