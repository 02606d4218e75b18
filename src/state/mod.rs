//! Cross-process resilience: a circuit breaker (`--breaker`), a rate limit
//! (`--rate-limit`) and a concurrency limit (`--max-concurrent`) shared by
//! every patience process of a key (`--key`, default the run's name), through
//! one JSON file per key in a private state directory.
//!
//! - [`store`] owns the files: lock, read, atomic write, corrupt files.
//! - [`breaker`], [`ratelimit`] and [`slots`] are pure state machines over
//!   the stored record, with the clock and process liveness injected.
//! - This module finds and checks the directory, names the files, and holds
//!   the [`Gate`]: what the attempt loop calls before and after attempts.
//!
//! - [`handover`] wakes a run waiting for a slot when a holder lets go.
//!
//! Failure policy: a configured state directory (`PATIENCE_STATE_DIR`,
//! `state-dir`) or a state file that is not the user's own (a symlink,
//! another owner, world-writable) is refused before anything runs (exit
//! 125); such a directory found by the search is passed over. Anything else
//! — no directory to be had, a lock held too long, an I/O error, a corrupt
//! file — is reported and the run goes on without the shared state (fail
//! open): a cron job is never stuck or killed by its own safety net.

// Without the Redis store the file store is the only backend.
#![cfg_attr(not(feature = "redis"), allow(irrefutable_let_patterns))]

pub mod breaker;
pub mod handover;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod remote;
pub mod slots;
pub mod store;
pub mod url;

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::duration::format as fmt_dur;
use crate::error::Error;
use crate::messages::say;
use crate::sys;
use breaker::Verdict;
use ratelimit::Rate;
use store::{State, Store, StoreError};

/// A process that holds something in the shared state: a slot or the
/// breaker's probe lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: i32,
    /// Its start time (clock ticks after boot), to tell a recycled PID apart.
    #[serde(default)]
    pub start: Option<u64>,
    /// When it took what it holds (wall clock, ns since the epoch).
    #[serde(default)]
    pub since_ns: u64,
}

impl Holder {
    /// This process.
    fn me() -> Holder {
        let pid = sys::getpid();
        Holder {
            pid,
            start: sys::process_start_time(pid),
            since_ns: 0,
        }
    }
}

/// True while `h`'s process runs: the PID exists and, when both are known,
/// its start time matches (otherwise the PID was recycled).
pub fn alive(h: &Holder) -> bool {
    if !sys::process_alive(h.pid) {
        return false;
    }
    match (h.start, sys::process_start_time(h.pid)) {
        (Some(stored), Some(now)) => stored == now,
        _ => true,
    }
}

/// The wall clock in ns since the epoch (0 before it). Only wall time is
/// shared between processes and across reboots; its jumps are handled by
/// `State::normalise` and the saturating arithmetic of the machines.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where the state directory is, as the search found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// This directory; `how` says which place it is and, when others came
    /// first, why they were passed over (for `--dry-run`).
    Found { dir: PathBuf, how: String },
    /// The configured directory (`PATIENCE_STATE_DIR`, `state-dir`) is not
    /// the user's own: refused before anything runs (exit 125).
    Unsafe(String),
    /// No place can be had: the run goes on without its shared state (fail
    /// open); the text says why each place was passed over.
    Nowhere(String),
}

/// One place the state directory may be, in the order of the search.
struct Place {
    dir: PathBuf,
    /// How `--dry-run` and the warnings name it.
    label: String,
    /// Set by `PATIENCE_STATE_DIR` or `state-dir`: the only place tried,
    /// and one that is not the user's own is refused rather than skipped.
    configured: bool,
    /// A directory that must already exist (HOME, XDG_RUNTIME_DIR): never
    /// created, so a missing HOME (`/nonexistent`) stays missing.
    needs: Option<PathBuf>,
    /// How far `dir` may be created: the whole path, or its last component
    /// only.
    parents: bool,
}

/// The places of the search, in order, from the configured directory
/// (`$PATIENCE_STATE_DIR`, else the config's `state-dir`, as `config`
/// resolved them) or the environment `var`, the user id and the root of
/// the last resort (`/tmp`). A place the environment rules out is the
/// reason why, in its turn.
fn places(
    configured: Option<&Path>,
    var: impl Fn(&str) -> Option<OsString>,
    uid: u32,
    tmp: &Path,
) -> Vec<Result<Place, String>> {
    if let Some(dir) = configured {
        return vec![Ok(Place {
            dir: dir.to_path_buf(),
            label: "the configured directory".into(),
            configured: true,
            needs: None,
            parents: true,
        })];
    }
    // Relative values are ignored, as the XDG spec says; empty ones are unset.
    let absolute = |name: &str| match var(name).filter(|v| !v.is_empty()).map(PathBuf::from) {
        None => Err(format!("${name} is not set")),
        Some(p) if p.is_relative() => Err(format!("${name} {} is not an absolute path", p.display())),
        Some(p) => Ok(p),
    };
    let home = absolute("HOME");
    let xdg = absolute("XDG_STATE_HOME").map(|x| Place {
        // XDG_STATE_HOME may be created, but not a missing HOME above it.
        needs: home.as_ref().ok().filter(|h| x.starts_with(h)).cloned(),
        dir: x.join("patience"),
        label: "$XDG_STATE_HOME/patience".into(),
        configured: false,
        parents: true,
    });
    let home = home.and_then(|h| {
        // A home of "/" is none (a container's user without one): the state
        // would land in the root directory.
        if h == Path::new("/") {
            return Err("HOME is /".into());
        }
        Ok(Place {
            dir: h.join(".local/state/patience"),
            label: "~/.local/state/patience".into(),
            configured: false,
            needs: Some(h),
            parents: true,
        })
    });
    let runtime = absolute("XDG_RUNTIME_DIR").map(|r| Place {
        dir: r.join("patience"),
        label: "$XDG_RUNTIME_DIR/patience".into(),
        configured: false,
        needs: Some(r),
        parents: false,
    });
    let tmp = Ok(Place {
        dir: tmp.join(format!("patience-{uid}")),
        label: format!("{}/patience-UID", tmp.display()),
        configured: false,
        needs: None,
        parents: false,
    });
    vec![xdg, home, runtime, tmp]
}

/// Why `dir` is not a private directory of user `uid`, if it is not: a
/// symlink, not a directory, another owner, writable by others.
fn unsafe_dir(meta: &std::fs::Metadata, uid: u32) -> Option<String> {
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return Some("is not a directory".into());
    }
    if meta.uid() != uid {
        return Some(format!("is owned by uid {}, not by you (uid {uid})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by other users (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// How trying one place went.
enum Tried {
    /// Usable: "exists", "created", or (without `create`) "would be created".
    Usable(&'static str),
    /// Exists but is not the user's own.
    Unsafe(String),
    /// Cannot be had (a missing HOME, no permission to create it).
    Unavailable(String),
}

/// Tries `place` for user `uid`: checks it and, with `create`, creates it
/// (mode 0700). Without `create` (`--dry-run`) nothing is written, and a
/// missing directory is usable when the nearest existing directory above
/// it looks writable.
fn try_place(place: &Place, uid: u32, create: bool) -> Tried {
    let dir = &place.dir;
    if let Some(need) = &place.needs {
        match std::fs::metadata(need) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Tried::Unavailable(format!("{} does not exist", need.display()))
            }
            Err(e) => return Tried::Unavailable(format!("cannot stat {}: {e}", need.display())),
            Ok(m) if !m.is_dir() => {
                return Tried::Unavailable(format!("{} is not a directory", need.display()))
            }
            Ok(m) if m.uid() != uid => {
                return Tried::Unavailable(format!(
                    "{} is owned by uid {}, not by you (uid {uid})",
                    need.display(),
                    m.uid()
                ))
            }
            Ok(_) => {}
        }
    }
    let made = match std::fs::symlink_metadata(dir) {
        Ok(_) => "exists",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return match writable_ancestor(dir, uid) {
                    Ok(()) => Tried::Usable("would be created"),
                    Err(why) => Tried::Unavailable(why),
                };
            }
            let mut b = std::fs::DirBuilder::new();
            b.recursive(place.parents).mode(0o700);
            match b.create(dir) {
                Ok(()) => "created",
                // Another process made it first: checked below like any other.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => "exists",
                Err(e) => return Tried::Unavailable(format!("cannot create {}: {e}", dir.display())),
            }
        }
        Err(e) => return Tried::Unavailable(format!("cannot stat {}: {e}", dir.display())),
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) => match unsafe_dir(&m, uid) {
            Some(why) => Tried::Unsafe(format!("{} {why}", dir.display())),
            None => Tried::Usable(made),
        },
        Err(e) => Tried::Unavailable(format!("cannot stat {}: {e}", dir.display())),
    }
}

/// For `--dry-run`: whether the nearest existing directory above `dir`
/// looks writable by `uid` (root, its owner with u+w, or anyone with o+w
/// as /tmp). A guess from the mode bits, which is all a run that writes
/// nothing can have.
fn writable_ancestor(dir: &Path, uid: u32) -> Result<(), String> {
    let mut up = dir.parent();
    while let Some(p) = up {
        if let Ok(m) = std::fs::metadata(p) {
            let ok = m.is_dir()
                && (uid == 0 || (m.uid() == uid && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0);
            return if ok {
                Ok(())
            } else {
                Err(format!(
                    "cannot create {}: {} is not writable",
                    dir.display(),
                    p.display()
                ))
            };
        }
        up = p.parent();
    }
    Err(format!("cannot create {}", dir.display()))
}

/// The search of SPEC "Cross-process resilience", with the environment
/// `var`, user `uid` and last-resort root `tmp` given. The first usable
/// place wins; a configured one is the only place tried.
fn locate_in(
    configured: Option<&Path>,
    var: impl Fn(&str) -> Option<OsString>,
    uid: u32,
    tmp: &Path,
    create: bool,
) -> Location {
    let mut skipped = Vec::new();
    for place in places(configured, var, uid, tmp) {
        let place = match place {
            Ok(p) => p,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        match try_place(&place, uid, create) {
            Tried::Usable(state) => {
                let mut how = format!("{} ({state})", place.label);
                if !skipped.is_empty() {
                    how.push_str(&format!("; passed over: {}", skipped.join("; ")));
                }
                return Location::Found { dir: place.dir, how };
            }
            Tried::Unsafe(why) if place.configured => {
                return Location::Unsafe(format!(
                "state directory {why}; refusing to use it (set PATIENCE_STATE_DIR to a private directory)"
            ))
            }
            Tried::Unsafe(why) | Tried::Unavailable(why) => skipped.push(format!("{}: {why}", place.label)),
        }
    }
    Location::Nowhere(skipped.join("; "))
}

/// Where the state directory of this process is, created (mode 0700) when
/// `create`, else only looked for (`--dry-run`).
pub fn locate(configured: Option<&Path>, create: bool) -> Location {
    locate_in(
        configured,
        |k| std::env::var_os(k),
        sys::getuid(),
        Path::new("/tmp"),
        create,
    )
}

/// The state directory, for `--state` and `--reset-state`: created and
/// checked; one that is unsafe or cannot be had is an error (exit 125).
pub fn state_dir(configured: Option<&Path>) -> Result<PathBuf, Error> {
    match locate(configured, true) {
        Location::Found { dir, .. } => Ok(dir),
        Location::Unsafe(m) => Err(Error::Internal(m)),
        Location::Nowhere(why) => Err(Error::Internal(format!(
            "no usable state directory ({why}); set PATIENCE_STATE_DIR to a private directory"
        ))),
    }
}

/// The file name (without extension) for `key`: letters, digits, `_`, `-`
/// and `.` (not first) are kept, every other byte becomes `%XX`, so two keys
/// never share a file and no key can name a path (`../x`, `.`, `a/b`). A
/// long result is cut and ends with `~` and a hash of the whole key (`~`
/// itself is always escaped, so the forms cannot collide).
pub fn file_stem(key: &str) -> String {
    let mut out = String::new();
    for (i, &b) in key.as_bytes().iter().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    const MAX: usize = 120;
    if out.len() > MAX {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key.as_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        out.truncate(MAX - 17);
        out.push_str(&format!("~{hash:016x}"));
    }
    out
}

/// Checks a key given on the command line or in a config file.
pub fn parse_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("the key must not be empty".into());
    }
    Ok(key.to_string())
}

/// The limits a run asks for; `None` is "not used".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub breaker: Option<breaker::Config>,
    pub rate: Option<Rate>,
    pub max_concurrent: Option<u64>,
}

/// What the shared state of one run is asked to do, as its settings say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub key: String,
    pub limits: Limits,
    /// How long a run waits for a free slot before it is refused.
    pub slot_wait: Duration,
    /// `--state-dir`, if given.
    pub state_dir: Option<PathBuf>,
    /// `--state-url`: the Redis store instead of the files.
    pub state_url: Option<url::StateUrl>,
    /// `state-url-password-file`.
    pub password_file: Option<PathBuf>,
    /// Waits are announced (not with `--quiet`, nor in cron mode).
    pub chatty: bool,
    /// Every admission is announced (`--verbose`).
    pub verbose: bool,
}

impl Limits {
    fn any(&self) -> bool {
        self.breaker.is_some() || self.rate.is_some() || self.max_concurrent.is_some()
    }
}

/// What one admission check decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, after waiting `token_wait` for the rate limit. `probe`: this
    /// run now holds the breaker's probe lease; `slot`: it took a slot.
    Admitted {
        probe: bool,
        slot: bool,
        token_wait: Duration,
    },
    /// The breaker said no.
    Breaker(Verdict),
    /// Every slot is taken, by these PIDs.
    Full { pids: Vec<i32> },
    /// Every slot is taken, by these holders of the fleet (`PID@HOST`).
    Held { by: Vec<String> },
    /// Half-open, and this holder of the fleet is the probe.
    ProbeHeld { by: String },
    /// The next token comes after the deadline (this far away).
    TooLate(Duration),
}

/// The whole decision before an attempt, as one transaction on the state:
/// breaker, then (for the first attempt only) a slot, then a token. Nothing
/// is kept unless everything says yes, except the sweeping of dead slot
/// holders. `max_wait` is the time left before the deadline.
pub fn admit(
    state: &mut State,
    limits: &Limits,
    me: &Holder,
    now: u64,
    first: bool,
    max_wait: Option<Duration>,
    alive: &dyn Fn(&Holder) -> bool,
) -> Admission {
    let me = Holder {
        since_ns: now,
        ..me.clone()
    };
    let take_slot = first && limits.max_concurrent.is_some();
    // Checking holders costs a kill(2) and a read of /proc each, under the
    // lock: only done when they would keep this run out.
    if take_slot && !state.slots.has_room(limits.max_concurrent.unwrap_or(0)) {
        state.slots.sweep(alive);
    }
    let mut next = state.clone();
    let mut probe = false;
    if let Some(cfg) = &limits.breaker {
        match next.breaker.admit(cfg, &me, now, alive) {
            Verdict::Pass => {}
            Verdict::Probe => probe = true,
            refused => return Admission::Breaker(refused),
        }
    }
    if let (true, Some(max)) = (take_slot, limits.max_concurrent) {
        if !next.slots.has_room(max) {
            return Admission::Full {
                pids: next.slots.pids(),
            };
        }
        next.slots.take(&me, max);
    }
    let mut token_wait = Duration::ZERO;
    if let Some(rate) = &limits.rate {
        match next.bucket.take(rate, now, max_wait) {
            Ok(w) => token_wait = w,
            Err(w) => return Admission::TooLate(w),
        }
    }
    *state = next;
    Admission::Admitted {
        probe,
        slot: take_slot,
        token_wait,
    }
}

/// Why the gate stops a run before an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Refused before the first attempt (exit 75, status "rejected").
    Refused(String),
    /// A later attempt may not start: the run fails with this reason.
    Failed(String),
    /// A signal arrived while waiting.
    Interrupted(i32),
}

/// The attempt loop's view of the shared state: admission before the first
/// attempt, a token before each, the breaker after each, and the slot and
/// probe lease given back when the gate is dropped — on every way out of
/// the loop. A SIGKILLed run cannot drop it; its PID is swept instead.
pub struct Gate {
    active: Option<Active>,
}

/// Where the state of the key is.
enum Backend {
    Files(Files),
    #[cfg(feature = "redis")]
    Redis(remote::Remote),
}

/// The file store of a key, and what hands a slot over between the
/// processes of this machine.
struct Files {
    store: Store,
    /// The state directory and the key's file name, for the holder files.
    dir: PathBuf,
    stem: String,
    /// Held from just before this run may appear among the slot holders
    /// until it has given its slot back (see `handover`).
    holder_lock: Option<handover::HolderLock>,
}

impl Backend {
    fn admit(
        &mut self,
        limits: &Limits,
        me: &Holder,
        first: bool,
        max_wait: Option<Duration>,
    ) -> Result<Admission, String> {
        match self {
            Backend::Files(f) => {
                let admit = |st: &mut State, now| admit(st, limits, me, now, first, max_wait, &alive);
                // Taking a slot or a token always writes: no read-only try first.
                let writes = (first && limits.max_concurrent.is_some()) || limits.rate.is_some();
                let decided = if writes {
                    f.store.modify(&wall_ns, admit)
                } else {
                    f.store.update(&wall_ns, admit)
                };
                decided.map_err(|e| e.to_string())
            }
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.admit(limits, first, max_wait),
        }
    }

    fn record(&mut self, cfg: &breaker::Config, me: &Holder, success: bool) -> Result<(bool, u64), String> {
        match self {
            Backend::Files(f) => f
                .store
                .update(&wall_ns, |st, now| {
                    let opened = st.breaker.record(cfg, me, success, now);
                    (opened, st.breaker.failures)
                })
                .map_err(|e| e.to_string()),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.record(cfg, success),
        }
    }

    fn release(&mut self, pid: i32, slot: bool, probe: bool) -> Result<(), String> {
        match self {
            Backend::Files(f) => f
                .store
                .modify(&wall_ns, |st, _| {
                    if slot {
                        st.slots.release(pid);
                    }
                    if probe {
                        st.breaker.release_probe(pid);
                    }
                })
                .map_err(|e| e.to_string()),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.release(slot, probe),
        }
    }
}

struct Active {
    backend: Backend,
    key: String,
    limits: Limits,
    slot_wait: Duration,
    me: Holder,
    /// Say what the gate waits for and when the breaker opens: not with
    /// `--quiet`, nor in cron mode (`--output failure`), where a run that
    /// succeeds prints nothing.
    chatty: bool,
    verbose: bool,
    holds_slot: bool,
    probe: bool,
    /// Wakes the attempt loop's sleep when a watched slot holder let go;
    /// without one, a slot wait polls.
    waker: Option<handover::Waker>,
}

impl Gate {
    /// Opens the state of the run's key when any limit is set. An unsafe
    /// state directory or file is an error (exit 125); a store that is merely
    /// unavailable gives a gate that lets everything through, with a warning.
    pub fn new(p: &Policy, waker: Option<handover::Waker>) -> Result<Gate, Error> {
        let limits = p.limits;
        if !limits.any() {
            return Ok(Gate { active: None });
        }
        let key = p.key.clone();
        let active = |backend| Active {
            backend,
            key: key.clone(),
            limits,
            slot_wait: p.slot_wait,
            me: Holder::me(),
            chatty: p.chatty,
            verbose: p.verbose,
            holds_slot: false,
            probe: false,
            waker,
        };
        if let Some(url) = &p.state_url {
            #[cfg(feature = "redis")]
            return match remote::Remote::open(url, p.password_file.as_deref(), &key) {
                Ok(r) => Ok(Gate {
                    active: Some(active(Backend::Redis(r))),
                }),
                Err(remote::RemoteError::PasswordFile(m)) => Err(Error::Config(m)),
                Err(remote::RemoteError::Unavailable(m)) => {
                    fail_open(&key, &m);
                    Ok(Gate { active: None })
                }
            };
            #[cfg(not(feature = "redis"))]
            return Err(no_redis(url));
        }
        let dir = match locate(p.state_dir.as_deref(), true) {
            Location::Found { dir, .. } => dir,
            Location::Unsafe(m) => return Err(Error::Internal(m)),
            Location::Nowhere(why) => {
                say(&format!(
                    "warning: no usable state directory ({why}); running without --breaker, --rate-limit and --max-concurrent: set PATIENCE_STATE_DIR to a private directory"
                ));
                return Ok(Gate { active: None });
            }
        };
        let stem = file_stem(&key);
        let store = match Store::open(&dir, &key, &stem) {
            Ok(store) => store,
            Err(StoreError::Refused(m)) => return Err(Error::Internal(m)),
            Err(StoreError::Unavailable(m)) => {
                fail_open(&key, &m);
                return Ok(Gate { active: None });
            }
        };
        Ok(Gate {
            active: Some(active(Backend::Files(Files {
                store,
                dir,
                stem,
                holder_lock: None,
            }))),
        })
    }

    /// Call before attempt `number` (1-based). Waits for a slot (first
    /// attempt, up to `--slot-wait`) and for a token, through `sleep(d,
    /// wakeable)`, which returns early with a signal and, when `wakeable`,
    /// as soon as the gate's waker is called (a slot holder let go). Never
    /// waits past `deadline`.
    pub fn before_attempt(
        &mut self,
        number: u64,
        deadline: Option<Instant>,
        sleep: &mut dyn FnMut(Duration, bool) -> Option<i32>,
    ) -> Result<(), Stop> {
        let Some(a) = &mut self.active else {
            return Ok(());
        };
        match a.before_attempt(number, deadline, sleep) {
            Ok(decided) => {
                // Refused or interrupted: the lock of a slot never taken goes.
                if let (false, Backend::Files(f)) = (a.holds_slot, &mut a.backend) {
                    f.holder_lock = None;
                }
                decided
            }
            Err(why) => {
                fail_open(&a.key, &why);
                self.active = None;
                Ok(())
            }
        }
    }

    /// Call after each attempt that ran to its end (not one cut short by a
    /// signal to patience): feeds the breaker. True when this attempt opened
    /// it, so no delay is worth waiting before the refusal.
    pub fn after_attempt(&mut self, success: bool) -> bool {
        let Some(a) = &mut self.active else {
            return false;
        };
        let Some(cfg) = a.limits.breaker else {
            return false;
        };
        let me = a.me.clone();
        match a.backend.record(&cfg, &me, success) {
            Ok((opened, failures)) => {
                if a.probe {
                    a.probe = false;
                    a.hold();
                }
                if opened && a.chatty {
                    say(&format!(
                        "circuit breaker for key '{}' opened after {failures} consecutive failed attempts; runs are refused for {}",
                        a.key,
                        fmt_dur(cfg.cooldown)
                    ));
                }
                opened
            }
            Err(e) => {
                fail_open(&a.key, &e);
                self.active = None;
                false
            }
        }
    }
}

impl Active {
    /// Keeps the leases of what this run now holds alive (the Redis store;
    /// the file store's holders are PIDs, alive while they run).
    fn hold(&mut self) {
        #[cfg(feature = "redis")]
        if let Backend::Redis(r) = &mut self.backend {
            r.hold(self.holds_slot, self.probe);
        }
    }

    /// `Gate::before_attempt`; `Err` when the store failed and the run is
    /// to go on without it (with the reason).
    fn before_attempt(
        &mut self,
        number: u64,
        deadline: Option<Instant>,
        sleep: &mut dyn FnMut(Duration, bool) -> Option<i32>,
    ) -> Result<Result<(), Stop>, String> {
        let a = self;
        let first = number == 1;
        if !first && a.limits.breaker.is_none() && a.limits.rate.is_none() {
            return Ok(Ok(()));
        }
        let started = Instant::now();
        let slot_end = started.checked_add(a.slot_wait).unwrap_or(started);
        let slot_end = deadline.map_or(slot_end, |d| d.min(slot_end));
        // With a waker, a freed slot wakes the wait at once and the period
        // is only the fallback for holders that cannot be watched.
        // A holder on another host cannot be watched: the server is polled.
        let watchable = a.waker.is_some() && matches!(a.backend, Backend::Files(_));
        let (mut pause, most) = if watchable {
            (Duration::from_millis(50), Duration::from_secs(1))
        } else {
            (Duration::from_millis(20), Duration::from_millis(250))
        };
        let mut watched = std::collections::HashSet::new();
        let mut announced = false;
        if let Backend::Files(f) = &mut a.backend {
            if first && a.limits.max_concurrent.is_some() && f.holder_lock.is_none() {
                f.holder_lock = handover::HolderLock::take(&f.dir, &f.stem, a.me.pid);
            }
        }
        loop {
            let max_wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (limits, me) = (a.limits, a.me.clone());
            let decision = a.backend.admit(&limits, &me, first, max_wait)?;
            let refuse = |msg: String| {
                Err(if first {
                    Stop::Refused(msg)
                } else {
                    Stop::Failed(msg)
                })
            };
            match decision {
                Admission::Admitted {
                    probe,
                    slot,
                    token_wait,
                } => {
                    let newly = (probe && !a.probe) || (slot && !a.holds_slot);
                    a.probe |= probe;
                    a.holds_slot |= slot;
                    if newly {
                        a.hold();
                    }
                    if let (true, Backend::Files(f)) = (slot, &a.backend) {
                        for &pid in &watched {
                            handover::remove_abandoned(&f.dir, &f.stem, pid);
                        }
                    }
                    if probe && a.verbose {
                        say(&format!(
                            "circuit breaker for key '{}' is half-open: this run is the probe",
                            a.key
                        ));
                    }
                    if !token_wait.is_zero() {
                        if a.chatty {
                            let rate = a.limits.rate.map(|r| r.to_string()).unwrap_or_default();
                            say(&format!(
                                "rate limit {rate} for key '{}': waiting {} for a token",
                                a.key,
                                fmt_dur(token_wait)
                            ));
                        }
                        if let Some(sig) = sleep(token_wait, false) {
                            return Ok(Err(Stop::Interrupted(sig)));
                        }
                    }
                    return Ok(Ok(()));
                }
                Admission::Breaker(Verdict::Open { left, failures }) => {
                    return Ok(refuse(format!(
                        "circuit breaker for key '{}' is open after {failures} consecutive failed attempts; next try in {}",
                        a.key,
                        fmt_dur(left.max(Duration::from_millis(1)))
                    )));
                }
                Admission::Breaker(Verdict::Probing { pid }) => {
                    return Ok(refuse(format!(
                        "circuit breaker for key '{}' is half-open and run {pid} is the probe",
                        a.key
                    )));
                }
                Admission::ProbeHeld { by } => {
                    return Ok(refuse(format!(
                        "circuit breaker for key '{}' is half-open and run {by} is the probe",
                        a.key
                    )));
                }
                Admission::Breaker(_) => unreachable!("admit passes these through as Admitted"),
                Admission::TooLate(wait) => {
                    if !first {
                        return Ok(Err(Stop::Failed("deadline reached".into())));
                    }
                    let rate = a.limits.rate.map(|r| r.to_string()).unwrap_or_default();
                    return Ok(refuse(format!(
                        "rate limit {rate} for key '{}': the next token comes in {}, after the deadline",
                        a.key,
                        fmt_dur(wait)
                    )));
                }
                full @ (Admission::Full { .. } | Admission::Held { .. }) => {
                    let (pids, list) = match full {
                        Admission::Full { pids } => {
                            let list = pids.iter().map(|p| format!("pid {p}")).collect::<Vec<_>>();
                            (pids, list)
                        }
                        Admission::Held { by } => (Vec::new(), by),
                        _ => unreachable!("matched above"),
                    };
                    let now = Instant::now();
                    if now >= slot_end {
                        let waited = if a.slot_wait.is_zero() {
                            String::new()
                        } else {
                            format!(" after waiting {}", fmt_dur(now - started))
                        };
                        return Ok(refuse(format!(
                            "no free slot for key '{}' (--max-concurrent {}, held by {}){waited}",
                            a.key,
                            a.limits.max_concurrent.unwrap_or(0),
                            list.join(", ")
                        )));
                    }
                    if !announced && a.chatty {
                        say(&format!(
                            "no free slot for key '{}' (--max-concurrent {}); waiting up to {} for one",
                            a.key,
                            a.limits.max_concurrent.unwrap_or(0),
                            fmt_dur(slot_end - started)
                        ));
                        announced = true;
                    }
                    if let (Some(wake), Backend::Files(f)) = (&a.waker, &a.backend) {
                        for pid in pids {
                            // Once each: a holder seen again after its watch
                            // fired cannot be watched (dead, not yet reaped).
                            if watched.insert(pid) {
                                let _ = handover::watch(&f.dir, &f.stem, pid, wake.clone());
                            }
                        }
                    }
                    if let Some(sig) = sleep(pause.min(slot_end - now), true) {
                        return Ok(Err(Stop::Interrupted(sig)));
                    }
                    pause = (pause * 3 / 2).min(most);
                }
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let Some(a) = &mut self.active else {
            return;
        };
        if !a.holds_slot && !a.probe {
            return;
        }
        let (pid, slot, probe) = (a.me.pid, a.holds_slot, a.probe);
        if let Err(e) = a.backend.release(pid, slot, probe) {
            say(&format!(
                "warning: cannot release the shared state of key '{}' ({e}); the next run will sweep it",
                a.key
            ));
        }
    }
}

fn fail_open(key: &str, why: &str) {
    say(&format!(
        "warning: shared state of key '{key}' unavailable ({why}); running without --breaker, --rate-limit and --max-concurrent"
    ));
}

/// `patience --state KEY`: the key's state as JSON on stdout (breaker,
/// tokens, live slot holders), read without taking the lock.
pub fn show(key: &str, state_dir_option: Option<&Path>) -> Result<String, Error> {
    let dir = state_dir(state_dir_option)?;
    let path = store::state_path(&dir, &file_stem(key));
    let (state, problem) = store::read_state(&path).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(why) = problem {
        say(&format!(
            "warning: state file {} is unreadable ({why}); showing a fresh state",
            path.display()
        ));
    }
    let view = view(&state, key, &path, wall_ns(), &alive);
    Ok(format!("{view:#}\n"))
}

/// The `--state` JSON of `state` at `now`.
pub fn view(
    state: &State,
    key: &str,
    path: &Path,
    now: u64,
    alive: &dyn Fn(&Holder) -> bool,
) -> serde_json::Value {
    let b = &state.breaker;
    let cfg = breaker::Config {
        threshold: 0,
        cooldown: Duration::from_nanos(b.cooldown_ns),
    };
    let secs = |ns: u64| ns as f64 / 1e9;
    let probe = b.probe.as_ref().filter(|p| alive(p)).map(|p| p.pid);
    let rate = state.bucket.last_rate();
    let pids: Vec<i32> = state
        .slots
        .holders
        .iter()
        .filter(|h| alive(h))
        .map(|h| h.pid)
        .collect();
    serde_json::json!({
        "version": state.version,
        "key": key,
        "file": path.to_string_lossy(),
        "breaker": {
            "state": b.phase.word(),
            "consecutive_failures": b.failures,
            "opened_at": (b.opened_at_ns > 0).then(|| secs(b.opened_at_ns)),
            "retry_in_s": secs(u64::try_from(b.time_left(&cfg, now).as_nanos()).unwrap_or(u64::MAX)),
            "probe_pid": probe,
        },
        "rate_limit": {
            "limit": rate.map(|r| r.to_string()),
            "tokens": rate.map(|r| state.bucket.available(&r, now)),
        },
        "slots": {
            "limit": (state.slots.max > 0).then_some(state.slots.max),
            "pids": pids,
        },
    })
}

/// Where `--state` and `--reset-state` look: the server of `--state-url`
/// when there is one, else the state directory.
pub struct StoreAt<'a> {
    pub state_dir: Option<&'a Path>,
    pub state_url: Option<&'a url::StateUrl>,
    pub password_file: Option<&'a Path>,
}

/// `--state KEY`, from the store the settings name. A server that cannot
/// be reached is an error here (exit 125): nothing runs to fail open for.
pub fn show_in(key: &str, at: &StoreAt<'_>) -> Result<String, Error> {
    match at.state_url {
        None => show(key, at.state_dir),
        #[cfg(feature = "redis")]
        Some(url) => remote::show(url, at.password_file, key)
            .map(|v| format!("{v:#}\n"))
            .map_err(remote_error),
        #[cfg(not(feature = "redis"))]
        Some(url) => Err(no_redis(url)),
    }
}

/// `--reset-state KEY`, in the store the settings name.
pub fn reset_in(key: &str, at: &StoreAt<'_>) -> Result<(), Error> {
    match at.state_url {
        None => reset(key, at.state_dir),
        #[cfg(feature = "redis")]
        Some(url) => remote::reset(url, at.password_file, key).map_err(remote_error),
        #[cfg(not(feature = "redis"))]
        Some(url) => Err(no_redis(url)),
    }
}

#[cfg(feature = "redis")]
fn remote_error(e: remote::RemoteError) -> Error {
    match e {
        remote::RemoteError::PasswordFile(m) => Error::Config(m),
        remote::RemoteError::Unavailable(m) => Error::Internal(m),
    }
}

#[cfg(not(feature = "redis"))]
fn no_redis(url: &url::StateUrl) -> Error {
    Error::Internal(format!(
        "--state-url {url}: this patience was built without Redis support"
    ))
}

/// `patience --reset-state KEY`: deletes the key's state.
pub fn reset(key: &str, state_dir_option: Option<&Path>) -> Result<(), Error> {
    let dir = state_dir(state_dir_option)?;
    let store = Store::open(&dir, key, &file_stem(key)).map_err(|e| Error::Internal(e.to_string()))?;
    store.reset().map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
    }

    /// A scratch directory for the search, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("patience-locate-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
            Scratch(p)
        }
        fn at(&self, rel: &str) -> String {
            self.0.join(rel).to_str().unwrap().to_string()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn found(l: Location) -> (PathBuf, String) {
        match l {
            Location::Found { dir, how } => (dir, how),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_state_directory_follows_the_spec_order() {
        let t = Scratch::new("order");
        let uid = sys::getuid();
        let tmp = t.0.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let (x, h, r) = (t.at("x"), t.at("h"), t.at("r"));
        for d in [&h, &r] {
            std::fs::DirBuilder::new().mode(0o700).create(d).unwrap();
        }
        let all = [
            ("XDG_STATE_HOME", x.as_str()),
            ("HOME", h.as_str()),
            ("XDG_RUNTIME_DIR", r.as_str()),
        ];
        let at = |vars: &[(&str, &str)], create| locate_in(None, env(vars), uid, &tmp, create);
        // Without create nothing is written: the first place would do.
        let (dir, how) = found(at(&all, false));
        assert_eq!(
            (dir, how.as_str()),
            (
                t.0.join("x/patience"),
                "$XDG_STATE_HOME/patience (would be created)"
            )
        );
        assert!(!t.0.join("x").exists());
        assert_eq!(found(at(&all, true)).0, t.0.join("x/patience"));
        assert_eq!(found(at(&all[1..], true)).0, t.0.join("h/.local/state/patience"));
        assert_eq!(found(at(&all[2..], true)).0, t.0.join("r/patience"));
        let (dir, how) = found(at(&[], true));
        assert_eq!(dir, tmp.join(format!("patience-{uid}")));
        assert!(how.contains("$HOME is not set"), "{how}");
        let mode = std::fs::symlink_metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A configured directory is the only place tried.
        let p = t.at("p");
        assert_eq!(
            found(locate_in(Some(Path::new(&p)), env(&all), uid, &tmp, true)).0,
            PathBuf::from(&p)
        );
        // Empty or relative values do not count.
        let odd = [("XDG_STATE_HOME", "rel"), ("HOME", "")];
        let (dir, how) = found(at(&odd, true));
        assert_eq!(dir, tmp.join(format!("patience-{uid}")));
        assert!(
            how.contains("$XDG_STATE_HOME rel is not an absolute path"),
            "{how}"
        );
    }

    #[test]
    fn a_missing_home_is_never_created_and_slash_is_no_home() {
        let t = Scratch::new("home");
        let uid = sys::getuid();
        let tmp = t.0.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let gone = t.at("nonexistent");
        // XDG_STATE_HOME under the missing HOME is not created either.
        let state = format!("{gone}/.local/state");
        let vars = [("HOME", gone.as_str()), ("XDG_STATE_HOME", state.as_str())];
        let (dir, how) = found(locate_in(None, env(&vars), uid, &tmp, true));
        assert_eq!(dir, tmp.join(format!("patience-{uid}")));
        assert!(how.contains(&format!("{gone} does not exist")), "{how}");
        assert!(!Path::new(&gone).exists());
        let (_, how) = found(locate_in(None, env(&[("HOME", "/")]), uid, &tmp, false));
        assert!(how.contains("HOME is /"), "{how}");
    }

    #[test]
    fn a_squatted_last_resort_leaves_nowhere_and_a_bad_runtime_dir_is_skipped() {
        let t = Scratch::new("squat");
        let uid = sys::getuid();
        let tmp = t.0.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let squat = tmp.join(format!("patience-{uid}"));
        std::os::unix::fs::symlink(&t.0, &squat).unwrap();
        // XDG_RUNTIME_DIR that is not a directory: passed over, not created.
        let r = t.at("runtime-file");
        std::fs::write(&r, b"").unwrap();
        match locate_in(None, env(&[("XDG_RUNTIME_DIR", r.as_str())]), uid, &tmp, true) {
            Location::Nowhere(why) => {
                assert!(why.contains("is a symbolic link"), "{why}");
                assert!(why.contains("is not a directory"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // The same problem in a configured directory is refused.
        let l = locate_in(Some(&squat), env(&[]), uid, &tmp, true);
        assert!(
            matches!(&l, Location::Unsafe(m) if m.contains("refusing")),
            "{l:?}"
        );
    }

    #[test]
    fn keys_become_safe_distinct_file_names() {
        assert_eq!(file_stem("backup-db_1.2"), "backup-db_1.2");
        assert_eq!(file_stem("a/b"), "a%2Fb");
        assert_eq!(file_stem(".."), "%2E.");
        assert_eq!(file_stem(".hidden"), "%2Ehidden");
        assert_eq!(file_stem("a b\n"), "a%20b%0A");
        assert_eq!(file_stem("é"), "%C3%A9");
        assert_ne!(file_stem("a/b"), file_stem("a_b"));
        assert_ne!(file_stem("a%2Fb"), file_stem("a/b"));
        let long = "x".repeat(500);
        let stem = file_stem(&long);
        assert!(stem.len() <= 120 && stem.contains('~'), "{stem}");
        assert_ne!(stem, file_stem(&"x".repeat(501)));
        assert!(parse_key("").is_err());
    }

    fn limits(breaker: Option<u64>, rate: Option<&str>, slots: Option<u64>) -> Limits {
        Limits {
            breaker: breaker.map(|threshold| breaker::Config {
                threshold,
                cooldown: Duration::from_secs(30),
            }),
            rate: rate.map(|r| Rate::parse(r).unwrap()),
            max_concurrent: slots,
        }
    }

    fn h(pid: i32) -> Holder {
        Holder {
            pid,
            start: None,
            since_ns: 0,
        }
    }

    #[test]
    fn admission_takes_everything_or_nothing() {
        let l = limits(Some(1), Some("1/10s"), Some(1));
        let yes = |_: &Holder| true;
        let mut st = State::default();
        let a = admit(&mut st, &l, &h(1), 100 * S, true, None, &yes);
        assert_eq!(
            a,
            Admission::Admitted {
                probe: false,
                slot: true,
                token_wait: Duration::ZERO
            }
        );
        // Full: no token is taken from the bucket for a refused run.
        let before = st.clone();
        assert_eq!(
            admit(&mut st, &l, &h(2), 100 * S, true, None, &yes),
            Admission::Full { pids: vec![1] }
        );
        assert_eq!(st, before);
        // The holder died: swept, and the slot is free again.
        let dead1 = |x: &Holder| x.pid != 1;
        let a = admit(
            &mut st,
            &l,
            &h(2),
            101 * S,
            true,
            Some(Duration::from_secs(60)),
            &dead1,
        );
        assert_eq!(
            a,
            Admission::Admitted {
                probe: false,
                slot: true,
                token_wait: Duration::from_secs(9)
            }
        );
        // A later attempt takes no slot, and a token too far off is refused
        // without being taken.
        let before = st.clone();
        assert_eq!(
            admit(
                &mut st,
                &l,
                &h(2),
                101 * S,
                false,
                Some(Duration::from_secs(1)),
                &yes
            ),
            Admission::TooLate(Duration::from_secs(19))
        );
        assert_eq!(st, before);
    }

    #[test]
    fn a_probe_refused_for_want_of_a_slot_keeps_no_lease() {
        let l = limits(Some(1), None, Some(1));
        let yes = |_: &Holder| true;
        let mut st = State::default();
        admit(&mut st, &l, &h(1), 0, true, None, &yes);
        st.breaker.record(&l.breaker.unwrap(), &h(1), false, 0);
        assert_eq!(
            admit(&mut st, &l, &h(2), 10 * S, true, None, &yes),
            Admission::Breaker(Verdict::Open {
                left: Duration::from_secs(20),
                failures: 1
            })
        );
        assert_eq!(
            admit(&mut st, &l, &h(2), 40 * S, true, None, &yes),
            Admission::Full { pids: vec![1] }
        );
        assert_eq!(st.breaker.probe, None);
        st.slots.release(1);
        assert!(matches!(
            admit(&mut st, &l, &h(2), 40 * S, true, None, &yes),
            Admission::Admitted { probe: true, .. }
        ));
    }

    #[test]
    fn a_recycled_pid_is_not_alive() {
        let me = Holder::me();
        assert!(me.start.is_some(), "/proc is mounted on Linux");
        assert!(alive(&me));
        let recycled = Holder {
            start: me.start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(!alive(&recycled));
        // Unknown start time: the PID alone decides.
        assert!(alive(&Holder { start: None, ..me }));
        assert!(!alive(&h(0)));
        assert!(!alive(&h(-5)));
    }

    #[test]
    fn the_view_shows_live_holders_only() {
        let mut st = State::default();
        st.slots.take(&h(1), 2);
        st.slots.take(&h(2), 2);
        st.breaker.failures = 4;
        let v = view(&st, "k", Path::new("/s/k.json"), 0, &|x: &Holder| x.pid == 2);
        assert_eq!(v["slots"]["pids"], serde_json::json!([2]));
        assert_eq!(v["slots"]["limit"], 2);
        assert_eq!(v["breaker"]["state"], "closed");
        assert_eq!(v["breaker"]["consecutive_failures"], 4);
        assert_eq!(v["rate_limit"]["tokens"], serde_json::Value::Null);
    }
}
