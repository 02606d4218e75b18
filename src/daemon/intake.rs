//! The Unix datagram socket: binding it safely and the thread that reads
//! datagrams into the aggregate.
//!
//! Binding never destroys what is not ours: an existing path is removed only
//! when it is a socket, owned by our user, that nobody is bound to any more
//! (a connect is refused). A live daemon already there is reported. The
//! socket is created under a umask that gives it the requested mode from
//! the first instant, and removed at exit only if it is still the one we
//! created.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{log, unix_now, Shared};
use crate::metrics::{self, MAX_DATAGRAM};
use crate::sys;

/// How often the intake thread looks at the stop flag when no datagram comes.
const POLL: Duration = Duration::from_millis(200);

/// How far ahead of the daemon's clock a `ts` may be.
const FUTURE: f64 = 86_400.0;

/// How soon it tries again to record datagrams it holds because the
/// aggregate was locked.
const RETRY: Duration = Duration::from_millis(1);

/// At most this many datagrams are held that way; then it waits for the lock.
const MAX_PENDING: usize = 100_000;

/// The daemon's bound socket.
pub struct Socket {
    pub socket: UnixDatagram,
    pub path: PathBuf,
    /// Device and inode of what we bound, to remove only that at exit.
    id: (u64, u64),
}

/// Binds the datagram socket at `path` with permissions `mode`. The error
/// is one line for the log.
pub fn bind(path: &Path, mode: u32) -> Result<Socket, String> {
    let shown = path.display();
    // Said with every refusal: in a shared directory such as /tmp, another
    // user may have taken the default path first.
    let instead = "choose another path with --socket PATH (or $PATIENCE_SOCKET)";
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect socket path {shown}: {e}")),
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "{shown} exists and is not a socket; refusing to remove it: {instead}"
                ));
            }
            if meta.uid() != sys::geteuid() {
                return Err(format!(
                    "{shown} belongs to uid {}, not to this user; refusing to remove it: {instead}",
                    meta.uid()
                ));
            }
            let probe = UnixDatagram::unbound().map_err(|e| format!("cannot create a socket: {e}"))?;
            match probe.connect(path) {
                Ok(()) => {
                    return Err(format!(
                        "another patienced is already listening on {shown}; to run a second one, {instead}"
                    ))
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(|e| format!("cannot remove stale socket {shown}: {e}"))?;
                    log(&format!("removed stale socket {shown}"));
                }
                Err(e) => {
                    return Err(format!(
                        "{shown} is in use by another program ({e}); refusing to remove it: {instead}"
                    ))
                }
            }
        }
    }
    // The mode comes from the umask alone: bind(2) creates the socket file
    // with 0777 less the umask, which is then exactly `mode`, from its first
    // instant. Nothing is changed through the path afterwards, which another
    // user who can write to the directory could have swapped by then.
    let old = sys::umask(0o777 & !mode);
    let bound = UnixDatagram::bind(path);
    sys::umask(old);
    let socket = bound.map_err(|e| format!("cannot bind socket {shown}: {e}"))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    socket
        .set_read_timeout(Some(POLL))
        .map_err(|e| format!("cannot set a timeout on {shown}: {e}"))?;
    Ok(Socket {
        socket,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

impl Socket {
    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// Reads datagrams into the aggregate until `stop` is set. Rejections
    /// are logged at most once every ten seconds, with a count.
    pub fn receive(&self, shared: &Shared, stop: &AtomicBool) {
        // One byte more than allowed, so that an oversized datagram is seen
        // as such rather than silently cut to a valid-looking prefix.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut last_log: Option<Instant> = None;
        let mut unlogged = 0u64;
        // Datagrams received while the aggregate was locked: intake never
        // waits for a snapshot, it keeps reading the socket.
        let mut pending = Vec::new();
        let mut waiting = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                shared.record_all(&mut pending, true);
                return;
            }
            let full = pending.len() >= MAX_PENDING;
            let held = !shared.record_all(&mut pending, full);
            if held != waiting {
                waiting = held;
                let _ = self
                    .socket
                    .set_read_timeout(Some(if held { RETRY } else { POLL }));
            }
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    log(&format!("cannot receive from {}: {e}", self.path.display()));
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let now = unix_now();
            let decoded = metrics::decode(&buf[..n]).and_then(|e| match e.ts() {
                // A clock a day ahead is not a clock: such a run would stay
                // the latest for a day and hide the real ones.
                Some(ts) if ts > now + FUTURE => Err(metrics::Reject::Duration),
                _ => Ok(e),
            });
            let reason = decoded.as_ref().err().copied();
            pending.push((decoded, now));
            shared.record_all(&mut pending, false);
            if let Some(r) = reason {
                unlogged += 1;
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    log(&format!(
                        "rejected {unlogged} datagram{} (latest: {})",
                        if unlogged == 1 { "" } else { "s" },
                        r.as_str()
                    ));
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
            }
        }
    }
}
