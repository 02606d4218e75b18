//! The state file of one key: its versioned JSON schema, and the
//! read-modify-write that every process of the key goes through.
//!
//! Files in the state directory, for a key whose safe file name is `K`:
//! - `K.lock`: the lock. Never renamed or unlinked, so every process locks
//!   the same inode (locking the data file itself breaks as soon as it is
//!   replaced by a rename: portalocker#115). Created once, kept for ever.
//! - `K.json`: the state, always replaced whole: written to `K.json.tmp`,
//!   fsynced, renamed over, then the directory is fsynced, so a crash or a
//!   SIGKILL at any moment leaves the old state or the new one, never a mix.
//!
//! An update takes `flock` on the lock file, polling for at most
//! `LOCK_TIMEOUT`: a lock that stays taken (a stuck process, NFS returning
//! ENOLCK) makes patience run without its shared state and say so — a
//! cron job must never hang on a lock. A state file that cannot be parsed
//! (empty, truncated, NUL-filled, another version) is reported and replaced
//! by a fresh state: it never stops a run. Every file is opened with
//! O_NOFOLLOW and O_NONBLOCK and checked with fstat, so a symlink or a FIFO
//! planted in the directory is never followed, written through or blocked on.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::breaker::Breaker;
use super::ratelimit::Bucket;
use super::slots::Slots;
use crate::sys::{self, OpenMode};

/// The schema version written in every state file.
pub const VERSION: u32 = 1;

/// How long an update waits for the key's lock before running without it.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a contended lock is retried by yielding before a helper thread
/// waits for it in the kernel's queue.
const SPIN: Duration = Duration::from_millis(1);

/// A state file larger than this is not ours: it is treated as corrupt.
const MAX_FILE: u64 = 1 << 20;

/// Everything stored for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The key as given (the file name is its escaped form).
    #[serde(default)]
    pub key: String,
    /// Wall clock of the last write, ns since the epoch.
    #[serde(default)]
    pub updated_ns: u64,
    #[serde(default)]
    pub breaker: Breaker,
    #[serde(default)]
    pub bucket: Bucket,
    #[serde(default)]
    pub slots: Slots,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: VERSION,
            key: String::new(),
            updated_ns: 0,
            breaker: Breaker::default(),
            bucket: Bucket::default(),
            slots: Slots::default(),
        }
    }
}

impl State {
    /// Parses a state file; the error says why it is unusable.
    pub fn parse(bytes: &[u8]) -> Result<State, String> {
        let state: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if state.version != VERSION {
            return Err(format!("schema version {}, expected {VERSION}", state.version));
        }
        Ok(state)
    }

    /// Brings the stored times in line with `now`: a last write in the future
    /// means the wall clock went back, so the whole timeline moves back by the
    /// gap. Without this a clock set back by a day would keep a breaker open
    /// or a bucket empty for that day.
    pub fn normalise(&mut self, now: u64) {
        if self.updated_ns > now {
            let delta = self.updated_ns - now;
            self.breaker.shift_back(delta);
            self.bucket.shift_back(delta);
            self.slots.shift_back(delta);
            self.updated_ns = now;
        }
    }
}

/// Why the store cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The files are not patience's own (a symlink, a FIFO, another user's
    /// file): refused, and never touched.
    Refused(String),
    /// A passing or environmental problem (lock timeout, I/O error, read-only
    /// or full disk): patience runs without its shared state.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Refused(m) | StoreError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Checks what an open descriptor or a path really is: a regular file owned
/// by this user.
fn check_own_file(meta: &std::fs::Metadata, path: &Path) -> Result<(), StoreError> {
    if !meta.file_type().is_file() {
        return Err(StoreError::Refused(format!(
            "{} is not a regular file; refusing to use it",
            path.display()
        )));
    }
    if meta.uid() != sys::getuid() {
        return Err(StoreError::Refused(format!(
            "{} is owned by uid {}, not by you (uid {}); refusing to use it",
            path.display(),
            meta.uid(),
            sys::getuid()
        )));
    }
    Ok(())
}

/// The state file's path for a key's file name `stem`.
pub fn state_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.json"))
}

/// Reads the state at `path` without locking (renames are atomic, so a
/// reader sees a whole file). A missing file is a fresh state; an unusable
/// one is a fresh state plus the reason, for the caller to report.
pub fn read_state(path: &Path) -> Result<(State, Option<String>), StoreError> {
    let mut file = match sys::open_private(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((State::default(), None)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::Refused(format!(
                "{} is a symbolic link; refusing to use it",
                path.display()
            )))
        }
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot open {}: {e}",
                path.display()
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))?;
    check_own_file(&meta, path)?;
    // Sized from fstat: one read for the whole file, one to see the end.
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE) as usize + 1);
    (&mut file)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_FILE {
        return Ok((State::default(), Some(format!("larger than {MAX_FILE} bytes"))));
    }
    match State::parse(&bytes) {
        Ok(s) => Ok((s, None)),
        Err(why) => Ok((State::default(), Some(why))),
    }
}

/// The key's lock, held until dropped: on the store's own lock file, or on
/// the one a helper thread opened and locked (closing it unlocks).
enum Held<'a> {
    Main(&'a File),
    Helper(#[allow(dead_code)] File),
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Held::Main(f) = self {
            sys::unlock(f);
        }
    }
}

/// One key's state store, open for the whole run.
pub struct Store {
    dir: File,
    dir_path: PathBuf,
    key: String,
    stem: String,
    lock: File,
}

impl Store {
    /// Opens the store of `key` (file name `stem`) in the checked state
    /// directory `dir`, creating its lock file. Refuses files that are not
    /// this user's regular files.
    pub fn open(dir: &Path, key: &str, stem: &str) -> Result<Store, StoreError> {
        let lock_path = dir.join(format!("{stem}.lock"));
        let lock = match sys::open_private(&lock_path, OpenMode::Lock) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::Refused(format!(
                    "{} is a symbolic link; refusing to use it",
                    lock_path.display()
                )))
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot open {}: {e}",
                    lock_path.display()
                )))
            }
        };
        let meta = lock
            .metadata()
            .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", lock_path.display())))?;
        check_own_file(&meta, &lock_path)?;
        // The state file is checked now too, so that a planted symlink or
        // FIFO is refused before the command runs rather than half-way.
        let path = state_path(dir, stem);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StoreError::Refused(format!(
                    "{} is a symbolic link; refusing to use it",
                    path.display()
                )))
            }
            Ok(m) => check_own_file(&m, &path)?,
            Err(_) => {}
        }
        let dir_file = File::open(dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", dir.display())))?;
        Ok(Store {
            dir: dir_file,
            dir_path: dir.to_path_buf(),
            key: key.to_string(),
            stem: stem.to_string(),
            lock,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        state_path(&self.dir_path, &self.stem)
    }

    /// Runs `change` on the key's state under the lock and writes the result
    /// back if it changed (or if the file had to be replaced). `clock` is
    /// read once the lock is held, so the time given to `change` is never
    /// older than the last write.
    ///
    /// Fast path: `change` is first tried on a snapshot read without the
    /// lock; if it changes nothing (a success on a closed breaker, the
    /// common case), that is its result and no lock is taken. This is
    /// exact, not a heuristic: the snapshot is a whole file (renames are
    /// atomic), and a transaction that writes nothing is ordered at the
    /// moment of the read, before any later writer.
    pub fn update<R>(
        &self,
        clock: &dyn Fn() -> u64,
        change: impl Fn(&mut State, u64) -> R,
    ) -> Result<R, StoreError> {
        if let Ok((loaded, None)) = read_state(&self.path()) {
            let now = clock();
            let mut state = loaded.clone();
            state.normalise(now);
            state.key.clone_from(&self.key);
            let result = change(&mut state, now);
            if state == loaded {
                return Ok(result);
            }
        }
        self.modify(clock, change)
    }

    /// `update` without the fast path, for a transaction known to write (a
    /// slot or a token taken, a slot given back): it would only read the
    /// file twice.
    pub fn modify<R>(
        &self,
        clock: &dyn Fn() -> u64,
        change: impl Fn(&mut State, u64) -> R,
    ) -> Result<R, StoreError> {
        let _held = self.lock()?;
        self.update_locked(clock, change)
    }

    fn update_locked<R>(
        &self,
        clock: &dyn Fn() -> u64,
        change: impl Fn(&mut State, u64) -> R,
    ) -> Result<R, StoreError> {
        let path = self.path();
        let (loaded, problem) = read_state(&path)?;
        if let Some(why) = &problem {
            crate::messages::say(&format!(
                "warning: state file {} is unreadable ({why}); replacing it with a fresh state",
                path.display()
            ));
        }
        let now = clock();
        let mut state = loaded.clone();
        state.normalise(now);
        state.key.clone_from(&self.key);
        let result = change(&mut state, now);
        if state != loaded || problem.is_some() {
            // The breaker is what must survive a power cut; slots and tokens
            // mean nothing after one (every holder is gone, the bucket has
            // refilled), so their changes skip the two fsyncs that would
            // otherwise be most of the cost of a run.
            let durable = state.breaker != loaded.breaker || problem.is_some() || loaded.updated_ns == 0;
            state.updated_ns = now;
            self.write(&state, durable)?;
        }
        Ok(result)
    }

    /// Deletes the key's state (the lock file stays).
    pub fn reset(&self) -> Result<(), StoreError> {
        let _held = self.lock()?;
        match std::fs::remove_file(self.path()) {
            Ok(()) => self.dir.sync_all().map_err(|e| self.unavailable("sync", e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.unavailable("remove", e)),
        }
    }

    fn unavailable(&self, what: &str, e: io::Error) -> StoreError {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", self.path().display()))
    }

    /// Takes the key's lock. Uncontended, that is one non-blocking flock.
    /// Contended, a helper thread opens the lock file again and waits in
    /// the kernel's queue (so the lock is handed over the moment it is free,
    /// with no polling delay), while this thread waits at most
    /// `LOCK_TIMEOUT` for it. If the time runs out the helper is abandoned:
    /// should it get the lock later, its send fails, its file is closed and
    /// the lock released at once.
    fn lock(&self) -> Result<Held<'_>, StoreError> {
        let lock_path = self.dir_path.join(format!("{}.lock", self.stem));
        let cannot =
            |e: io::Error| StoreError::Unavailable(format!("cannot lock {}: {e}", lock_path.display()));
        if sys::try_lock_exclusive(&self.lock).map_err(cannot)? {
            return Ok(Held::Main(&self.lock));
        }
        // A holder is usually out within a fraction of a millisecond: give
        // up the CPU to it a few times before paying for a thread.
        let spin_until = std::time::Instant::now() + SPIN;
        while std::time::Instant::now() < spin_until {
            std::thread::yield_now();
            if sys::try_lock_exclusive(&self.lock).map_err(cannot)? {
                return Ok(Held::Main(&self.lock));
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let path = lock_path.clone();
        std::thread::Builder::new()
            .name("state-lock".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let locked = sys::open_private(&path, OpenMode::Lock).and_then(|f| {
                    sys::lock_exclusive(&f)?;
                    Ok(f)
                });
                let _ = tx.send(locked);
            })
            .map_err(cannot)?;
        match rx.recv_timeout(LOCK_TIMEOUT) {
            Ok(Ok(file)) => {
                // The same inode as the lock file opened at start, or the
                // lock means nothing (the directory is private, so only a
                // bug could make them differ).
                let same = match (file.metadata(), self.lock.metadata()) {
                    (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                    _ => false,
                };
                if !same {
                    return Err(cannot(io::Error::other("the lock file was replaced")));
                }
                Ok(Held::Helper(file))
            }
            Ok(Err(e)) => Err(cannot(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{} is held by another process for more than {}",
                lock_path.display(),
                crate::duration::format(LOCK_TIMEOUT)
            ))),
        }
    }

    /// Replaces the state file atomically: temp file in the same directory,
    /// fsync, rename over, fsync of the directory. On any failure the old
    /// file is intact and the temp file is removed. Without `durable`, the
    /// fsyncs are skipped: readers still see the old file or the new one,
    /// never a mix, and after a crash the file may be lost or empty, which
    /// the next run reports and replaces.
    fn write(&self, state: &State, durable: bool) -> Result<(), StoreError> {
        let tmp = self.dir_path.join(format!("{}.json.tmp", self.stem));
        let mut text = serde_json::to_vec(state).expect("the state always serialises");
        text.push(b'\n');
        let written = (|| {
            // Under the lock nobody else writes this temp file: one left over
            // is from a writer that died, and goes.
            let mut f = match sys::open_private(&tmp, OpenMode::CreateNew) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    std::fs::remove_file(&tmp)?;
                    sys::open_private(&tmp, OpenMode::CreateNew)?
                }
                r => r?,
            };
            f.write_all(&text)?;
            if durable {
                f.sync_all()?;
            }
            drop(f);
            std::fs::rename(&tmp, self.path())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.unavailable("write", e));
        }
        if durable {
            self.dir
                .sync_all()
                .map_err(|e| self.unavailable("sync the directory of", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("patience-store-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn clock() -> u64 {
        super::super::wall_ns()
    }

    #[test]
    fn unusable_files_are_a_fresh_state_with_a_reason() {
        let deep = "[".repeat(10_000);
        for bad in [
            &b""[..],
            b"{\"version\":1,\"breaker\":{\"fail",
            &[0u8; 64],
            b"{\"version\":2}",
            b"{\"version\":1,\"version\":1}",
            b"{\"version\":1,\"updated_ns\":1e999}",
            b"{\"version\":1,\"breaker\":{\"failures\":-1}}",
            deep.as_bytes(),
            b"null",
        ] {
            assert!(State::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let ok = State::parse(b"{\"version\":1,\"future_field\":[1,2]}").unwrap();
        assert_eq!(ok, State::default());
    }

    #[test]
    fn the_timeline_moves_back_with_the_clock() {
        let mut s = State {
            updated_ns: 5_000,
            ..State::default()
        };
        s.breaker.opened_at_ns = 4_000;
        s.bucket.tat_ns = 6_000;
        s.normalise(1_000);
        assert_eq!(
            (s.updated_ns, s.breaker.opened_at_ns, s.bucket.tat_ns),
            (1_000, 0, 2_000)
        );
        s.normalise(9_000);
        assert_eq!(s.updated_ns, 1_000);
    }

    #[test]
    fn concurrent_updates_are_never_lost() {
        let dir = Dir::new("concurrent");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = dir.0.clone();
                std::thread::spawn(move || {
                    // One open file each: flock excludes open files, not
                    // processes, so this contends like separate processes.
                    let store = Store::open(&d, "k", "k").unwrap();
                    for _ in 0..100 {
                        store.update(&clock, |s, _| s.breaker.failures += 1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (s, problem) = read_state(&state_path(&dir.0, "k")).unwrap();
        assert_eq!(problem, None);
        assert_eq!(s.breaker.failures, 400);
        assert_eq!(s.key, "k");
        assert!(!dir.0.join("k.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_replaced_and_an_unchanged_state_not_rewritten() {
        let dir = Dir::new("corrupt");
        let path = state_path(&dir.0, "k");
        std::fs::write(&path, b"{\"version\":1,\"brea").unwrap();
        let store = Store::open(&dir.0, "k", "k").unwrap();
        store.update(&clock, |_, _| ()).unwrap();
        let (s, problem) = read_state(&path).unwrap();
        assert_eq!(problem, None);
        assert_eq!(s.key, "k");
        // No change: no write (the inode stays the same).
        let ino = std::fs::metadata(&path).unwrap().ino();
        store.update(&clock, |_, _| ()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        store.reset().unwrap();
        assert!(!path.exists());
        assert!(dir.0.join("k.lock").exists());
    }

    #[test]
    fn a_failed_write_keeps_the_old_state_and_fails_open() {
        let dir = Dir::new("failwrite");
        let store = Store::open(&dir.0, "k", "k").unwrap();
        store.update(&clock, |s, _| s.breaker.failures = 7).unwrap();
        // Something that is not a file sits where the temp file goes: the
        // write fails (as on a full or read-only disk) and is reported.
        std::fs::create_dir(dir.0.join("k.json.tmp")).unwrap();
        std::fs::write(dir.0.join("k.json.tmp/x"), b"").unwrap();
        let err = store.update(&clock, |s, _| s.breaker.failures = 8).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let (s, problem) = read_state(&state_path(&dir.0, "k")).unwrap();
        assert_eq!((s.breaker.failures, problem), (7, None));
    }

    #[test]
    fn symlinks_and_fifos_are_refused_without_blocking() {
        let dir = Dir::new("refuse");
        let target = dir.0.join("target");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.0.join("a.json")).unwrap();
        assert!(matches!(
            Store::open(&dir.0, "a", "a"),
            Err(StoreError::Refused(_))
        ));
        std::os::unix::fs::symlink(&target, dir.0.join("b.lock")).unwrap();
        assert!(matches!(
            Store::open(&dir.0, "b", "b"),
            Err(StoreError::Refused(_))
        ));
        let fifo = dir.0.join("c.json");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success());
        assert!(matches!(
            Store::open(&dir.0, "c", "c"),
            Err(StoreError::Refused(_))
        ));
        // Reading it directly neither blocks nor succeeds.
        assert!(matches!(read_state(&fifo), Err(StoreError::Refused(_))));
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn a_held_lock_times_out_instead_of_hanging() {
        let dir = Dir::new("held");
        let holder = Store::open(&dir.0, "k", "k").unwrap();
        let held = holder.lock().unwrap();
        let other = Store::open(&dir.0, "k", "k").unwrap();
        let start = Instant::now();
        let err = other.update(&clock, |_, _| ()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(start.elapsed() >= LOCK_TIMEOUT && start.elapsed() < LOCK_TIMEOUT * 3);
        drop(held);
        // The abandoned helper got the lock when it was freed and let go of
        // it: the next update is not blocked.
        let start = Instant::now();
        other.update(&clock, |_, _| ()).unwrap();
        assert!(start.elapsed() < LOCK_TIMEOUT);
    }
}
