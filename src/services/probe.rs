//! Readiness probes that poll: `ready-command` (exit 0, in its own process
//! group with the service's environment and directory, killed with its
//! group after `ready-probe-timeout`) and `ready-tcp` (a connection). Each
//! runs in a thread of its own for one attempt of one service, after
//! `ready-delay`, every `ready-interval`, until ready or cancelled (the
//! attempt ended); it tells the supervisor once.
//!
//! A probe command is a child of the supervisor, so in init mode its exit
//! comes through the run's `Reaper` (tracked, as the shims are): the
//! supervisor hands it back through `exits`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::reaper::Reaper;
use crate::sys::ExitKind;

use super::file::Ready;
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

/// Starts the probe's thread.
pub fn spawn(p: Probe, reaper: Arc<Reaper>, exits: Exits, tx: Sender<Msg>) {
    let _ = std::thread::Builder::new().name("probe".into()).spawn(move || {
        let live = || p.current.load(Ordering::Acquire) == p.generation;
        std::thread::sleep(p.delay);
        while live() {
            let ok = match &p.kind {
                Ready::Tcp(addr) => tcp(addr, p.probe_timeout),
                Ready::Command(argv) => command(&p, argv, &reaper, &exits),
                Ready::Pattern(_) => return,
            };
            if ok && live() {
                let _ = tx.send(Msg::ProbeReady(p.service, p.generation));
                return;
            }
            std::thread::sleep(p.interval);
        }
    });
}

fn tcp(addr: &str, timeout: Duration) -> bool {
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, timeout).is_ok())
}

fn command(p: &Probe, argv: &[OsString], reaper: &Reaper, exits: &Exits) -> bool {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if p.clear_env {
        cmd.env_clear();
    }
    cmd.envs(p.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &p.cwd {
        cmd.current_dir(dir);
    }
    let (tx, rx) = mpsc::channel();
    // The lock is held across the spawn so the exit cannot be forwarded
    // before the channel is in place.
    let mut table = exits.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(child) = reaper.spawn_tracked(&mut cmd) else {
        return false;
    };
    let pid = child.id() as i32;
    drop(child);
    table.insert(pid, tx);
    drop(table);
    let deadline = Instant::now() + p.probe_timeout;
    let exit = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    let ok = matches!(exit, Ok(ExitKind::Code(0)));
    // Whatever it left in its group goes with it; after a timeout, it too.
    let _ = crate::sys::kill_group(pid, libc::SIGKILL);
    if exit.is_err() {
        let _ = rx.recv();
    }
    reaper.reap_tracked(pid);
    ok
}
