//! The sd_notify protocol, both ways (sd_notify(3)).
//!
//! Upward ([`Upward`]): when systemd (or anything speaking its protocol)
//! runs `patience --services` with `NOTIFY_SOCKET`, the supervisor sends
//! `READY=1` once every service it started is ready or succeeded,
//! `STATUS=` as the counts of states change, `STOPPING=1` at shutdown, and
//! `WATCHDOG=1` every half `WATCHDOG_USEC`. The services never inherit
//! that socket (the shims' and probes' environments drop it).
//!
//! Downward ([`Sockets`]): a service with `ready-notify` gets a datagram
//! socket of its own, in a private 0700 directory of the supervisor's,
//! named by its `NOTIFY_SOCKET`; a thread per service reads it and tells
//! the supervisor of `READY=1` and `STATUS=` lines.
//!
//! s6's protocol, its cousin, is here too ([`watch_ready_fd`]): a service
//! with `ready-fd = N` writes a newline on descriptor N when it is ready.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::supervisor::Msg;

/// What a service said on its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
}

/// The notices of one datagram, in order: `READY=1` and `STATUS=TEXT`
/// lines; every other assignment is ignored.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let text = String::from_utf8_lossy(datagram);
    text.split('\n')
        .filter_map(|line| match line.split_once('=') {
            Some(("READY", "1")) => Some(Notice::Ready),
            Some(("STATUS", s)) => Some(Notice::Status(s.to_string())),
            _ => None,
        })
        .collect()
}

/// The address `NOTIFY_SOCKET` names: a path, or `@NAME` in the abstract
/// namespace.
fn address(value: &str) -> Option<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).ok()
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value).ok()
    } else {
        None
    }
}

/// patience's own link to its service manager.
pub struct Upward {
    socket: UnixDatagram,
    to: SocketAddr,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    ready_sent: bool,
    status: String,
}

impl Upward {
    /// The link when `NOTIFY_SOCKET` names a socket; None otherwise (or
    /// when no socket can be made: sd_notify is best effort).
    pub fn from_env() -> Option<Upward> {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        let to = address(&value)?;
        let socket = UnixDatagram::unbound().ok()?;
        // WATCHDOG_PID, when set, names the process the watchdog is for.
        let ours = std::env::var("WATCHDOG_PID")
            .map(|p| p.parse::<u32>().ok() == Some(std::process::id()))
            .unwrap_or(true);
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Some(Upward {
            socket,
            to,
            watchdog,
            next_watchdog: watchdog.map(|w| Instant::now() + w),
            ready_sent: false,
            status: String::new(),
        })
    }

    fn send(&self, text: &str) {
        let _ = self.socket.send_to_addr(text.as_bytes(), &self.to);
    }

    /// The supervisor's view after a turn of its loop: `settled` when
    /// every service it started is ready or done, and the status line.
    pub fn update(&mut self, settled: bool, status: String) {
        let mut msg = String::new();
        if status != self.status {
            msg.push_str(&format!("STATUS={status}\n"));
            self.status = status;
        }
        if settled && !self.ready_sent {
            self.ready_sent = true;
            msg.push_str("READY=1\n");
        }
        if !msg.is_empty() {
            self.send(&msg);
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&mut self) {
        self.status = "stopping".into();
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }

    /// When the next `WATCHDOG=1` is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.next_watchdog
    }

    /// Sends `WATCHDOG=1` if it is due.
    pub fn tick(&mut self, now: Instant) {
        if let (Some(at), Some(every)) = (self.next_watchdog, self.watchdog) {
            if at <= now {
                self.send("WATCHDOG=1\n");
                self.next_watchdog = Some(now + every);
            }
        }
    }
}

/// The services' sockets: one private directory, removed with its
/// sockets when dropped.
pub struct Sockets {
    dir: PathBuf,
}

impl Sockets {
    /// Creates the directory, 0700, under the runtime or temp directory.
    pub fn new() -> std::io::Result<Sockets> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for n in 0..16u32 {
            let dir = base.join(format!(
                "patience-notify-{}-{:x}",
                std::process::id(),
                seed.wrapping_add(n)
            ));
            // create (not create_all): it must be new, and ours.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Sockets { dir }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no directory")))
    }

    /// Binds service `index`'s socket and starts the thread that reads
    /// it; returns the path for its `NOTIFY_SOCKET`. The socket lives as
    /// long as the supervisor, across the service's attempts and runs.
    pub fn bind(&self, index: usize, tx: Sender<Msg>) -> std::io::Result<PathBuf> {
        let path = self.dir.join(format!("{index}.sock"));
        let socket = UnixDatagram::bind(&path)?;
        std::thread::Builder::new().name("notify".into()).spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                for notice in parse(&buf[..n]) {
                    if tx.send(Msg::Notified(index, notice)).is_err() {
                        return;
                    }
                }
            }
        })?;
        Ok(path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes the directories of supervisors that died without removing
/// theirs (SIGKILL): ours by owner, of a pid that no longer runs.
fn remove_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("patience-notify-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // symlink_metadata: a symbolic link of that name is never followed.
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.is_dir() && m.uid() == crate::sys::geteuid());
        if ours && !crate::sys::process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the read end of a `ready-fd` pipe until every writer is gone
/// (the shim has exited); each newline is a `READY=1`.
pub fn watch_ready_fd(
    service: usize,
    read_end: std::os::fd::OwnedFd,
    tx: Sender<Msg>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ready-fd".into())
        .spawn(move || {
            let mut pipe = std::fs::File::from(read_end);
            let mut buf = [0u8; 512];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                for _ in buf[..n].iter().filter(|&&b| b == b'\n') {
                    if tx.send(Msg::Notified(service, Notice::Ready)).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_give_ready_and_status_in_order() {
        assert_eq!(
            parse(b"STATUS=loading\nMAINPID=4\nREADY=1\n"),
            vec![Notice::Status("loading".into()), Notice::Ready]
        );
        assert_eq!(parse(b"READY=0\nWATCHDOG=1"), vec![]);
        assert!(address("relative").is_none());
        assert!(address("/run/x.sock").is_some() && address("@abstract").is_some());
    }
}
