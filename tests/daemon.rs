//! patienced end to end: the real daemon on a socket in a temp dir and a
//! free loopback port, the real patience sending to it, and /metrics read
//! over HTTP, checked by hand, by `promtool` and by a real Prometheus.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{code, eventually, patience, patienced_bin, send_signal, skip, stderr, Guard, TempDir};

const LONG: Duration = Duration::from_secs(20);

/// A running patienced, killed and reaped on drop; its stderr is collected.
struct Daemon {
    guard: Guard,
    addr: String,
    socket: PathBuf,
    log: Arc<Mutex<String>>,
}

fn start_daemon(dir: &TempDir, extra: &[&str]) -> Daemon {
    start_daemon_at(&dir.join("d.sock"), extra)
}

fn start_daemon_at(socket: &Path, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new(patienced_bin());
    cmd.args(["--no-config", "--listen", "127.0.0.1:0", "--socket"])
        .arg(socket)
        .args(extra);
    launch(cmd, socket)
}

/// Starts `cmd` (a patienced command line) and waits for it to listen.
fn launch(mut cmd: Command, socket: &Path) -> Daemon {
    cmd.env_remove("PATIENCE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = Guard::new(cmd.spawn().expect("spawn patienced"));
    let err = guard.child().stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(LONG)
        .unwrap_or_else(|_| panic!("patienced did not start: {}", log.lock().unwrap()));
    Daemon {
        guard,
        addr,
        socket: socket.to_path_buf(),
        log,
    }
}

impl Daemon {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether patienced logs `needle` within LONG. A line printed while the
    /// test runs reaches `log` through the reader thread, some time later.
    fn logs(&self, needle: &str) -> bool {
        eventually(LONG, || self.log().contains(needle))
    }

    fn scrape(&self) -> String {
        let (status, head, body) = http(
            &self.addr,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        body
    }

    /// Waits until `series` has `want`, and panics with the exposition if not.
    fn expect(&self, series: &str, want: f64) {
        let mut last = String::new();
        let ok = eventually(LONG, || {
            last = self.scrape();
            sample(&last, series) == Some(want)
        });
        assert!(ok, "expected {series} = {want}; exposition:\n{last}");
    }

    /// Sends raw datagrams with blocking sends, so none is lost.
    fn send(&self, datagrams: &[Vec<u8>]) {
        let s = UnixDatagram::unbound().unwrap();
        s.set_write_timeout(Some(LONG)).unwrap();
        for d in datagrams {
            s.send_to(d, &self.socket).expect("send datagram");
        }
    }

    fn patience(&self, dir: &TempDir) -> Command {
        let mut c = patience(dir);
        c.env("PATIENCE_SOCKET", &self.socket);
        c
    }
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// One HTTP exchange by hand: (status, head, body).
fn http(addr: &str, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    let body = if chunked && !request.starts_with("HEAD ") {
        dechunk(body).unwrap_or_else(|| panic!("a chunked body cut short:\n{head}"))
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

/// The payload of a chunked body, or None when it does not end with the
/// last (empty) chunk.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    Guard::new(child).wait_output(LONG * 3)
}

/// A tool from Debian's `prometheus` package, or None (the test is skipped)
/// when it is not installed.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        skip(&format!("needs {name} (Debian package prometheus)"));
    }
    found
}

fn unix_now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn runs_and_attempts_are_counted_by_label() {
    let dir = TempDir::new("d-count");
    let d = start_daemon(&dir, &[]);
    let before = unix_now_secs();
    let out = run_ok(d.patience(&dir).args([
        "-a", "3", "-d", "10ms", "--name", "flaky", "--", "sh", "-c", "exit 3",
    ]));
    assert_eq!(code(&out), 3);
    let out = run_ok(d.patience(&dir).args(["--name", "flaky", "--", "true"]));
    assert_eq!(code(&out), 0);
    let out = run_ok(
        d.patience(&dir)
            .args(["-a", "1", "-t", "100ms", "--name", "slow", "--", "sleep", "5"]),
    );
    assert_eq!(code(&out), 124);
    let out = run_ok(d.patience(&dir).args([
        "-a",
        "2",
        "-d",
        "1ms",
        "--name",
        "killed",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]));
    assert_eq!(code(&out), 137);
    let out = run_ok(
        d.patience(&dir)
            .args(["--name", "missing", "--", "/nonexistent/cmd"]),
    );
    assert_eq!(code(&out), 127);
    let out = run_ok(d.patience(&dir).args(["--", "true", "unnamed"]));
    assert_eq!(code(&out), 0);

    d.expect(r#"patience_runs_total{command="flaky",status="failed"}"#, 1.0);
    d.expect(r#"patience_runs_total{command="flaky",status="succeeded"}"#, 1.0);
    d.expect(r#"patience_attempts_total{command="flaky",exit_code="3"}"#, 3.0);
    d.expect(r#"patience_attempts_total{command="flaky",exit_code="0"}"#, 1.0);
    d.expect(
        r#"patience_attempts_total{command="slow",exit_code="timeout"}"#,
        1.0,
    );
    d.expect(r#"patience_runs_total{command="slow",status="failed"}"#, 1.0);
    d.expect(
        r#"patience_attempts_total{command="killed",exit_code="SIGKILL"}"#,
        2.0,
    );
    d.expect(
        r#"patience_attempts_total{command="missing",exit_code="127"}"#,
        1.0,
    );
    let text = d.scrape();
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"patience_runs_total{command="true-"#) && l.ends_with(" 1")),
        "the default name is the basename and a hash:\n{text}"
    );
    // Histograms: counts, +Inf equal to _count, cumulative buckets.
    let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    assert_eq!(
        v(r#"patience_attempt_duration_seconds_count{command="flaky"}"#),
        4.0
    );
    assert_eq!(
        v(r#"patience_attempt_duration_seconds_bucket{command="flaky",le="+Inf"}"#),
        4.0
    );
    assert_eq!(v(r#"patience_run_duration_seconds_count{command="flaky"}"#), 2.0);
    assert_eq!(
        v(r#"patience_attempt_duration_seconds_bucket{command="slow",le="0.05"}"#),
        0.0
    );
    assert_eq!(
        v(r#"patience_attempt_duration_seconds_bucket{command="slow",le="5"}"#),
        1.0
    );
    assert!(v(r#"patience_attempt_duration_seconds_sum{command="slow"}"#) >= 0.1);
    let mut previous = 0.0;
    for line in text
        .lines()
        .filter(|l| l.starts_with(r#"patience_attempt_duration_seconds_bucket{command="flaky""#))
    {
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= previous, "buckets are cumulative: {line}");
        previous = n;
    }
    // The last-run timestamp is when the run ended.
    let ts = v(r#"patience_last_run_timestamp_seconds{command="flaky",status="succeeded"}"#);
    assert!(
        ts >= before - 1.0 && ts <= unix_now_secs() + 1.0,
        "{ts} vs {before}"
    );
    // Attempts and runs, and a run-start for each of the six runs.
    assert_eq!(
        v(r#"patienced_datagrams_total{result="accepted"}"#),
        4.0 + 2.0 + 2.0 + 3.0 + 2.0 + 2.0 + 6.0
    );
    assert_eq!(v("patienced_active"), 1.0);
}

#[test]
fn no_metrics_sends_nothing() {
    let dir = TempDir::new("d-nometrics");
    let d = start_daemon(&dir, &[]);
    let out = run_ok(
        d.patience(&dir)
            .args(["--no-metrics", "--name", "quiet", "--", "true"]),
    );
    assert_eq!(code(&out), 0);
    let out = run_ok(d.patience(&dir).args(["--name", "loud", "--", "true"]));
    assert_eq!(code(&out), 0);
    d.expect(r#"patience_runs_total{command="loud",status="succeeded"}"#, 1.0);
    assert!(!d.scrape().contains("quiet"));
}

#[test]
fn names_full_of_special_characters_round_trip_escaped() {
    let dir = TempDir::new("d-escape");
    let d = start_daemon(&dir, &[]);
    let name = "we\"ird\\na}me{\nwith=\"quotes\",\tand é 😀";
    let out = run_ok(d.patience(&dir).args(["--name", name, "--", "true"]));
    assert_eq!(code(&out), 0);
    let escaped = "we\\\"ird\\\\na}me{\\nwith=\\\"quotes\\\",\tand é 😀";
    d.expect(
        &format!("patience_runs_total{{command=\"{escaped}\",status=\"succeeded\"}}"),
        1.0,
    );
    // A name over the daemon's 256 bytes is cut by patience, not dropped.
    let long = "x".repeat(10_000);
    let out = run_ok(d.patience(&dir).args(["--name", &long, "--", "true"]));
    assert_eq!(code(&out), 0);
    let cut = &long[..256];
    d.expect(
        &format!("patience_runs_total{{command=\"{cut}\",status=\"succeeded\"}}"),
        1.0,
    );
    d.expect(
        &format!("patience_attempts_total{{command=\"{cut}\",exit_code=\"0\"}}"),
        1.0,
    );
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &d.scrape());
    }
}

fn check_with_promtool(promtool: &Path, text: &str) {
    let mut child = Guard::new(
        Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn promtool"),
    );
    // A write error shows up as promtool's own complaint below.
    let _ = child.child().stdin.take().unwrap().write_all(text.as_bytes());
    let out = child.wait_output(LONG);
    let said = format!("{}{}", common::stdout(&out), stderr(&out));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

#[test]
fn promtool_accepts_the_whole_exposition() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let dir = TempDir::new("d-promtool");
    let d = start_daemon(&dir, &[]);
    for (name, cmd) in [("ok", "true"), ("bad", "false")] {
        run_ok(
            d.patience(&dir)
                .args(["-a", "2", "-d", "1ms", "--name", name, "--", cmd]),
        );
    }
    run_ok(
        d.patience(&dir)
            .args(["-a", "1", "-t", "50ms", "--name", "t", "--", "sleep", "3"]),
    );
    d.send(&[
        b"garbage".to_vec(),
        br#"{"v":1,"event":"service","name":"s \"q\"","state":"ready","ready_s":0.2,"health_failures":1}"#
            .to_vec(),
        br#"{"v":1,"event":"service","name":"t","state":"failed"}"#.to_vec(),
    ]);
    d.expect(r#"patience_service_ready{command="s \"q\""}"#, 1.0);
    d.expect(r#"patience_service_up{command="t"}"#, 0.0);
    d.expect(r#"patience_runs_total{command="t",status="failed"}"#, 1.0);
    d.expect(
        r#"patienced_datagrams_total{result="rejected",reason="json"}"#,
        1.0,
    );
    check_with_promtool(&promtool, &d.scrape());
    // And the exposition of an empty daemon.
    let empty = start_daemon_at(&dir.join("e.sock"), &[]);
    check_with_promtool(&promtool, &empty.scrape());
}

#[test]
fn a_real_prometheus_scrapes_and_answers_a_query() {
    let Some(prometheus) = prometheus_tool("prometheus") else {
        return;
    };
    let dir = TempDir::new("d-prometheus");
    let d = start_daemon(&dir, &[]);
    let name = "nightly \"backup\"";
    let out = run_ok(
        d.patience(&dir)
            .args(["-a", "3", "-d", "1ms", "--name", name, "--", "false"]),
    );
    assert_eq!(code(&out), 1);
    d.expect(
        r#"patience_attempts_total{command="nightly \"backup\"",exit_code="1"}"#,
        3.0,
    );

    let port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: patienced\n    \
             static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    )
    .unwrap();
    let mut prom = Guard::new(
        Command::new(prometheus)
            .current_dir(dir.path())
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prometheus"),
    );
    let query = r#"patience_attempts_total{command="nightly \"backup\""}"#;
    let request = prometheus_query(query);
    let mut last = String::new();
    let found = eventually(Duration::from_secs(90), || {
        if let Ok(Some(st)) = prom.child().try_wait() {
            panic!("prometheus exited early: {st:?}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            return false;
        }
        let (_, _, body) = http(&format!("127.0.0.1:{port}"), &request);
        last = body;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&last) else {
            return false;
        };
        let result = &v["data"]["result"];
        result.as_array().is_some_and(|r| r.len() == 1)
            && result[0]["value"][1] == "3"
            && result[0]["metric"]["exit_code"] == "1"
            && result[0]["metric"]["command"] == name
    });
    assert!(found, "Prometheus never answered 3 for {query}: {last}");
    // The service families scrape too: a supervisor's datagram, by hand.
    d.send(&[
        br#"{"v":1,"event":"service","name":"shop.app","state":"starting"}"#.to_vec(),
        br#"{"v":1,"event":"service","name":"shop.app","state":"ready","ready_s":2.4,"health_failures":3,"log_dropped":0}"#.to_vec(),
    ]);
    d.expect(r#"patience_service_ready_seconds_count{command="shop.app"}"#, 1.0);
    // 1 (le="2.5") + 1 (up) + 3 (health failures); the other two have no le.
    let query = r#"sum by (command) ({__name__=~"patience_service_(up|health_failures_total|ready_seconds_bucket)",command="shop.app",le=~"|2.5"})"#;
    let request = prometheus_query(query);
    let found = eventually(Duration::from_secs(90), || {
        let (_, _, body) = http(&format!("127.0.0.1:{port}"), &request);
        last = body;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&last) else {
            return false;
        };
        let result = &v["data"]["result"];
        result.as_array().is_some_and(|r| r.len() == 1)
            && result[0]["value"][1] == "5"
            && result[0]["metric"]["command"] == "shop.app"
    });
    assert!(found, "Prometheus never answered 1 + 1 + 3 for {query}: {last}");
    // Prometheus saw a healthy target.
    let (_, _, targets) = http(
        &format!("127.0.0.1:{port}"),
        "GET /api/v1/targets HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(targets.contains(r#""health":"up""#), "{targets}");
}

/// A stack under `patience --services FILE`, sending to `d`; killed and
/// reaped on drop (its shims die with it: PR_SET_PDEATHSIG).
fn start_stack(d: &Daemon, dir: &TempDir, text: &str) -> Guard {
    let file = dir.join("stack.toml");
    std::fs::write(&file, text).unwrap();
    Guard::new(
        d.patience(dir)
            .arg("--services")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn patience --services"),
    )
}

#[test]
fn a_stack_reports_its_services_and_a_stopped_stack_is_down() {
    let dir = TempDir::new("d-services");
    let d = start_daemon(&dir, &[]);
    let long = common::unique_sleep_secs();
    // db is ready 0.6 s after its attempt starts; app (restarted as it is
    // found unhealthy, twice in a row) once started, each time.
    let mut stack = start_stack(
        &d,
        &dir,
        &format!(
            "[supervisor]\nname = \"shop\"\n\
             [service.db]\ncommand = [\"sh\", \"-c\", \"sleep 0.6; echo up; exec sleep {long}\"]\n\
             restart = \"always\"\nready-pattern = \"^up$\"\n\
             [service.app]\ncommand = [\"sleep\", \"{long}\"]\nrestart = \"always\"\nforever = true\n\
             delay = \"100ms\"\ndepends-on = [\"db\"]\n\
             health-command = [\"false\"]\nhealth-interval = \"100ms\"\nhealth-failures = 2\n\
             [service.idle]\ncommand = [\"true\"]\nautostart = false\n"
        ),
    );
    let db = |family: &str| format!("{family}{{command=\"shop.db\"}}");
    let app = |family: &str| format!("{family}{{command=\"shop.app\"}}");
    d.expect(&db("patience_service_ready"), 1.0);
    d.expect(&db("patience_service_up"), 1.0);
    d.expect(&db("patience_service_ready_seconds_count"), 1.0);
    let text = d.scrape();
    let sum = sample(&text, &db("patience_service_ready_seconds_sum")).unwrap();
    assert!((0.55..15.0).contains(&sum), "ready_s {sum}\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"patience_service_ready_seconds_bucket{command="shop.db",le="0.5"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &db("patience_service_health_failures_total")),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &db("patience_service_log_dropped_total")),
        Some(0.0)
    );
    // The shims' own datagrams come under the same run names.
    assert!(sample(&text, &db("patience_running_since_timestamp_seconds")).is_some());
    assert!(
        !text.contains("shop.idle"),
        "a service not selected is not reported\n{text}"
    );
    // app: ready as it starts, then ended as unhealthy, again and again;
    // each transition to ready observed once, the failures counted.
    let mut last = String::new();
    let restarted = eventually(LONG, || {
        last = d.scrape();
        sample(&last, &app("patience_service_ready_seconds_count")).is_some_and(|n| n >= 2.0)
            && sample(&last, &app("patience_service_health_failures_total")).is_some_and(|n| n >= 4.0)
    });
    assert!(restarted, "{last}");
    let ready_s = sample(&last, &app("patience_service_ready_seconds_sum")).unwrap();
    assert!(ready_s < 1.0, "app is ready as it starts: {ready_s}\n{last}");
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &last);
    }
    // Stopped: every service is down, not ready, and stays listed.
    send_signal(stack.id(), "TERM");
    stack.wait_status(LONG);
    d.expect(&db("patience_service_up"), 0.0);
    d.expect(&app("patience_service_up"), 0.0);
    let text = d.scrape();
    assert_eq!(sample(&text, &db("patience_service_ready")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &app("patience_service_ready")), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, &db("patience_service_ready_seconds_count")),
        Some(1.0)
    );
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &text);
    }
}

#[test]
fn a_stack_with_no_metrics_sends_no_service_event() {
    let dir = TempDir::new("d-services-none");
    let d = start_daemon(&dir, &[]);
    let long = common::unique_sleep_secs();
    let mut stack = start_stack(
        &d,
        &dir,
        &format!(
            "[supervisor]\nno-metrics = true\n\
             [service.web]\ncommand = [\"sh\", \"-c\", \"echo up; exec sleep {long}\"]\n\
             restart = \"always\"\nready-pattern = \"^up$\"\n"
        ),
    );
    // A datagram sent after the stack is ready arrives after any the
    // supervisor sent then: a socket keeps the order of one sender's, and
    // a marker is sent only once the service's state is known.
    let ready = eventually(LONG, || {
        let out = common::output({
            let mut c = d.patience(&dir);
            c.args(["--ctl", "-f"]).arg(dir.join("stack.toml")).arg("status");
            c
        });
        common::stdout(&out).contains("ready")
    });
    assert!(ready, "web never became ready");
    d.send(&[br#"{"v":1,"event":"run","name":"marker","status":"succeeded","duration_s":1}"#.to_vec()]);
    d.expect(r#"patience_runs_total{command="marker",status="succeeded"}"#, 1.0);
    send_signal(stack.id(), "TERM");
    stack.wait_status(LONG);
    let text = d.scrape();
    assert!(!text.contains("command=\"web\""), "{text}");
}

/// A tiny deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn two_thousand_bad_datagrams_are_all_rejected_and_counted() {
    let dir = TempDir::new("d-fuzz");
    let d = start_daemon(&dir, &[]);
    let valid = r#"{"v":1,"event":"attempt","name":"x","attempt":2,"exit_code":7,"signal":null,"timed_out":false,"duration_s":0.53,"ts":1764000000.1}"#;
    let templates = [
        r#"{"v":2,"event":"run","name":"x","status":"failed","duration_s":1}"#,
        r#"{"v":"1","event":"run","name":"x","status":"failed","duration_s":1}"#,
        r#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":-0.5}"#,
        r#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":NaN}"#,
        r#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1e400}"#,
        r#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":"1"}"#,
        r#"{"v":1,"event":"run","name":"x","status":"exploded","duration_s":1}"#,
        r#"{"v":1,"event":"run","name":"","status":"failed","duration_s":1}"#,
        r#"{"v":1,"event":"run","name":["x"],"status":"failed","duration_s":1}"#,
        r#"{"v":1,"event":"launch","name":"x","duration_s":1}"#,
        r#"{"v":1,"event":"attempt","name":"x","duration_s":1}"#,
        r#"{"v":1,"event":"attempt","name":"x","exit_code":"7","duration_s":1}"#,
        r#"{"v":1,"event":"attempt","name":"x","exit_code":7,"signal":"SIGWHAT","duration_s":1}"#,
        r#"{"v":1,"event":"attempt","name":"x","exit_code":99999999999,"duration_s":1}"#,
        r#"[{"v":1}]"#,
        r#"null"#,
        "",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut datagrams = Vec::new();
    for i in 0..2000 {
        let d: Vec<u8> = match i % 5 {
            // Random bytes of random length, some over the limit.
            0 => (0..1 + rng.below(6000)).map(|_| rng.next() as u8).collect(),
            // A valid datagram cut short: never valid JSON.
            1 => valid.as_bytes()[..rng.below(valid.len() as u64) as usize].to_vec(),
            // Oversized, otherwise valid.
            2 => {
                let pad = "p".repeat(4097 + rng.below(2000) as usize);
                format!(
                    r#"{{"v":1,"event":"run","name":"x","status":"failed","duration_s":1,"pad":"{pad}"}}"#
                )
                .into_bytes()
            }
            _ => templates[rng.below(templates.len() as u64) as usize]
                .as_bytes()
                .to_vec(),
        };
        datagrams.push(d);
    }
    d.send(&datagrams);
    let total = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(r#"patienced_datagrams_total{result="rejected""#))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let mut text = String::new();
    assert!(eventually(LONG, || {
        text = d.scrape();
        total(&text) >= 2000.0
    }));
    assert_eq!(total(&text), 2000.0, "{text}");
    assert_eq!(
        sample(&text, r#"patienced_datagrams_total{result="accepted"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "patienced_series"), Some(0.0));
    for reason in [
        "size", "json", "version", "duration", "status", "name", "event", "field",
    ] {
        let n = sample(
            &text,
            &format!(r#"patienced_datagrams_total{{result="rejected",reason="{reason}"}}"#),
        );
        assert!(n.unwrap_or(0.0) > 0.0, "{reason}: {text}");
    }
    // Still alive and still counting.
    assert_eq!(
        http(
            &d.addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
    d.send(&[valid.as_bytes().to_vec()]);
    d.expect(r#"patience_attempts_total{command="x",exit_code="7"}"#, 1.0);
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &d.scrape());
    }
}

#[test]
fn max_series_bounds_memory_and_counts_what_it_drops() {
    let dir = TempDir::new("d-series");
    let d = start_daemon(&dir, &["--max-series", "500"]);
    let datagrams: Vec<Vec<u8>> = (0..5000)
        .map(|i| {
            format!(r#"{{"v":1,"event":"run","name":"job-{i}","status":"succeeded","duration_s":0.1}}"#)
                .into_bytes()
        })
        .collect();
    d.send(&datagrams);
    let mut text = String::new();
    assert!(eventually(LONG, || {
        text = d.scrape();
        let a = sample(&text, r#"patienced_datagrams_total{result="accepted"}"#).unwrap_or(0.0);
        let x = sample(&text, r#"patienced_datagrams_total{result="dropped"}"#).unwrap_or(0.0);
        a + x >= 5000.0
    }));
    // Each new command's run holds 5 series: counters for succeeded and
    // failed (born at 0), a timestamp, a histogram, the last exit code.
    assert_eq!(sample(&text, "patienced_series"), Some(500.0), "{text}");
    assert_eq!(
        sample(&text, r#"patienced_datagrams_total{result="accepted"}"#),
        Some(100.0)
    );
    assert_eq!(
        sample(&text, r#"patienced_datagrams_total{result="dropped"}"#),
        Some(4900.0)
    );
    assert_eq!(
        sample(&text, "patienced_series_dropped_total"),
        Some(4900.0 * 5.0)
    );
    let runs = text
        .lines()
        .filter(|l| l.starts_with("patience_runs_total{"))
        .count();
    assert_eq!(runs, 200);
    assert!(
        text.len() < 100 * 3_000 + 10_000,
        "the exposition stays bounded: {} bytes",
        text.len()
    );
    assert!(d.logs("--max-series 500 reached"), "{}", d.log());
    // Known series keep counting once full.
    d.send(&datagrams[..1]);
    d.expect(r#"patience_runs_total{command="job-0",status="succeeded"}"#, 2.0);
}

#[test]
fn http_paths_and_methods() {
    let dir = TempDir::new("d-http");
    let d = start_daemon(&dir, &[]);
    let get = |path: &str, method: &str| {
        http(
            &d.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
    };
    let (st, _, body) = get("/", "GET");
    assert_eq!(st, 200);
    assert!(body.contains("/metrics"), "{body}");
    assert_eq!(get("/healthz", "GET").0, 200);
    assert_eq!(get("/metrics?x=1", "GET").0, 200);
    let (st, head, body) = get("/metrics", "HEAD");
    assert_eq!((st, body.as_str()), (200, ""), "{head}");
    assert_eq!(get("/nope", "GET").0, 404);
    assert_eq!(get("/metrics/extra", "GET").0, 404);
    let (st, head, _) = get("/metrics", "POST");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(get("/", "DELETE").0, 405);
    assert_eq!(get("/healthz", "PUT").0, 405);
}

#[test]
fn stalled_http_clients_block_neither_scrapes_nor_intake() {
    let dir = TempDir::new("d-stall");
    let d = start_daemon(&dir, &[]);
    // Eight clients send half a request and stall.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: stall\r\nX-Half: ")
                .unwrap();
            s
        })
        .collect();
    // And eight more open a connection and say nothing at all.
    let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    for _ in 0..5 {
        d.scrape();
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "scrapes took {:?}",
        start.elapsed()
    );
    let out = run_ok(d.patience(&dir).args(["--name", "during-stall", "--", "true"]));
    assert_eq!(code(&out), 0);
    d.expect(
        r#"patience_runs_total{command="during-stall",status="succeeded"}"#,
        1.0,
    );
    drop((stalled, silent));
}

#[test]
fn clients_that_do_not_read_their_response_hold_a_thread_for_seconds_only() {
    let dir = TempDir::new("d-noread");
    let d = start_daemon(&dir, &["--max-series", "30000"]);
    // About 10 MB of exposition: more than loopback buffers absorb, so a
    // writer to a client that does not read blocks.
    let datagrams: Vec<Vec<u8>> = (0..3000)
        .flat_map(|i| {
            [
                format!(r#"{{"v":1,"event":"run","name":"big-{i}","status":"failed","duration_s":1}}"#),
                format!(r#"{{"v":1,"event":"attempt","name":"big-{i}","exit_code":1,"duration_s":1}}"#),
            ]
        })
        .map(String::into_bytes)
        .collect();
    d.send(&datagrams);
    d.expect("patienced_series", 21000.0);
    // Several such clients at once.
    let stuck: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let text = d.scrape();
    assert!(text.len() > 8_000_000, "{}", text.len());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "a scrape waited {:?}",
        start.elapsed()
    );
    drop(stuck);
}

#[test]
fn http_recovers_after_running_out_of_descriptors() {
    // Two limits, an odd and an even one: a server that needs a second
    // descriptor per connection (tiny_http's try_clone) fails on one of them
    // with a single descriptor left, not at accept(2).
    for limit in [47, 48] {
        let dir = TempDir::new("d-emfile");
        let socket = dir.join("d.sock");
        // A low descriptor limit (soft and hard), so that idle connections
        // exhaust it and accept(2) fails with EMFILE.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(patienced_bin())
            .args(["--no-config", "--listen", "127.0.0.1:0", "--socket"])
            .arg(&socket);
        let mut d = launch(cmd, &socket);
        let idle: Vec<TcpStream> = (0..80).filter_map(|_| TcpStream::connect(&d.addr).ok()).collect();
        assert!(
            eventually(LONG, || d.log().contains("stopped accepting")),
            "limit {limit}: accept never failed: {}",
            d.log()
        );
        drop(idle);
        // Datagrams kept flowing meanwhile, and HTTP comes back.
        d.send(&state_datagrams());
        let mut last = String::new();
        let back = eventually(LONG, || {
            let Ok(mut s) = TcpStream::connect(&d.addr) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            last.clear();
            let _ = s.read_to_string(&mut last);
            last.contains(r#"patience_runs_total{command="keep",status="succeeded"} 1"#)
        });
        assert!(back, "limit {limit}: HTTP did not come back: {}\n{last}", d.log());
        assert!(d.logs("accepting connections again"), "{}", d.log());
        assert!(
            d.guard.child().try_wait().unwrap().is_none(),
            "patienced died: {}",
            d.log()
        );
    }
}

/// Threads of process `pid`, from /proc.
fn threads_of(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_idle_connections_is_bounded_and_never_locks_out_a_scrape() {
    let dir = TempDir::new("d-flood");
    let d = start_daemon(&dir, &[]);
    let before = threads_of(d.guard.id());
    // More idle connections than patienced serves at once (64).
    let mut idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // A scrape still gets in at once: the oldest idle connection makes room.
    let start = Instant::now();
    assert!(d.scrape().contains("patienced_active 1"));
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let threads = threads_of(d.guard.id());
    assert!(
        threads <= before + 64 + 8,
        "{threads} threads for 100 idle connections (idle daemon: {before})"
    );
    // The first ones were closed to make room, with a 408.
    let mut first = idle.remove(0);
    first.set_read_timeout(Some(LONG)).unwrap();
    let mut reply = String::new();
    let _ = first.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    // The daemon closes the others itself once their time to send a
    // request (5 s) is up.
    let start = Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "idle connections kept {:?}",
        start.elapsed()
    );
    drop(idle);
    assert!(
        eventually(LONG, || threads_of(d.guard.id()) <= before),
        "threads left behind"
    );
    assert!(d.scrape().contains("patienced_active 1"));
}

#[test]
fn a_client_reading_4_kib_a_second_is_cut_at_the_response_deadline() {
    let dir = TempDir::new("d-slowread");
    let d = start_daemon(&dir, &[]);
    fill(&d, 1428, 250);
    let pid = d.guard.id();
    let before = threads_of(pid);
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let reading = reading.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut got = 0usize;
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                std::thread::sleep(Duration::from_millis(1000));
            }
            got
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(threads_of(pid) > before, "the response is under way");
    // The body is some 20 MB: at 4 KiB/s it would hold a thread for hours.
    // 10 s for the whole response, then the thread is free, whatever the
    // socket buffers still hold for the client.
    let start = Instant::now();
    let freed = eventually(Duration::from_secs(25), || threads_of(pid) <= before);
    let took = start.elapsed();
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let got = reader.join().unwrap();
    assert!(
        freed,
        "the slow client's thread still runs after {took:?} ({got} bytes read)"
    );
    assert!(took > Duration::from_secs(5), "cut after {took:?} only");
}

/// Puts `pid` in a pids cgroup (v1) where no further thread can start,
/// and takes it out on drop. None (with a notice) where that is not
/// possible (not root, no pids controller).
struct NoNewThreads(PathBuf, i32);

impl NoNewThreads {
    fn apply(pid: i32) -> Option<NoNewThreads> {
        let root = Path::new("/sys/fs/cgroup/pids");
        let dir = root.join(format!("patienced-test-{}", std::process::id()));
        let ok = std::fs::create_dir(&dir).is_ok()
            && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok();
        let current = std::fs::read_to_string(dir.join("pids.current")).unwrap_or_default();
        if !ok || std::fs::write(dir.join("pids.max"), current.trim()).is_err() {
            let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
            let _ = std::fs::remove_dir(&dir);
            eprintln!(
                "NOTICE: cannot limit threads with a pids cgroup (needs root and cgroup v1 pids): skipping"
            );
            return None;
        }
        Some(NoNewThreads(dir, pid))
    }
}

impl Drop for NoNewThreads {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("pids.max"), "max");
        let _ = std::fs::write("/sys/fs/cgroup/pids/cgroup.procs", self.1.to_string());
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn when_no_thread_can_start_clients_get_503_and_the_log_says_so_once() {
    let dir = TempDir::new("d-nothread");
    let d = start_daemon(&dir, &[]);
    let Some(limit) = NoNewThreads::apply(d.guard.id()) else {
        return;
    };
    for _ in 0..3 {
        let (status, _, body) = http(&d.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, 503, "{body}");
    }
    drop(limit);
    assert!(d.scrape().contains("patienced_active 1"));
    // The daemon's stderr is read as it comes: give a loaded machine time.
    eventually(Duration::from_secs(10), || {
        let log = d.log();
        log.contains("cannot start a thread") && log.contains("threads for connections start again")
    });
    let log = d.log();
    assert_eq!(log.matches("cannot start a thread").count(), 1, "{log}");
    assert!(log.contains("threads for connections start again"), "{log}");
}

#[test]
fn a_client_sending_a_body_or_a_huge_head_still_gets_its_answer() {
    let dir = TempDir::new("d-body");
    let d = start_daemon(&dir, &[]);
    // A body patienced does not read must not reset the connection before
    // the 405 is read.
    let body = "x".repeat(20_000);
    let (st, head, _) = http(
        &d.addr,
        &format!(
            "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(st, 405, "{head}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(20_000));
    assert_eq!(http(&d.addr, &huge).0, 431);
    assert_eq!(http(&d.addr, "BLAH\r\n\r\n").0, 400);
    assert_eq!(http(&d.addr, "GET /healthz HTTP/1.0\n\n").0, 200);
}

#[test]
fn http_is_strict_about_versions_host_and_the_head_limit() {
    let dir = TempDir::new("d-strict");
    let d = start_daemon(&dir, &[]);
    for (request, want) in [
        ("GET /metrics HTTP/1.1\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /metrics HTTP/1.9\r\nHost: t\r\n\r\n", 505),
        ("GET /metrics HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ("GET /metrics HTTP/1.1junk\r\nHost: t\r\n\r\n", 400),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        ("GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n", 200),
    ] {
        let (status, head, _) = http(&d.addr, request);
        assert_eq!(status, want, "{request:?}: {head}");
    }
    // The man page's limit: 8 KiB for the head, its blank line included.
    let head_of = |len: usize| {
        let start = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: ";
        let pad = "p".repeat(len - start.len() - 4);
        format!("{start}{pad}\r\n\r\n")
    };
    assert_eq!(head_of(8192).len(), 8192);
    assert_eq!(http(&d.addr, &head_of(8192)).0, 200);
    assert_eq!(http(&d.addr, &head_of(8193)).0, 431);
}

#[test]
fn a_pipelined_second_request_is_not_answered_and_the_close_is_clean() {
    let dir = TempDir::new("d-pipeline");
    let d = start_daemon(&dir, &[]);
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    // A reset would be an error here, and could lose the first response.
    s.read_to_end(&mut raw).expect("a clean end of the connection");
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.contains("Connection: close"),
        "{text}"
    );
    assert!(text.ends_with("ok\n"), "{text}");
}

#[test]
fn sigterm_and_sigint_exit_zero_and_remove_the_socket() {
    for sig in ["TERM", "INT"] {
        let dir = TempDir::new("d-term");
        let mut d = start_daemon(&dir, &[]);
        assert!(d.socket.exists());
        send_signal(d.guard.id(), sig);
        let st = d.guard.wait_status(LONG);
        assert_eq!(st.code(), Some(0), "SIG{sig}: {st:?} {}", d.log());
        assert!(!d.socket.exists(), "socket left behind after SIG{sig}");
        assert!(
            eventually(LONG, || d.log().contains(&format!("stopped by SIG{sig}"))),
            "{}",
            d.log()
        );
    }
}

#[test]
fn sigterm_finishes_scrapes_under_way_answers_waiting_ones_503_and_exits_soon() {
    let dir = TempDir::new("d-term-scrape");
    let state = dir.join("state.json");
    let mut d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    fill(&d, 1428, 250);
    // Three scrapes of some 20 MB under way, stalled so that SIGTERM comes
    // in the middle of them.
    let mut under_way: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    // And connections that have not sent their request yet.
    let waiting: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&d.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    send_signal(d.guard.id(), "TERM");
    let readers: Vec<_> = under_way
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(LONG)).unwrap();
                let mut raw = Vec::new();
                let _ = s.read_to_end(&mut raw);
                raw
            })
        })
        .collect();
    for r in readers {
        let raw = r.join().unwrap();
        assert!(raw.len() > 15_000_000, "a scrape cut at {} bytes", raw.len());
        assert!(raw.ends_with(b"\r\n0\r\n\r\n"), "a scrape without its last chunk");
    }
    for mut s in waiting {
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply:?}");
    }
    let st = d.guard.wait_status(LONG);
    let took = start.elapsed();
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains("001427-"), "state flushed at exit");
}

#[test]
fn sighup_says_state_written_only_when_it_was() {
    let dir = TempDir::new("d-hup");
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let state = sub.join("state.json");
    let d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    send_signal(d.guard.id(), "HUP");
    assert!(
        eventually(LONG, || d.log().contains("SIGHUP: state written")),
        "{}",
        d.log()
    );
    // Its directory gone, the state cannot be written.
    std::fs::remove_dir_all(&sub).unwrap();
    send_signal(d.guard.id(), "HUP");
    assert!(
        eventually(LONG, || d.log().contains("SIGHUP: state not written")),
        "{}",
        d.log()
    );
    assert_eq!(d.log().matches("SIGHUP: state written").count(), 1, "{}", d.log());
    assert!(d.log().contains("cannot write state file"), "{}", d.log());
}

fn state_datagrams() -> Vec<Vec<u8>> {
    vec![
        br#"{"v":1,"event":"attempt","name":"keep","exit_code":3,"duration_s":0.2}"#.to_vec(),
        br#"{"v":1,"event":"attempt","name":"keep","exit_code":0,"duration_s":0.3}"#.to_vec(),
        br#"{"v":1,"event":"run","name":"keep","status":"succeeded","attempts":2,"exit_code":0,"duration_s":1.5,"ts":1764000000.5}"#.to_vec(),
    ]
}

#[test]
fn counters_survive_a_restart_with_state_file() {
    let dir = TempDir::new("d-state");
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let mut d = start_daemon(&dir, &["--state-file", state_arg]);
    d.send(&state_datagrams());
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 2.0);
    let before = d.scrape();
    // SIGHUP writes the state and keeps running.
    assert!(
        !std::fs::read_to_string(&state).unwrap().contains("keep"),
        "written at start, empty"
    );
    send_signal(d.guard.id(), "HUP");
    assert!(eventually(LONG, || std::fs::read_to_string(&state)
        .is_ok_and(|t| t.contains("\"keep\""))));
    assert_eq!(
        http(
            &d.addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
    send_signal(d.guard.id(), "TERM");
    assert_eq!(d.guard.wait_status(LONG).code(), Some(0));
    assert!(state.exists(), "state written at shutdown");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let d = start_daemon(&dir, &["--state-file", state_arg]);
    let after = d.scrape();
    let keep = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("\"keep\""))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        keep(&before),
        keep(&after),
        "every counter, histogram and timestamp survives"
    );
    assert!(keep(&after).len() > 10);
    assert_eq!(
        sample(
            &after,
            r#"patience_last_run_timestamp_seconds{command="keep",status="succeeded"}"#
        ),
        Some(1764000000.5)
    );
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 3.0);
    // No temp file is left next to the state.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
        "{names:?}"
    );
}

#[test]
fn state_is_written_every_ten_seconds_without_a_signal() {
    let dir = TempDir::new("d-flush");
    let state = dir.join("state.json");
    let mut d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 1.0);
    assert!(!std::fs::read_to_string(&state).unwrap().contains("keep"));
    let written = eventually(Duration::from_secs(25), || {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"keep\""))
    });
    assert!(written, "no periodic write");
    // Killed without a chance to flush: the periodic write is what remains.
    let _ = d.guard.child().kill();
    let _ = d.guard.wait_status(LONG);
    let _ = std::fs::remove_file(&d.socket);
    let d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    assert_eq!(
        sample(
            &d.scrape(),
            r#"patience_runs_total{command="keep",status="succeeded"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_state_file_that_cannot_be_written_stops_the_start() {
    let dir = TempDir::new("d-nostate");
    let sock = dir.join("d.sock");
    let state = dir.join("no/such/dir/state.json");
    let (st, err) = start_fails(&sock, &["--state-file", state.to_str().unwrap()]);
    assert_eq!(st, 1, "{err}");
    assert!(err.contains("cannot write state file"), "{err}");
    assert!(!sock.exists());
    // A directory is not a state file.
    let (st, err) = start_fails(&sock, &["--state-file", dir.path().to_str().unwrap()]);
    assert_eq!(st, 1, "{err}");
    assert!(
        err.contains("is not a regular file") && err.contains("--state-file"),
        "{err}"
    );
}

#[test]
fn a_fifo_or_an_oversized_file_at_the_state_path_stops_the_start_at_once() {
    let dir = TempDir::new("d-fifo");
    let sock = dir.join("d.sock");
    let fifo = dir.join("state.json");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let start = Instant::now();
    let (st, err) = start_fails(&sock, &["--state-file", fifo.to_str().unwrap()]);
    assert_eq!(st, 1, "{err}");
    assert!(
        err.contains("not a regular file") && err.contains("--state-file"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(err.lines().count(), 1, "{err}");
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; 3 << 20]).unwrap();
    let (st, err) = start_fails(
        &sock,
        &["--state-file", big.to_str().unwrap(), "--max-series", "10"],
    );
    assert_eq!(st, 1, "{err}");
    assert!(err.contains("refusing to read it"), "{err}");
}

#[test]
fn a_symlinked_state_file_stays_a_symlink_and_its_target_is_written() {
    let dir = TempDir::new("d-symlink");
    let real_dir = dir.join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let target = real_dir.join("state.json");
    let link = dir.join("state.json");
    std::os::unix::fs::symlink("real/state.json", &link).unwrap();
    let mut d = start_daemon(&dir, &["--state-file", link.to_str().unwrap()]);
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 1.0);
    send_signal(d.guard.id(), "TERM");
    d.guard.wait_status(LONG);
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the link was replaced"
    );
    assert!(std::fs::read_to_string(&target).unwrap().contains("\"keep\""));
    // No temp file left in either directory.
    for d in [dir.path(), real_dir.as_path()] {
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}

#[test]
fn temp_files_left_by_a_crash_are_removed_at_start_and_planted_ones_never_used() {
    let dir = TempDir::new("d-stale");
    let state = dir.join("state.json");
    // What a SIGKILLed daemon (a pid that is no more) left behind.
    let stale = dir.join(".state.json.tmp-2147483646-0-00000000");
    std::fs::write(&stale, "{}").unwrap();
    // What the old predictable name would be for the next daemon: a
    // symlink planted there must never be followed.
    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let mut d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    let planted = dir.join(format!(".state.json.tmp-{}", d.guard.id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    assert!(d.log().contains("removed 1 temp file"), "{}", d.log());
    assert!(!stale.exists());
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 1.0);
    send_signal(d.guard.id(), "HUP");
    assert!(
        eventually(LONG, || d.log().contains("SIGHUP: state written")),
        "{}",
        d.log()
    );
    send_signal(d.guard.id(), "TERM");
    d.guard.wait_status(LONG);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(std::fs::read_to_string(&state).unwrap().contains("\"keep\""));
}

#[test]
fn a_corrupt_state_file_is_set_aside_not_fatal() {
    for garbage in [&b"{\"v\":1,\"buckets\":[1],\"comm"[..], b"\0\0\0\0", b"", b"[]"] {
        let dir = TempDir::new("d-corrupt");
        let state = dir.join("state.json");
        std::fs::write(&state, garbage).unwrap();
        let d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
        assert!(d.log().contains("is not valid"), "{}", d.log());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), garbage, "kept as it was");
        d.send(&state_datagrams());
        d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 1.0);
    }
}

#[test]
fn a_real_time_signal_is_counted_saved_and_loaded_again() {
    let dir = TempDir::new("d-rt");
    let state = dir.join("state.json");
    let args = ["--state-file", state.to_str().unwrap()];
    let mut d = start_daemon(&dir, &args);
    let out =
        run_ok(
            d.patience(&dir)
                .args(["--name", "rt", "--attempts", "1", "--", "sh", "-c", "kill -40 $$"]),
        );
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    let label = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(r#"patience_attempts_total{command="rt""#))
            .map(str::to_string)
    };
    let mut text = String::new();
    assert!(
        eventually(LONG, || {
            text = d.scrape();
            label(&text).is_some()
        }),
        "no attempt counted for signal 40:\n{text}"
    );
    let line = label(&text).unwrap();
    assert!(
        line.contains(r#"exit_code="SIG"#) && line.ends_with(" 1"),
        "{line}"
    );
    send_signal(d.guard.id(), "TERM");
    d.guard.wait_status(LONG);
    let d = start_daemon(&dir, &args);
    assert!(!d.log().contains("not valid"), "{}", d.log());
    assert_eq!(
        label(&d.scrape()).as_deref(),
        Some(line.as_str()),
        "loaded as saved"
    );
}

#[test]
fn absurd_timestamps_and_durations_are_rejected_at_intake() {
    let dir = TempDir::new("d-absurd");
    let d = start_daemon(&dir, &[]);
    let now = unix_now_secs();
    let run = |ts: f64, d: f64| {
        format!(r#"{{"v":1,"event":"run","name":"j","status":"succeeded","duration_s":{d},"ts":{ts}}}"#)
            .into_bytes()
    };
    d.send(&[
        run(now, 1.0),
        run(1e308, 1.0),
        run(now + 3.0 * 86400.0, 1.0),
        run(now, 1e12),
    ]);
    d.expect(
        r#"patienced_datagrams_total{result="rejected",reason="duration"}"#,
        3.0,
    );
    let last = sample(
        &d.scrape(),
        r#"patience_last_run_timestamp_seconds{command="j",status="succeeded"}"#,
    );
    assert!(last.is_some_and(|t| (t - now).abs() < 1.0), "{last:?}");
}

#[test]
fn one_bad_saved_command_never_discards_the_others() {
    let dir = TempDir::new("d-onebad");
    let state = dir.join("state.json");
    let buckets =
        "[0.005,0.01,0.025,0.05,0.1,0.25,0.5,1.0,2.5,5.0,10.0,30.0,60.0,120.0,300.0,600.0,1800.0,3600.0]";
    let counts = format!("[{}1]", "0,".repeat(18));
    let text = format!(
        r#"{{"v":1,"buckets":{buckets},"commands":[
          {{"name":"good","runs":{{"succeeded":{{"count":4,"last":1764000000.0}}}},"attempts":{{"SIG40":2,"SIGRTMIN+6":1}},"run_duration":{{"counts":{counts},"sum":null}}}},
          {{"name":"bad","runs":{{"exploded":{{"count":1,"last":1.0}}}}}},
          {{"name":"also-good","runs":{{"failed":{{"count":2,"last":1764000000.0}}}},"attempt_duration":{{"counts":{counts},"sum":"+Inf"}}}}
        ]}}"#
    );
    std::fs::write(&state, &text).unwrap();
    let d = start_daemon(&dir, &["--state-file", state.to_str().unwrap()]);
    let log = d.log();
    assert!(
        log.contains("left out 1 saved command") && log.contains("unknown status"),
        "{log}"
    );
    let scraped = d.scrape();
    for (series, want) in [
        (r#"patience_runs_total{command="good",status="succeeded"}"#, 4.0),
        (
            r#"patience_attempts_total{command="good",exit_code="SIG40"}"#,
            2.0,
        ),
        (
            r#"patience_attempts_total{command="good",exit_code="SIGRTMIN+6"}"#,
            1.0,
        ),
        (r#"patience_runs_total{command="also-good",status="failed"}"#, 2.0),
    ] {
        assert_eq!(sample(&scraped, series), Some(want), "{series}\n{scraped}");
    }
    assert!(
        scraped.contains("patience_run_duration_seconds_sum{command=\"good\"} +Inf\n"),
        "{scraped}"
    );
    assert!(!scraped.contains("command=\"bad\""));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the file as it was is kept");
    assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), text);
}

fn start_fails(socket: &Path, extra: &[&str]) -> (i32, String) {
    let out = run_ok(
        Command::new(patienced_bin())
            .args(["--no-config", "--listen", "127.0.0.1:0", "--socket"])
            .arg(socket)
            .args(extra),
    );
    (code(&out), stderr(&out))
}

#[test]
fn what_is_not_ours_at_the_socket_path_is_left_alone() {
    let dir = TempDir::new("d-safe");
    // A regular file.
    let file = dir.join("file.sock");
    std::fs::write(&file, "precious").unwrap();
    let (st, err) = start_fails(&file, &[]);
    assert_eq!(st, 1, "{err}");
    assert!(err.contains("not a socket") && err.contains("refusing"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    // A symlink to a socket is not a socket.
    let d = start_daemon(&dir, &[]);
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&d.socket, &link).unwrap();
    let (st, err) = start_fails(&link, &[]);
    assert_eq!(st, 1, "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // A live daemon on the socket is reported and keeps working.
    let (st, err) = start_fails(&d.socket, &[]);
    assert_eq!(st, 1, "{err}");
    assert!(err.contains("already listening"), "{err}");
    d.send(&state_datagrams());
    d.expect(r#"patience_runs_total{command="keep",status="succeeded"}"#, 1.0);
}

#[test]
fn a_socket_path_squatted_by_another_user_names_the_option_to_use_instead() {
    let dir = TempDir::new("d-squat");
    let path = dir.join("squatted.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    if !Command::new("chown")
        .arg("65534")
        .arg(&path)
        .status()
        .unwrap()
        .success()
    {
        eprintln!("NOTICE: cannot chown (not root): skipping");
        return;
    }
    let (st, err) = start_fails(&path, &[]);
    assert_eq!(st, 1, "{err}");
    assert!(
        err.contains("belongs to uid 65534") && err.contains("--socket PATH"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(path.exists(), "another user's socket was removed");
}

#[test]
fn the_socket_mode_is_never_set_through_its_path() {
    if !common::have_strace() {
        return;
    }
    let dir = TempDir::new("d-chmod");
    let sock = dir.join("d.sock");
    let trace = dir.join("trace");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=chmod,fchmodat,lchown,chown,fchownat",
        "-o",
    ])
    .arg(&trace)
    .arg(patienced_bin())
    .args([
        "--no-config",
        "--listen",
        "127.0.0.1:0",
        "--socket-mode",
        "0660",
        "--socket",
    ])
    .arg(&sock);
    let mut d = launch(cmd, &sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // strace's child is patienced: stopped, it ends strace too.
    let strace = d.guard.id();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap();
    let daemon: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    send_signal(daemon, "TERM");
    assert!(d.guard.wait_status(LONG).success());
    let calls = std::fs::read_to_string(&trace).unwrap();
    assert!(!calls.contains("d.sock"), "{calls}");
}

#[test]
fn a_stale_socket_is_replaced_and_modes_are_applied() {
    let dir = TempDir::new("d-stale");
    let path = dir.join("stale.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let d = start_daemon_at(&path, &[]);
    assert!(d.log().contains("removed stale socket"), "{}", d.log());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(d);
    let _ = std::fs::remove_file(&path);
    let d = start_daemon_at(&path, &["--socket-mode", "0660"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn bad_options_and_config_exit_125_with_one_line() {
    let dir = TempDir::new("d-usage");
    let sock = dir.join("u.sock");
    for extra in [
        &["--max-series", "zero"][..],
        &["--socket-mode", "9"],
        &["--listen", "x"],
        &["--bogus"],
    ] {
        let (st, err) = start_fails(&sock, extra);
        assert_eq!(st, 125, "{extra:?}: {err}");
        assert!(err.contains(extra[0]), "{err}");
    }
    let cfg = dir.join("p.toml");
    std::fs::write(&cfg, "[defaults]\nattempts = 2\n[daemon]\nmax-series = -1\n").unwrap();
    let out = run_ok(Command::new(patienced_bin()).arg("--config").arg(&cfg));
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("p.toml:4: [daemon] max-series"),
        "{}",
        stderr(&out)
    );
    assert!(!sock.exists());
    let out = run_ok(Command::new(patienced_bin()).arg("--help"));
    assert_eq!(code(&out), 0);
    assert!(common::stdout(&out).contains("--state-file"));
}

#[test]
fn the_daemon_table_of_a_config_file_is_read() {
    let dir = TempDir::new("d-config");
    let cfg = dir.join("c.toml");
    let sock = dir.join("from-config.sock");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nsocket = \"{}\"\nsocket-mode = \"0640\"\nlisten = \"127.0.0.1:0\"\nmax-series = 7\nbuckets = [0.5, 2]\n",
            sock.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(patienced_bin());
    cmd.arg("--config")
        .arg(&cfg)
        .env_remove("PATIENCE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = Guard::new(cmd.spawn().unwrap());
    let mut line = String::new();
    BufReader::new(guard.child().stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("from-config.sock") && line.contains("0640"),
        "{line}"
    );
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(
            br#"{"v":1,"event":"run","name":"c","status":"failed","duration_s":1}"#,
            &sock,
        )
        .unwrap();
    let mut body = String::new();
    assert!(
        eventually(LONG, || {
            body = http(
                &addr,
                "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .2;
            body.contains(r#"patience_run_duration_seconds_bucket{command="c",le="2"} 1"#)
        }),
        "{body}"
    );
    assert!(!body.contains("le=\"0.005\""), "configured buckets only: {body}");
}

#[test]
fn patience_output_and_status_do_not_change_with_a_daemon() {
    let dir = TempDir::new("d-same");
    let d = start_daemon(&dir, &[]);
    let args = [
        "-a",
        "2",
        "-d",
        "1ms",
        "--name",
        "same",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ];
    let with = run_ok(d.patience(&dir).args(args));
    let without = run_ok(patience(&dir).args(args));
    assert_eq!(code(&with), 4);
    assert_eq!(code(&with), code(&without));
    assert_eq!(with.stdout, without.stdout);
    // Identical but for the time the run took ("0.0s").
    let took = regex_lite::Regex::new(r"\d+\.\ds\)").unwrap();
    let text = |b: &[u8]| took.replace_all(&String::from_utf8_lossy(b), "T)").into_owned();
    assert_eq!(text(&with.stderr), text(&without.stderr));
    assert!(
        text(&with.stderr).contains("failed after 2 attempts (exit code 4, T)"),
        "{}",
        text(&with.stderr)
    );
    d.expect(r#"patience_runs_total{command="same",status="failed"}"#, 1.0);
}

#[test]
fn patience_without_a_daemon_opens_no_socket_and_costs_nothing_measurable() {
    let dir = TempDir::new("d-cost");
    // The second attempt lists patience's descriptors and the system's Unix
    // sockets, after the first attempt's datagram would have been sent.
    let script = "[ \"$PATIENCE_ATTEMPT\" = 2 ] && ls -l /proc/$PPID/fd && cat /proc/net/unix; exit 1";
    // How many unconnected datagram sockets (what the sender would create;
    // signal-hook's pair is a stream, std's spawn may briefly hold a
    // connected datagram pair) patience has open.
    let senders = |cmd: &mut Command| {
        let out = run_ok(cmd.args(["-a", "2", "-d", "1ms", "--", "sh", "-c", script]));
        let listing = common::stdout(&out);
        let inodes: Vec<&str> = listing
            .split("socket:[")
            .skip(1)
            .filter_map(|rest| rest.split(']').next())
            .collect();
        assert!(!inodes.is_empty(), "{listing}");
        listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            // Num RefCount Protocol Flags Type St Inode [Path]
            .filter(|f| f.len() >= 7 && f[4] == "0002" && f[5] == "01" && inodes.contains(&f[6]))
            .count()
    };
    assert_eq!(senders(patience(&dir).arg("--no-metrics")), 0);
    assert_eq!(senders(&mut patience(&dir)), 0, "no daemon: no socket");
    // The same check sees the socket when a daemon exists: it can fail.
    let d = start_daemon(&dir, &[]);
    assert_eq!(senders(&mut d.patience(&dir)), 1);
    drop(d);

    // Timing: no daemon against --no-metrics, interleaved, medians compared.
    let time = |extra: &[&str]| {
        let start = Instant::now();
        let out = run_ok(patience(&dir).args(extra).args(["--", "true"]));
        assert_eq!(code(&out), 0);
        start.elapsed()
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..25 {
        on.push(time(&[]));
        off.push(time(&["--no-metrics"]));
    }
    on.sort();
    off.sort();
    // The lower quartile: what a run costs when the shared machine lets it.
    let (on, off) = (on[6], off[6]);
    assert!(
        on < off + Duration::from_millis(5),
        "no daemon: {on:?} vs --no-metrics {off:?}"
    );
    eprintln!(
        "patience -- true, lower quartile: {on:?} with metrics and no daemon, {off:?} with --no-metrics"
    );
}

#[test]
fn a_stuck_daemon_never_delays_patience() {
    let dir = TempDir::new("d-stuck");
    let d = start_daemon(&dir, &[]);
    send_signal(d.guard.id(), "STOP");
    // Fill the socket's queue; then every send would block, were it blocking.
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    while filler.send_to(b"x", &d.socket).is_ok() {}
    let start = Instant::now();
    for _ in 0..5 {
        let out = run_ok(d.patience(&dir).args(["-a", "2", "-d", "1ms", "--", "false"]));
        assert_eq!(code(&out), 1);
    }
    let took = start.elapsed();
    send_signal(d.guard.id(), "CONT");
    assert!(
        took < Duration::from_secs(5),
        "5 runs took {took:?} with a stuck daemon"
    );
    assert_eq!(
        http(
            &d.addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
}

/// The literal blocks (`.nf` … `.fi`) of a man page, with roff escapes undone.
fn man_examples(page: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(page)).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (line, current.as_mut()) {
            (".nf", None) => current = Some(String::new()),
            (".fi", Some(_)) => blocks.extend(current.take()),
            (l, Some(b)) => {
                b.push_str(&l.replace("\\-", "-").replace("\\(aq", "'").replace("\\(rs", "\\"));
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// `promtool test rules` input for the man page's rules: two hosts scraped
/// every minute, the same `backup` on both. On a:9977 it succeeds every
/// 24 h; on b:9977 it last succeeded at 0 h, so only b's fires at 26 h (a
/// rule without `instance` would let a's success hide it). `new-job` on b
/// has failed since 0 h and never succeeded: it fires once that has lasted
/// 25 h. `nightly` on a fails from 60 m; `slow` on a runs from 0 h and is
/// too long at 7 h; b's daemon cannot be scraped from 101 m.
const FLEET_RULE_TESTS: &str = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'patience_last_run_timestamp_seconds{instance="a:9977",job="patienced",command="backup",status="succeeded"}'
        values: '0x1439 86400x1439'
      - series: 'patience_last_run_timestamp_seconds{instance="b:9977",job="patienced",command="backup",status="succeeded"}'
        values: '0x2879'
      - series: 'patience_runs_total{instance="a:9977",job="patienced",command="backup",status="succeeded"}'
        values: '1x1439 2x1439'
      - series: 'patience_runs_total{instance="a:9977",job="patienced",command="backup",status="failed"}'
        values: '0x2879'
      - series: 'patience_runs_total{instance="b:9977",job="patienced",command="backup",status="succeeded"}'
        values: '1x2879'
      - series: 'patience_runs_total{instance="b:9977",job="patienced",command="backup",status="failed"}'
        values: '0 1x2878'
      - series: 'patience_runs_total{instance="b:9977",job="patienced",command="new-job",status="succeeded"}'
        values: '0x2879'
      - series: 'patience_runs_total{instance="b:9977",job="patienced",command="new-job",status="failed"}'
        values: '1+1x2879'
      - series: 'patience_last_run_exit_code{instance="a:9977",job="patienced",command="nightly"}'
        values: '0x59 3x2820'
      - series: 'patience_last_run_exit_code{instance="b:9977",job="patienced",command="nightly"}'
        values: '0x2879'
      - series: 'patience_running_since_timestamp_seconds{instance="a:9977",job="patienced",command="slow"}'
        values: '0x2879'
      - series: 'up{instance="a:9977",job="patienced"}'
        values: '1x2879'
      - series: 'up{instance="b:9977",job="patienced"}'
        values: '1x100 0x2779'
    alert_rule_test:
      - eval_time: 24h
        alertname: PatienceNoSuccessFor25h
        exp_alerts: []
      - eval_time: 26h
        alertname: PatienceNoSuccessFor25h
        exp_alerts:
          - exp_labels: {instance: "b:9977", job: patienced, command: backup, severity: warning}
            exp_annotations: {summary: "backup on b:9977 has not succeeded for 25 hours"}
      - eval_time: 24h
        alertname: PatienceNeverSucceeded
        exp_alerts: []
      - eval_time: 26h
        alertname: PatienceNeverSucceeded
        exp_alerts:
          - exp_labels: {instance: "b:9977", job: patienced, command: new-job, severity: warning}
            exp_annotations: {summary: "new-job on b:9977 has run for 25 hours without ever succeeding"}
      - eval_time: 30m
        alertname: PatienceJobFailing
        exp_alerts: []
      - eval_time: 70m
        alertname: PatienceJobFailing
        exp_alerts:
          - exp_labels: {instance: "a:9977", job: patienced, command: nightly, severity: warning}
            exp_annotations: {summary: "nightly on a:9977: its latest run exited 3"}
      - eval_time: 5h
        alertname: PatienceRunningTooLong
        exp_alerts: []
      - eval_time: 7h
        alertname: PatienceRunningTooLong
        exp_alerts:
          - exp_labels: {instance: "a:9977", job: patienced, command: slow, severity: warning}
            exp_annotations: {summary: "slow on a:9977 has been running for more than 6 hours"}
      - eval_time: 104m
        alertname: PatiencedDown
        exp_alerts: []
      - eval_time: 110m
        alertname: PatiencedDown
        exp_alerts:
          - exp_labels: {instance: "b:9977", job: patienced, severity: critical}
            exp_annotations: {summary: "patienced on b:9977 cannot be scraped: the alerts of its jobs cannot fire"}
"#;

#[test]
fn the_man_page_examples_pass_prometheus_tools() {
    let blocks = man_examples("patienced.8");
    let find = |start: &str| {
        blocks
            .iter()
            .find(|b| b.starts_with(start))
            .unwrap_or_else(|| panic!("{start}"))
            .clone()
    };
    let (scrape, rules, protocol) = (find("scrape_configs:"), find("groups:"), find("msg="));
    // The protocol example is a valid datagram.
    let msg = protocol.split('\'').nth(1).unwrap();
    let dir = TempDir::new("d-man");
    let d = start_daemon(&dir, &[]);
    d.send(&[msg.as_bytes().to_vec()]);
    d.expect(
        r#"patience_runs_total{command="rsync-home",status="succeeded"}"#,
        1.0,
    );
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    std::fs::write(dir.join("rules.yml"), &rules).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("{scrape}rule_files: [rules.yml]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("test.yml"), FLEET_RULE_TESTS).unwrap();
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "rules.yml"],
        &["test", "rules", "test.yml"],
    ] {
        let out = run_ok(Command::new(&promtool).current_dir(dir.path()).args(args));
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            common::stdout(&out),
            stderr(&out)
        );
        eprintln!(
            "promtool {}:\n{}{}",
            args.join(" "),
            common::stdout(&out),
            stderr(&out)
        );
    }
}

/// A field of /proc/PID/status, in KiB.
fn proc_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// Gives the daemon `names` commands of five series each, names of `len` bytes.
fn fill(d: &Daemon, names: usize, len: usize) -> Vec<String> {
    let names: Vec<String> = (0..names)
        .map(|i| format!("{i:06}-{}", "n".repeat(len - 7)))
        .collect();
    let mut datagrams = Vec::new();
    for name in &names {
        datagrams.push(
            format!(r#"{{"v":1,"event":"attempt","name":"{name}","exit_code":0,"duration_s":0.1}}"#)
                .into_bytes(),
        );
        datagrams.push(format!(r#"{{"v":1,"event":"run","name":"{name}","status":"succeeded","duration_s":0.1,"ts":1764000000}}"#).into_bytes());
    }
    d.send(&datagrams);
    // Seven series each: runs_total born at 0 for succeeded and failed,
    // a timestamp, a histogram and the exit code of runs; one exit code and
    // a histogram of attempts.
    d.expect("patienced_series", (names.len() * 7) as f64);
    names
}

#[test]
fn names_over_256_bytes_are_rejected_as_name() {
    let dir = TempDir::new("d-name-cap");
    let d = start_daemon(&dir, &[]);
    let dgram = |name: &str| {
        format!(r#"{{"v":1,"event":"run","name":"{name}","status":"failed","duration_s":1}}"#).into_bytes()
    };
    let (ok, long) = ("é".repeat(128), "x".repeat(257));
    d.send(&[dgram(&ok), dgram(&long)]);
    d.expect(
        r#"patienced_datagrams_total{result="rejected",reason="name"}"#,
        1.0,
    );
    d.expect(
        &format!(r#"patience_runs_total{{command="{ok}",status="failed"}}"#),
        1.0,
    );
    assert!(!d.scrape().contains(&long));
}

#[test]
fn sixteen_stalled_scrapes_of_10k_series_stay_under_64_mb() {
    let dir = TempDir::new("d-scrape-mem");
    let d = start_daemon(&dir, &[]);
    fill(&d, 1428, 250);
    let pid = d.guard.id();
    let full = d.scrape().len();
    assert!(full > 15_000_000, "a body of {full} bytes");
    // Sixteen clients ask at once and read nothing for a while: a daemon
    // that renders each body whole holds sixteen of them.
    let mut clients: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(&d.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let stalled = proc_kib(pid, "VmRSS:");
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(LONG)).unwrap();
                let mut n = 0u64;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return n,
                        Ok(k) => n += k as u64,
                    }
                }
            })
        })
        .collect();
    for r in readers {
        assert!(r.join().unwrap() as usize > full, "every scrape complete");
    }
    let peak = proc_kib(pid, "VmHWM:");
    assert!(
        stalled < 64 * 1024 && peak < 64 * 1024,
        "RSS {stalled} KiB with 16 stalled scrapes, peak {peak} KiB"
    );
}

#[test]
fn http_1_0_gets_the_exposition_to_the_end_of_the_connection() {
    let dir = TempDir::new("d-http10");
    let d = start_daemon(&dir, &[]);
    let (status, head, body) = http(&d.addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains("chunked") && !lower.contains("content-length"),
        "{head}"
    );
    assert!(
        body.ends_with("patienced_start_time_seconds ") || body.contains("\npatienced_start_time_seconds ")
    );
    assert!(body.ends_with('\n'));
    let (_, head, body) = http(&d.addr, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(body.is_empty(), "{body}");
}

#[test]
fn a_scraper_looping_at_100k_series_makes_intake_lose_no_datagram() {
    let dir = TempDir::new("d-scrape-loss");
    let d = start_daemon(&dir, &["--max-series", "200000"]);
    let names = fill(&d, 14_286, 16);
    let accepted =
        |d: &Daemon| sample(&d.scrape(), r#"patienced_datagrams_total{result="accepted"}"#).unwrap();
    let before = accepted(&d);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (addr, stop) = (d.addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                http(&addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // As patience sends: non-blocking, a full queue is a datagram lost.
    let s = UnixDatagram::unbound().unwrap();
    s.set_nonblocking(true).unwrap();
    let (sent, mut failed) = (1500, 0);
    let start = Instant::now();
    for i in 0..sent {
        let due = start + Duration::from_millis(2 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let name = &names[i % names.len()];
        let dgram = format!(r#"{{"v":1,"event":"attempt","name":"{name}","exit_code":0,"duration_s":0.1}}"#);
        if s.send_to(dgram.as_bytes(), &d.socket).is_err() {
            failed += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    let got = accepted(&d) - before;
    assert!(scrapes >= 2, "only {scrapes} scrapes during the sends");
    // A loaded machine can delay intake's wake-up now and then: a handful
    // of losses are the scheduler's; a render holding intake up loses
    // every datagram sent while it runs.
    assert!(
        failed <= sent / 100 && got >= (sent - sent / 100) as f64,
        "{failed} of {sent} sends failed, {got} accepted, during {scrapes} scrapes"
    );
}

#[test]
fn counters_are_born_at_zero_and_the_last_status_and_runs_in_progress_are_shown() {
    let dir = TempDir::new("d-alerting");
    let state = dir.join("state.json");
    let args = ["--state-file", state.to_str().unwrap()];
    let mut d = start_daemon(&dir, &args);
    // A run in progress is shown from its start until its end.
    let before = unix_now_secs();
    let mut running = Guard::new(
        d.patience(&dir)
            .args(["--name", "slow", "-a", "1", "--", "sh", "-c", "sleep 2; exit 3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let since = r#"patience_running_since_timestamp_seconds{command="slow"}"#;
    let mut text = String::new();
    assert!(
        eventually(LONG, || {
            text = d.scrape();
            sample(&text, since).is_some()
        }),
        "{text}"
    );
    let started = sample(&text, since).unwrap();
    assert!((started - before).abs() < 2.0, "{started} vs {before}");
    // Born at zero with the command's first datagram.
    assert_eq!(
        sample(&text, r#"patience_runs_total{command="slow",status="failed"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"patience_runs_total{command="slow",status="succeeded"}"#),
        Some(0.0)
    );
    assert!(
        !text.contains(r#"patience_last_run_timestamp_seconds{command="slow""#),
        "{text}"
    );
    running.wait_status(LONG);
    d.expect(r#"patience_runs_total{command="slow",status="failed"}"#, 1.0);
    let text = d.scrape();
    assert_eq!(sample(&text, since), None, "{text}");
    assert_eq!(
        sample(&text, r#"patience_last_run_exit_code{command="slow"}"#),
        Some(3.0)
    );
    // The latest run by its end, not by arrival.
    let now = unix_now_secs();
    let run = |status: &str, code: i32, ts: f64| {
        format!(r#"{{"v":1,"event":"run","name":"slow","status":"{status}","exit_code":{code},"duration_s":1,"ts":{ts}}}"#)
            .into_bytes()
    };
    d.send(&[run("succeeded", 0, now + 5.0), run("failed", 7, now - 100.0)]);
    d.expect(r#"patience_runs_total{command="slow",status="failed"}"#, 2.0);
    d.expect(r#"patience_last_run_exit_code{command="slow"}"#, 0.0);
    // A start that no end follows survives a restart, as does the rest.
    // Whole seconds: serde_json's float parsing is not exact to the last bit.
    let start = now.floor();
    d.send(&[
        format!(r#"{{"v":1,"event":"run-start","name":"stuck","pid":4242,"ts":{start}}}"#).into_bytes(),
    ]);
    d.expect(
        r#"patience_running_since_timestamp_seconds{command="stuck"}"#,
        start,
    );
    send_signal(d.guard.id(), "TERM");
    d.guard.wait_status(LONG);
    let d = start_daemon(&dir, &args);
    let text = d.scrape();
    assert_eq!(
        sample(
            &text,
            r#"patience_running_since_timestamp_seconds{command="stuck"}"#
        ),
        Some(start)
    );
    assert_eq!(
        sample(&text, r#"patience_last_run_exit_code{command="slow"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"patience_runs_total{command="stuck",status="failed"}"#),
        Some(0.0)
    );
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &text);
    }
}

#[test]
fn a_command_can_be_deleted_from_loopback_and_stays_deleted() {
    let dir = TempDir::new("d-delete");
    let state = dir.join("state.json");
    let args = ["--state-file", state.to_str().unwrap()];
    let mut d = start_daemon(&dir, &args);
    let run = |name: &str| {
        format!(r#"{{"v":1,"event":"run","name":"{name}","status":"failed","duration_s":1}}"#).into_bytes()
    };
    d.send(&[run("old job/ä"), run("kept")]);
    d.expect(r#"patience_runs_total{command="kept",status="failed"}"#, 1.0);
    let del = |query: &str| {
        http(
            &d.addr,
            &format!("DELETE /metrics{query} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
    };
    d.expect(r#"patience_runs_total{command="old job/ä",status="failed"}"#, 1.0);
    assert_eq!(del("?command=old%20job%2F%C3%A4").0, 200);
    assert_eq!(del("?command=old%20job%2F%C3%A4").0, 404);
    assert_eq!(del("").0, 400);
    assert_eq!(del("?command=%zz").0, 400);
    let text = d.scrape();
    assert!(!text.contains("old job"), "{text}");
    assert!(text.contains(r#"command="kept""#));
    assert_eq!(sample(&text, "patienced_series"), Some(5.0));
    assert!(d.log().contains(r#"removed command "old job/ä""#), "{}", d.log());
    send_signal(d.guard.id(), "TERM");
    d.guard.wait_status(LONG);
    let d = start_daemon(&dir, &args);
    let text = d.scrape();
    assert!(
        !text.contains("old job") && text.contains(r#"command="kept""#),
        "{text}"
    );
    // Not from another address: patienced has no authentication.
    let Some(ip) = Command::new("hostname")
        .arg("-I")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
                .map(str::to_string)
        })
    else {
        eprintln!("NOTICE: no non-loopback IPv4 address: the 403 check is skipped");
        return;
    };
    let dir2 = TempDir::new("d-delete-remote");
    let wide = start_daemon(&dir2, &["--listen", "0.0.0.0:0"]);
    let port = wide.addr.rsplit(':').next().unwrap();
    wide.send(&[run("kept")]);
    wide.expect(r#"patience_runs_total{command="kept",status="failed"}"#, 1.0);
    let (status, _, _) = http(
        &format!("{ip}:{port}"),
        "DELETE /metrics?command=kept HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(status, 403);
    wide.expect(r#"patience_runs_total{command="kept",status="failed"}"#, 1.0);
}

#[test]
fn series_ttl_retires_commands_not_heard_from_at_start_and_while_running() {
    let dir = TempDir::new("d-ttl");
    let state = dir.join("state.json");
    let now = unix_now_secs();
    let buckets =
        "[0.005,0.01,0.025,0.05,0.1,0.25,0.5,1.0,2.5,5.0,10.0,30.0,60.0,120.0,300.0,600.0,1800.0,3600.0]";
    std::fs::write(
        &state,
        format!(
            r#"{{"v":1,"buckets":{buckets},"commands":[
              {{"name":"renamed-long-ago","runs":{{"failed":{{"count":1,"last":1.0}}}},"seen":{}}},
              {{"name":"recent","runs":{{"failed":{{"count":1,"last":1.0}}}},"seen":{now}}}
            ]}}"#,
            now - 40.0 * 86400.0
        ),
    )
    .unwrap();
    let d = start_daemon(
        &dir,
        &["--state-file", state.to_str().unwrap(), "--series-ttl", "30d"],
    );
    assert!(
        d.log()
            .contains("left out 1 saved command not heard from for 30d"),
        "{}",
        d.log()
    );
    let text = d.scrape();
    assert!(
        !text.contains("renamed-long-ago") && text.contains(r#"command="recent""#),
        "{text}"
    );
    drop(d);
    // While running: retired at the next housekeeping (every 10 s).
    let dir = TempDir::new("d-ttl2");
    let d = start_daemon(&dir, &["--series-ttl", "2s"]);
    d.send(&[br#"{"v":1,"event":"run","name":"brief","status":"failed","duration_s":1}"#.to_vec()]);
    d.expect(r#"patience_runs_total{command="brief",status="failed"}"#, 1.0);
    assert!(eventually(Duration::from_secs(25), || !d
        .scrape()
        .contains("brief")));
    d.expect("patienced_series", 0.0);
    assert!(
        d.log().contains("retired 1 command not heard from for 2s"),
        "{}",
        d.log()
    );
}

#[test]
fn dry_run_says_which_socket_and_whether_a_daemon_answers() {
    let dir = TempDir::new("d-dry");
    let dry = |socket: &Path| {
        let out = run_ok(
            patience(&dir)
                .env("PATIENCE_SOCKET", socket)
                .args(["--dry-run", "true"]),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("daemon: "))
            .unwrap_or_else(|| panic!("no daemon line:\n{text}"))
            .to_string()
    };
    let d = start_daemon(&dir, &[]);
    let line = dry(&d.socket);
    assert_eq!(line, format!("a daemon answers at {}", d.socket.display()));
    drop(d);
    let stale = dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(dry(&stale).starts_with(&format!("none answers at {}", stale.display())));
    let missing = dir.join("missing.sock");
    assert_eq!(
        dry(&missing),
        format!(
            "no socket found (looked at {}): nothing is sent",
            missing.display()
        )
    );
    let file = dir.join("file.sock");
    std::fs::write(&file, "").unwrap();
    assert!(dry(&file).contains("is not a socket: nothing is sent"));
}

#[test]
fn textfile_dir_writes_counters_that_keep_counting_for_node_exporter() {
    let dir = TempDir::new("d-textfile");
    let out_dir = dir.join("textfile");
    std::fs::create_dir(&out_dir).unwrap();
    let run = |args: &[&str]| {
        let mut c = patience(&dir);
        c.args([
            "--textfile-dir",
            out_dir.to_str().unwrap(),
            "--name",
            "nightly/backup",
            "-d",
            "0",
        ])
        .args(args);
        run_ok(&mut c)
    };
    let out = run(&["-a", "2", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "the exit status is the run's: {}", stderr(&out));
    let out = run(&["--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let prom = out_dir.join("nightly_backup.prom");
    let text = std::fs::read_to_string(&prom).unwrap();
    for (series, want) in [
        (
            r#"patience_runs_total{command="nightly/backup",status="failed"}"#,
            1.0,
        ),
        (
            r#"patience_runs_total{command="nightly/backup",status="succeeded"}"#,
            1.0,
        ),
        (
            r#"patience_attempts_total{command="nightly/backup",exit_code="3"}"#,
            2.0,
        ),
        (
            r#"patience_attempts_total{command="nightly/backup",exit_code="0"}"#,
            1.0,
        ),
        (
            r#"patience_run_duration_seconds_count{command="nightly/backup"}"#,
            2.0,
        ),
        (r#"patience_last_run_exit_code{command="nightly/backup"}"#, 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
    }
    assert!(!text.contains("patienced_"), "no daemon families in a textfile");
    // Only the .prom file is visible to the collector; no temp file is left.
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".nightly_backup.prom.lock",
            ".nightly_backup.prom.state",
            "nightly_backup.prom"
        ]
    );
    if let Some(promtool) = prometheus_tool("promtool") {
        check_with_promtool(&promtool, &text);
    }
    // A directory that is not there is found before the run.
    let out = run(&["--textfile-dir", "/nonexistent/dir", "--", "true"]);
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("--textfile-dir /nonexistent/dir"),
        "{}",
        stderr(&out)
    );
}

/// The HTTP request of Prometheus's instant query API for `query`.
fn prometheus_query(query: &str) -> String {
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}
