//! Readiness probes that poll: `ready-command` (exit 0, in its own process
//! group with the service's environment and directory, killed with its
//! group after `ready-probe-timeout`), `ready-tcp` (a connection) and
//! `ready-http` (an HTTP/1.1 GET answered 2xx or 3xx). Each runs in a
//! thread of its own for one attempt of one service, after `ready-delay`,
//! every `ready-interval`, until ready or cancelled (the attempt ended); it
//! tells the supervisor once. [`check`] is one such check, which the
//! health checks (`health`) run too.
//!
//! A probe command is a child of the supervisor, so in init mode its exit
//! comes through the run's `Reaper` (tracked, as the shims are): the
//! supervisor hands it back through `exits`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::reaper::Reaper;
use crate::sys::ExitKind;

use super::file::{Check, HttpUrl, Ready};
use super::supervisor::Msg;

/// Where the supervisor sends a probe command's exit.
pub type Exits = Arc<Mutex<HashMap<i32, Sender<ExitKind>>>>;

/// One probe's work.
pub struct Probe {
    pub service: usize,
    pub kind: Ready,
    pub env: Vec<(OsString, OsString)>,
    pub clear_env: bool,
    pub cwd: Option<PathBuf>,
    pub delay: Duration,
    pub interval: Duration,
    pub probe_timeout: Duration,
    /// The attempt this probe is for; a different value cancels it.
    pub generation: u64,
    pub current: Arc<AtomicU64>,
}

/// Where a probe command runs: the service's environment and directory.
pub struct ProbeEnv<'a> {
    pub vars: &'a [(OsString, OsString)],
    pub clear: bool,
    pub cwd: Option<&'a Path>,
}

/// Starts the probe's thread.
pub fn spawn(p: Probe, reaper: Arc<Reaper>, exits: Exits, tx: Sender<Msg>) {
    let _ = std::thread::Builder::new().name("probe".into()).spawn(move || {
        let live = || p.current.load(Ordering::Acquire) == p.generation;
        let check = match &p.kind {
            Ready::Tcp(addr) => Check::Tcp(addr.clone()),
            Ready::Command(argv) => Check::Command(argv.clone()),
            Ready::Http(url) => Check::Http(url.clone()),
            Ready::Pattern(_) | Ready::Fd(_) | Ready::Notify => return,
        };
        let env = ProbeEnv {
            vars: &p.env,
            clear: p.clear_env,
            cwd: p.cwd.as_deref(),
        };
        std::thread::sleep(p.delay);
        while live() {
            let ok = self::check(&check, &env, p.probe_timeout, &reaper, &exits).is_ok();
            if ok && live() {
                let _ = tx.send(Msg::ProbeReady(p.service, p.generation));
                return;
            }
            std::thread::sleep(p.interval);
        }
    });
}

/// Runs one check within `timeout`: Ok, or why it failed ("exit code 1",
/// "HTTP 503", "connection refused", "timed out after 5s").
pub fn check(
    check: &Check,
    env: &ProbeEnv<'_>,
    timeout: Duration,
    reaper: &Reaper,
    exits: &Exits,
) -> Result<(), String> {
    match check {
        Check::Tcp(addr) => tcp(addr, timeout),
        Check::Http(url) => http(url, timeout),
        Check::Command(argv) => command(env, argv, timeout, reaper, exits),
    }
}

/// An io::Error without its "(os error N)".
fn why(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text.to_lowercase(),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", crate::duration::format(timeout))
}

/// Connects to the first address of `host`/`port` that answers, within
/// what is left until `deadline`.
fn connect(host: &str, port: u16, deadline: Instant, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {}", why(&e)))?;
    let mut last = format!("no address for {host}");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(timeout));
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = timed_out(timeout),
            Err(e) => last = format!("{}: {}", a, why(&e)),
        }
    }
    Err(last)
}

fn tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("invalid address {addr}"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| format!("invalid address {addr}"))?;
    connect(host, port, Instant::now() + timeout, timeout).map(drop)
}

/// An HTTP/1.1 GET of `url`: Ok for a 2xx or 3xx status. Only the status
/// line is read; the connection is closed after it.
fn http(url: &HttpUrl, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(url.connect_host(), url.port, deadline, timeout)?;
    let host = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: patience\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    let left = |d: Instant| {
        let l = d.saturating_duration_since(Instant::now());
        (!l.is_zero()).then_some(l).ok_or_else(|| timed_out(timeout))
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(timeout),
        _ => why(&e),
    };
    stream.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is short; 8 KiB without one is no HTTP server.
    while !head.contains(&b'\n') && head.len() < 8192 {
        stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        match stream.read(&mut buf).map_err(io)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let code = match (words.next(), words.next()) {
        (Some(v), Some(c)) if v.starts_with("HTTP/") => c.parse::<u16>().ok(),
        _ => None,
    };
    match code {
        Some(200..=399) => Ok(()),
        Some(c) => Err(format!("HTTP {c}")),
        None if head.is_empty() => Err("the connection was closed without an answer".into()),
        None => Err("not an HTTP answer".into()),
    }
}

fn command(
    env: &ProbeEnv<'_>,
    argv: &[OsString],
    timeout: Duration,
    reaper: &Reaper,
    exits: &Exits,
) -> Result<(), String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if env.clear {
        cmd.env_clear();
    }
    // patience's own NOTIFY_SOCKET is for patience alone.
    cmd.env_remove("NOTIFY_SOCKET");
    cmd.envs(env.vars.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = env.cwd {
        cmd.current_dir(dir);
    }
    let (tx, rx) = mpsc::channel();
    // The lock is held across the spawn so the exit cannot be forwarded
    // before the channel is in place.
    let mut table = exits.lock().unwrap_or_else(|e| e.into_inner());
    let child = match reaper.spawn_tracked(&mut cmd) {
        Ok(c) => c,
        Err(e) => return Err(format!("cannot run {}: {}", argv[0].to_string_lossy(), why(&e))),
    };
    let pid = child.id() as i32;
    drop(child);
    table.insert(pid, tx);
    drop(table);
    let deadline = Instant::now() + timeout;
    let exit = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    // Whatever it left in its group goes with it; after a timeout, it too.
    let _ = crate::sys::kill_group(pid, libc::SIGKILL);
    if exit.is_err() {
        let _ = rx.recv();
    }
    reaper.reap_tracked(pid);
    match exit {
        Ok(ExitKind::Code(0)) => Ok(()),
        Ok(ExitKind::Code(c)) => Err(format!("exit code {c}")),
        Ok(ExitKind::Signal(s)) => Err(format!("killed by {}", crate::signals::name(s))),
        Err(_) => Err(timed_out(timeout)),
    }
}
