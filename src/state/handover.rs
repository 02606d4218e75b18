//! Handing a freed slot over at once (`--slot-wait`): a run waiting for a
//! slot sleeps on a lock that the holder's end releases, instead of polling
//! the state file.
//!
//! While it holds a slot of key file name `K`, a run keeps an exclusive
//! `flock` on `K.slot.PID`, a file of its own (close-on-exec, so the
//! command never inherits it, and a daemonizing command cannot keep it). It
//! takes the lock before it appears among the holders in the state file,
//! and when it gives the slot back it first writes the state, then removes
//! the file and closes it. A waiter watches each holder it saw: a helper
//! thread opens the holder's file and blocks on its lock. Whatever way the
//! holder ends — giving the slot back, SIGKILL, a crash — the kernel
//! releases the lock, the thread wakes the waiter, and the waiter checks
//! the state again. A file already gone means the slot was already given
//! back: the waiter is woken at once. A holder whose file cannot be waited
//! on (it could not be made; a dead holder not yet reaped, which still
//! counts as alive) is only found by the waiter's slow periodic check.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::{self, OpenMode};

/// Called by a watching thread when the holder it watched let go.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// How long a new holder retries its lock while a waiter of a dead
/// predecessor with the same (recycled) PID holds it for a moment.
const TAKE_SPIN: Duration = Duration::from_millis(5);

/// The lock file of the holder `pid` of key file name `stem`.
pub fn holder_path(dir: &Path, stem: &str, pid: i32) -> PathBuf {
    dir.join(format!("{stem}.slot.{pid}"))
}

/// The lock a slot holder keeps while it holds its slot; dropping it
/// removes the file and releases the lock, which wakes the waiters.
pub struct HolderLock {
    path: PathBuf,
    _file: File,
}

impl HolderLock {
    /// Creates and locks this process's holder file. None when that cannot
    /// be done (a full disk, a file not ours): the run still takes its
    /// slot, and waiters find it free by their periodic check.
    pub fn take(dir: &Path, stem: &str, pid: i32) -> Option<HolderLock> {
        let path = holder_path(dir, stem, pid);
        // A waiter that found a dead holder's file removes it while it
        // holds the lock: locked and still linked is ours for good.
        for _ in 0..3 {
            let file = sys::open_private(&path, OpenMode::Lock).ok()?;
            let meta = file.metadata().ok()?;
            if !meta.is_file() || meta.uid() != sys::getuid() {
                return None;
            }
            let until = Instant::now() + TAKE_SPIN;
            loop {
                match sys::try_lock_exclusive(&file) {
                    Ok(true) => break,
                    Ok(false) if Instant::now() < until => std::thread::yield_now(),
                    _ => return None,
                }
            }
            if file.metadata().ok()?.nlink() > 0 {
                return Some(HolderLock { path, _file: file });
            }
        }
        None
    }
}

impl Drop for HolderLock {
    fn drop(&mut self) {
        // Removed before the file is closed: a waiter that opens the path
        // later finds nothing and knows the slot is back.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts a thread that calls `wake` when holder `pid` lets go of its
/// lock, or at once if it has none. The thread is never joined: it ends
/// when the holder does, and with the process at the latest.
pub fn watch(dir: &Path, stem: &str, pid: i32, wake: Waker) -> io::Result<()> {
    let path = holder_path(dir, stem, pid);
    std::thread::Builder::new()
        .name("slot-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if let Ok(file) = sys::open_private(&path, OpenMode::Read) {
                let ours = file
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.uid() == sys::getuid());
                if ours && sys::lock_exclusive(&file).is_ok() {
                    // Still there once the lock is ours: its holder died
                    // without removing it. Nobody else can hold it now.
                    if file.metadata().is_ok_and(|m| m.nlink() > 0) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            wake();
        })
        .map(drop)
}

/// Removes holder `pid`'s file if nobody holds its lock: its holder died
/// without removing it. Called by a waiter that got the slot, since its
/// watching thread may not have run yet when the slot was found free by
/// the periodic check, and ends with the process.
pub fn remove_abandoned(dir: &Path, stem: &str, pid: i32) {
    let path = holder_path(dir, stem, pid);
    let Ok(file) = sys::open_private(&path, OpenMode::Read) else {
        return;
    };
    let ours = file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.uid() == sys::getuid() && m.nlink() > 0);
    if ours && sys::try_lock_exclusive(&file).is_ok_and(|locked| locked) {
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("patience-handover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn waker() -> (Waker, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        (
            Arc::new(move || {
                let _ = tx.lock().unwrap().send(());
            }),
            rx,
        )
    }

    #[test]
    fn a_watcher_wakes_when_the_holder_lets_go_and_not_before() {
        let d = dir("release");
        let held = HolderLock::take(&d.0, "k", 42).expect("a fresh holder file");
        let (wake, rx) = waker();
        watch(&d.0, "k", 42, wake).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "woken while held"
        );
        let released = Instant::now();
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).expect("woken");
        assert!(released.elapsed() < Duration::from_secs(1));
        assert!(!holder_path(&d.0, "k", 42).exists());
    }

    #[test]
    fn a_missing_file_wakes_at_once_and_a_dead_holders_file_is_removed() {
        let d = dir("stale");
        let (wake, rx) = waker();
        watch(&d.0, "k", 7, wake.clone()).unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("no file: woken at once");
        // A holder that died left its file, unlocked: woken, and it goes.
        std::fs::write(holder_path(&d.0, "k", 8), b"").unwrap();
        watch(&d.0, "k", 8, wake).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("woken");
        assert!(!holder_path(&d.0, "k", 8).exists());
        // The PID comes back: the file is made again and held.
        let again = HolderLock::take(&d.0, "k", 8).expect("taken again");
        assert!(holder_path(&d.0, "k", 8).exists());
        drop(again);
    }
}
