//! Controlling a running stack: the control socket (path rule,
//! permissions, peer check, bounds), JSON-RPC 2.0 over it, and
//! `patiencectl` / `patience --ctl` with their exit statuses, all against
//! a real supervisor. Every supervisor is a Guard (killed on drop).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const STACK: &str = r#"
[supervisor]
name = "shop"

[service.db]
command = ["sh", "-c", "echo db starting; sleep 0.2; echo ready to accept; exec sleep 1000"]
restart = "always"
forever = true
ready-pattern = "ready to accept"

[service.app]
command = ["sh", "-c", "echo app up; trap 'echo got usr1' USR1; while :; do sleep 0.05; done"]
depends-on = ["db"]
restart = "always"
forever = true

[service.flaky]
command = ["sh", "-c", "echo trying; exit 3"]
attempts = 10
delay = "30s"
critical = false
"#;

struct Stack {
    dir: TempDir,
    file: PathBuf,
    sup: Guard,
}

impl Stack {
    fn start(tag: &str, text: &str) -> Stack {
        let dir = TempDir::new(tag);
        let file = dir.join("services.toml");
        std::fs::write(&file, text).unwrap();
        let sup = spawn(&dir, &["--services", file.to_str().unwrap()]);
        let s = Stack { dir, file, sup };
        assert!(
            eventually(Duration::from_secs(20), || s.ctl(&["status"]).status.success()),
            "the supervisor never answered"
        );
        s
    }

    /// `patience --ctl -f FILE ARGS`.
    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = patience(&self.dir);
        c.arg("--ctl").arg("-f").arg(&self.file).args(args);
        output(c)
    }

    fn socket(&self) -> PathBuf {
        let run = self.dir.join("run/patience");
        let mut socks: Vec<PathBuf> = std::fs::read_dir(&run)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sock"))
            .collect();
        assert_eq!(socks.len(), 1, "{socks:?}");
        socks.remove(0)
    }

    fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    fn service(&self, name: &str) -> Value {
        let st = self.status();
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {st}"))
    }

    fn wait_state(&self, name: &str, state: &str) {
        assert!(
            eventually(Duration::from_secs(20), || self.service(name)["state"] == state),
            "{name} never became {state}: {}",
            self.service(name)
        );
    }
}

/// A raw JSON-RPC connection.
struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Rpc {
    fn connect(path: &Path) -> Rpc {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Rpc {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("a reply line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    }

    fn call(&mut self, id: i64, method: &str, params: Value) -> Value {
        let req = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.send_raw(format!("{req}\n").as_bytes());
        self.line()
    }
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

#[test]
fn the_socket_follows_the_path_rule_and_is_private() {
    let s = Stack::start("ctl-path", STACK);
    let sock = s.socket();
    let name = sock.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("svc-") && name.len() == "svc-".len() + 16 + ".sock".len(),
        "{name}"
    );
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // The hash is of the canonical path: the same file by another path
    // (with ./ and ..) reaches the same supervisor.
    let other = s.dir.join("x/../services.toml");
    let mut c = patience(&s.dir);
    c.args(["--ctl", "-f"]).arg(&other).arg("status");
    std::fs::create_dir_all(s.dir.join("x")).unwrap();
    assert_eq!(code(&output(c)), 0);
    // A deep path still gives a short socket path.
    assert!(sock.as_os_str().len() < 108);
}

#[test]
fn a_deep_services_file_still_gets_a_socket_and_overrides_are_honoured() {
    let dir = TempDir::new("ctl-deep");
    let mut deep = dir.path().to_path_buf();
    for _ in 0..12 {
        deep.push("a-rather-long-directory-name");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join("services.toml");
    assert!(file.as_os_str().len() > 300);
    std::fs::write(&file, "[service.a]\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let _sup = spawn(&dir, &["--services", file.to_str().unwrap()]);
    let status = |args: &[&str]| {
        let mut c = patience(&dir);
        c.arg("--ctl").args(args).arg("status");
        output(c)
    };
    assert!(eventually(Duration::from_secs(20), || status(&[
        "-f",
        file.to_str().unwrap()
    ])
    .status
    .success()));
    // PATIENCE_CONTROL_SOCKET on both sides.
    let custom = dir.join("custom.sock");
    let file2 = dir.join("other.toml");
    std::fs::write(&file2, "[service.b]\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let mut c = patience(&dir);
    c.env("PATIENCE_CONTROL_SOCKET", &custom)
        .args(["--services", file2.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _sup2 = Guard::new(c.spawn().unwrap());
    assert!(eventually(Duration::from_secs(20), || custom.exists()));
    let mut c = patience(&dir);
    c.env("PATIENCE_CONTROL_SOCKET", &custom)
        .args(["--ctl", "status"]);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("b "), "{}", stdout(&out));
    // control-socket in the file.
    let file3 = dir.join("third.toml");
    let third = dir.join("third.sock");
    std::fs::write(
        &file3,
        format!(
            "[supervisor]\ncontrol-socket = \"{}\"\n[service.c]\ncommand = [\"sleep\", \"1000\"]\n",
            third.display()
        ),
    )
    .unwrap();
    let _sup3 = spawn(&dir, &["--services", file3.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(20), || status(&[
        "-f",
        file3.to_str().unwrap()
    ])
    .status
    .success()));
    assert!(third.exists());
    let out = status(&["-s", third.to_str().unwrap()]);
    assert!(stdout(&out).contains("c "), "{}", stdout(&out));
}

#[test]
fn a_second_supervisor_of_the_same_file_exits_75_naming_the_first_and_a_stale_socket_is_replaced() {
    let s = Stack::start("ctl-live", STACK);
    let out = run(&s.dir, &["--services", s.file.to_str().unwrap()]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {}", s.sup.id())),
        "{}",
        stderr(&out)
    );
    // SIGKILL leaves the socket file behind; the next supervisor replaces it.
    let sock = s.socket();
    let Stack { dir, file, sup } = s;
    send_signal(sup.id(), "KILL");
    let mut sup = sup;
    sup.wait_status(Duration::from_secs(10));
    assert!(sock.exists(), "the killed supervisor's socket is gone?");
    let again = Stack {
        sup: spawn(&dir, &["--services", file.to_str().unwrap()]),
        dir,
        file,
    };
    assert!(eventually(Duration::from_secs(20), || again
        .ctl(&["status"])
        .status
        .success()));
}

#[test]
fn status_shows_the_table_and_json_and_check_answers_for_healthcheck() {
    let s = Stack::start("ctl-status", STACK);
    s.wait_state("db", "ready");
    s.wait_state("app", "ready");
    s.wait_state("flaky", "backoff");
    let out = s.ctl(&["status"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("SERVICE  STATE    ATTEMPT  PID"), "{text}");
    assert!(lines[0].contains("SINCE  RESTARTS  LAST EXIT"), "{text}");
    let row = |n: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(n))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("db")[1], "ready");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("db") && l.ends_with("ready: pattern")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("flaky") && l.contains("exit code 3") && l.contains("next attempt in")),
        "{text}"
    );
    let db = s.service("db");
    let pid = db["pid"].as_i64().unwrap() as i32;
    // The pid is the service's own process (the sleep exec'd by sh).
    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmd.starts_with("sleep"), "{cmd:?}");
    // ps is status.
    assert_eq!(stdout(&s.ctl(&["ps"])).lines().count(), 4);
    // Every critical service is ready (flaky is not critical).
    assert_eq!(code(&s.ctl(&["check"])), 0);
    // One that is not: check says 1.
    let out = s.ctl(&["stop", "app"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(s.service("app")["state"], "stopped");
    let out = s.ctl(&["check"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("app stopped"), "{}", stderr(&out));
}

#[test]
fn start_stop_restart_signal_and_reset_act_on_the_named_services() {
    let s = Stack::start("ctl-verbs", STACK);
    s.wait_state("app", "ready");
    let first = s.service("app")["pid"].as_i64().unwrap();
    // restart: a new run, a new process, the restart counted.
    assert_eq!(code(&s.ctl(&["restart", "app"])), 0);
    assert!(eventually(Duration::from_secs(20), || {
        let a = s.service("app");
        a["state"] == "ready" && a["pid"].as_i64().is_some_and(|p| p != first)
    }));
    assert_eq!(s.service("app")["restarts"], 1);
    assert!(!common::processes_matching("sleep 1000").is_empty());
    // signal reaches the attempt and stops nothing.
    assert_eq!(code(&s.ctl(&["signal", "USR1", "app"])), 0);
    assert!(eventually(Duration::from_secs(10), || {
        stdout(&s.ctl(&["logs", "app"])).contains("got usr1")
    }));
    assert_eq!(s.service("app")["state"], "ready");
    // stop and start again.
    assert_eq!(code(&s.ctl(&["stop", "app"])), 0);
    assert_eq!(s.service("app")["state"], "stopped");
    assert_eq!(code(&s.ctl(&["start", "app"])), 0);
    s.wait_state("app", "ready");
    // A failed service is reset: its restarts forgotten.
    assert!(s.service("flaky")["restarts"].as_u64().is_some());
    assert_eq!(code(&s.ctl(&["reset", "flaky"])), 0);
    assert_eq!(s.service("flaky")["restarts"], 0);
    // Unknown service: 4; signal to a service not running: 1; usage: 125.
    let out = s.ctl(&["stop", "nope"]);
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("no such service: nope"), "{}", stderr(&out));
    assert_eq!(code(&s.ctl(&["stop"])), 125);
    assert_eq!(code(&s.ctl(&["signal", "NOPE", "app"])), 125);
    assert_eq!(code(&s.ctl(&["frobnicate"])), 125);
    let out = s.ctl(&["stop", "flaky"]);
    assert_eq!(code(&out), 0);
    assert_eq!(code(&s.ctl(&["signal", "HUP", "flaky"])), 1);
}

#[test]
fn wait_returns_when_ready_says_1_when_it_never_will_and_124_on_timeout() {
    let s = Stack::start(
        "ctl-wait",
        r#"
[service.slow]
command = ["sh", "-c", "sleep 1; echo up; exec sleep 1000"]
restart = "always"
forever = true
ready-pattern = "up"

[service.never]
command = ["sleep", "1000"]
restart = "always"
forever = true
ready-pattern = "this never comes"

[service.task]
command = ["sh", "-c", "exit 2"]
attempts = 1
critical = false
"#,
    );
    let started = Instant::now();
    let out = s.ctl(&["wait", "slow"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(s.service("slow")["state"], "ready");
    assert!(started.elapsed() < Duration::from_secs(15));
    let started = Instant::now();
    let out = s.ctl(&["wait", "-t", "500ms", "never"]);
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(450));
    let out = s.ctl(&["wait", "--for", "succeeded", "task"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("task"), "{}", stderr(&out));
}

#[test]
fn logs_give_the_last_lines_follow_new_ones_and_keep_invalid_utf8_exact() {
    let s = Stack::start(
        "ctl-logs",
        r#"
[supervisor]
log-lines = 5

[service.talker]
command = ["sh", "-c", "i=0; while [ $i -lt 20 ]; do echo line $i; i=$((i+1)); done; printf 'raw \\377 byte\\n'; exec sleep 1000"]
restart = "always"
forever = true
"#,
    );
    assert!(eventually(Duration::from_secs(20), || stdout(&s.ctl(&["logs"]))
        .contains("raw")));
    // The ring keeps log-lines = 5.
    let out = s.ctl(&["logs", "-n", "100"]);
    let text = out.stdout.clone();
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{}", String::from_utf8_lossy(&text));
    assert_eq!(lines[0], b"talker | line 16");
    // patiencectl prints the exact bytes.
    assert_eq!(lines[4], b"talker | raw \xff byte");
    // JSON replaces them in text and carries them in base64.
    let mut rpc = Rpc::connect(&s.socket());
    let r = rpc.call(1, "logs", json!({ "lines": 1 }));
    let l = &r["result"]["lines"][0];
    assert_eq!(l["text"], "raw \u{fffd} byte");
    assert_eq!(l["base64"], "cmF3IP8gYnl0ZQ==");
    assert_eq!(l["stream"], "stdout");
    assert_eq!(l["attempt"], 1);
    assert!(l["time"].as_f64().unwrap() > 1.6e9);
    // -f: a line written after the request arrives as a notification.
    let mut follow = patience(&s.dir);
    follow
        .arg("--ctl")
        .arg("-f")
        .arg(&s.file)
        .args(["logs", "-f", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut g = Guard::new(follow.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(code(&s.ctl(&["restart", "talker"])), 0);
    let mut out = g.child().stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("line 19") && Instant::now() < end {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("talker | line 0\n"), "{seen}");
    assert!(seen.contains("talker | line 19\n"), "{seen}");
}

#[test]
fn malformed_and_hostile_clients_get_json_rpc_errors_and_disturb_nothing() {
    let s = Stack::start("ctl-rpc", STACK);
    let sock = s.socket();
    let mut rpc = Rpc::connect(&sock);
    rpc.send_raw(b"{ not json\n");
    let v = rpc.line();
    assert_eq!(error_code(&v), -32700);
    assert_eq!(v["id"], Value::Null);
    rpc.send_raw(b"[1,2]\n");
    assert_eq!(error_code(&rpc.line()), -32600);
    rpc.send_raw(b"{\"id\":3,\"method\":\"ping\"}\n");
    assert_eq!(error_code(&rpc.line()), -32600);
    let v = rpc.call(4, "frobnicate", json!({}));
    assert_eq!(error_code(&v), -32601);
    assert_eq!(v["id"], 4);
    assert_eq!(
        error_code(&rpc.call(5, "stop", json!({ "services": "app" }))),
        -32602
    );
    assert_eq!(
        error_code(&rpc.call(6, "status", json!({ "verbose": true }))),
        -32602
    );
    let v = rpc.call(7, "stop", json!({ "services": ["nope"] }));
    assert_eq!(error_code(&v), -32001);
    assert_eq!(v["error"]["data"]["service"], "nope");
    // A notification (no id) gets no answer: the next reply is for id 8.
    rpc.send_raw(b"{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n");
    let v = rpc.call(8, "ping", json!({}));
    assert_eq!(v["id"], 8);
    assert_eq!(v["result"]["pid"], s.sup.id());
    // A request over 64 KiB: an error, and the connection is closed.
    let mut big = Rpc::connect(&sock);
    let _ = big.writer.write_all(&vec![b' '; 70 * 1024]);
    assert_eq!(error_code(&big.line()), -32600);
    let mut rest = String::new();
    assert_eq!(big.reader.read_line(&mut rest).unwrap_or(0), 0);
    // 16 idle connections: the 17th is told busy; the idle ones are let go
    // after 5 s, and then control works again.
    let idle: Vec<UnixStream> = (0..16).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = Rpc::connect(&sock);
    assert_eq!(error_code(&extra.line()), -32002);
    assert!(eventually(Duration::from_secs(20), || s
        .ctl(&["status"])
        .status
        .success()));
    drop(idle);
    // A client sending half a request and nothing more is cut after 5 s.
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"{\"jsonrpc\":").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 64];
    assert_eq!(slow.read(&mut b).unwrap_or(0), 0);
    assert!(started.elapsed() >= Duration::from_secs(4) && started.elapsed() < Duration::from_secs(15));
    // All through it, the stack ran on.
    assert_eq!(s.service("db")["state"], "ready");
    assert_eq!(s.service("db")["restarts"], 0);
}

#[test]
fn another_uid_is_refused_by_peer_credentials() {
    if !is_root() {
        skip("needs root to connect as another uid");
        return;
    }
    let dir = TempDir::new("ctl-peer");
    // Open to all (so the kernel lets the other uid connect at all): the
    // peer check alone refuses it.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = open.join("c.sock");
    let file = dir.join("services.toml");
    std::fs::write(
        &file,
        format!(
            "[supervisor]\ncontrol-socket = \"{}\"\n[service.a]\ncommand = [\"sleep\", \"1000\"]\n",
            sock.display()
        ),
    )
    .unwrap();
    let _sup = spawn(&dir, &["--services", file.to_str().unwrap()]);
    assert!(eventually(Duration::from_secs(20), || sock.exists()));
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = output({
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            patience_bin(),
            "--ctl",
            "-s",
        ])
        .arg(&sock)
        .arg("status");
        c
    });
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not permitted"), "{}", stderr(&out));
    // Root and the owner still get in.
    let mut c = patience(&dir);
    c.args(["--ctl", "-s"]).arg(&sock).arg("status");
    assert_eq!(code(&output(c)), 0);
}

#[test]
fn a_runtime_directory_open_to_others_is_refused_and_the_stack_runs_without_control() {
    let dir = TempDir::new("ctl-opendir");
    let socket_dir = dir.join("run/patience");
    let _ = patience(&dir); // makes run/
    std::fs::create_dir_all(&socket_dir).unwrap();
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.join("services.toml");
    std::fs::write(&file, "[service.a]\ncommand = [\"sh\", \"-c\", \"echo hi\"]\n").unwrap();
    let out = run(&dir, &["--services", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("is open to others"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("running without control"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "a | hi\n");
}

#[test]
fn no_supervisor_is_status_3_and_up_d_detaches_and_down_returns_when_it_is_gone() {
    let dir = TempDir::new("ctl-up");
    let file = dir.join("services.toml");
    std::fs::write(
        &file,
        "[service.a]\ncommand = [\"sleep\", \"1000\"]\nrestart = \"always\"\nforever = true\n",
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        let mut c = patience(&dir);
        c.arg("--ctl").arg("-f").arg(&file).args(args);
        output(c)
    };
    let out = ctl(&["status"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("no supervisor"), "{}", stderr(&out));
    let started = Instant::now();
    let out = ctl(&["up", "-d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    // Detached: the client has returned, the supervisor answers.
    let st = ctl(&["status", "--json"]);
    assert_eq!(code(&st), 0);
    let v: Value = serde_json::from_str(&stdout(&st)).unwrap();
    let pid = v["pid"].as_i64().unwrap() as i32;
    let guard = KillOnDrop(pid);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // up again with a supervisor running: starts nothing new, says 0.
    assert_eq!(code(&ctl(&["up"])), 0);
    let out = ctl(&["down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // down returned when the supervisor was gone (a zombie at most, as the
    // detached child of a client that has exited is init's to reap).
    assert!(
        !patience::sys::alive_not_zombie(pid),
        "the supervisor outlived down"
    );
    drop(guard);
    assert_eq!(code(&ctl(&["status"])), 3);
}

/// Kills a pid on drop (the detached supervisor a test started).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if patience::sys::alive_not_zombie(self.0) {
            let _ = patience::sys::kill(self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn patiencectl_is_the_same_binary_by_another_name() {
    let s = Stack::start("ctl-name", STACK);
    let link = s.dir.join("patiencectl");
    std::os::unix::fs::symlink(patience_bin(), &link).unwrap();
    let mut c = Command::new(&link);
    c.env("XDG_RUNTIME_DIR", s.dir.join("run"))
        .arg("-f")
        .arg(&s.file)
        .arg("status");
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("SERVICE"));
    // Without -f: the only socket in the runtime directory.
    let mut c = Command::new(&link);
    c.env("XDG_RUNTIME_DIR", s.dir.join("run"))
        .env_remove("PATIENCE_CONTROL_SOCKET")
        .current_dir(s.dir.join("run"))
        .arg("status");
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut c = Command::new(&link);
    c.arg("--help");
    let out = output(c);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: patiencectl"));
    // subscribe: a state change arrives as an event notification.
    let mut rpc = Rpc::connect(&s.socket());
    let v = rpc.call(1, "subscribe", json!({}));
    assert_eq!(v["result"]["subscribed"], true);
    assert_eq!(code(&s.ctl(&["stop", "flaky"])), 0);
    let mut saw = false;
    for _ in 0..10 {
        let e = rpc.line();
        assert_eq!(e["method"], "event");
        if e["params"]["name"] == "flaky" && e["params"]["state"] == "stopped" {
            saw = true;
            break;
        }
    }
    assert!(saw);
    // down over JSON-RPC: the stack stops with status 0.
    let mut rpc = Rpc::connect(&s.socket());
    let v = rpc.call(2, "down", json!({}));
    assert_eq!(v["result"]["stopping"], true);
    let Stack { sup, .. } = s;
    let out = sup.wait_output(Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_shows_health_and_a_notify_status() {
    let s = Stack::start(
        "ctl-health",
        r#"
[service.web]
command = ["sleep", "1000"]
restart = "always"
forever = true
health-command = ["true"]
health-interval = "200ms"

[service.notifier]
command = ["python3", "-c", "import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.connect(os.environ['NOTIFY_SOCKET']); s.send(b'READY=1\\nSTATUS=serving 3 clients'); time.sleep(1000)"]
restart = "always"
forever = true
ready-notify = true
"#,
    );
    assert!(
        eventually(Duration::from_secs(20), || s.service("web")["health"]
            == "healthy"),
        "{}",
        s.service("web")
    );
    s.wait_state("notifier", "ready");
    let n = s.service("notifier");
    assert_eq!(n["notify_status"], "serving 3 clients", "{n}");
    let table = stdout(&s.ctl(&["status"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.ends_with("healthy")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("notifier") && l.ends_with("ready: notify; status: serving 3 clients")),
        "{table}"
    );
}

#[test]
fn while_the_stack_shuts_down_start_is_refused_with_32003_and_down_t_kills_what_is_left() {
    let s = Stack::start(
        "ctl-stopping",
        r#"
[service.stubborn]
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]
restart = "always"
forever = true
kill-after = "30s"
"#,
    );
    s.wait_state("stubborn", "ready");
    let mut rpc = Rpc::connect(&s.socket());
    let v = rpc.call(1, "down", json!({ "timeout": 1.0 }));
    assert_eq!(v["result"]["stopping"], true);
    let mut other = Rpc::connect(&s.socket());
    let v = other.call(2, "start", json!({ "services": ["stubborn"] }));
    assert_eq!(error_code(&v), -32003, "{v}");
    // The service ignores TERM and has 30 s of grace: the 1 s of down's
    // timeout is what ends it.
    let started = Instant::now();
    let Stack { sup, .. } = s;
    let out = sup.wait_output(Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
