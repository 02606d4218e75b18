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
//! Failure policy: a state directory or file that is not the user's own (a
//! symlink, another owner, world-writable) is refused before anything runs
//! (exit 125). Anything else going wrong at run time — a lock held too
//! long, an I/O error, a corrupt file — is reported and the run goes on
//! without the shared state (fail open): a cron job is never stuck or killed
//! by its own safety net.

pub mod breaker;
pub mod ratelimit;
pub mod slots;
pub mod store;

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

/// Where the state lives: `configured` (`$PATIENCE_STATE_DIR`, else the
/// config's `state-dir`, as `config` resolved them), else
/// `$XDG_STATE_HOME/patience`, else `~/.local/state/patience`, else
/// `/tmp/patience-UID`, from the environment `var` and the user id.
/// Relative XDG_STATE_HOME or HOME values are ignored, as the XDG spec says.
fn dir_candidate(configured: Option<&Path>, var: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = configured {
        return dir.to_path_buf();
    }
    if let Some(xdg) = set("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("patience");
    }
    if let Some(home) = set("HOME").filter(|p| p.is_absolute()) {
        return home.join(".local/state/patience");
    }
    PathBuf::from(format!("/tmp/patience-{uid}"))
}

/// Creates `dir` (mode 0700, parents too) if missing, then checks that it is
/// a real directory of this user that nobody else can write to.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "state directory {} {why}; refusing to use it (set PATIENCE_STATE_DIR to a private directory)",
            dir.display()
        ))
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
            if let Err(e) = made {
                return Err(format!("cannot create state directory {}: {e}", dir.display()));
            }
            std::fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?
        }
        Err(e) => return Err(format!("cannot stat state directory {}: {e}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    let uid = sys::getuid();
    if meta.uid() != uid {
        return refuse(format!("is owned by uid {}, not by you (uid {uid})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by other users (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Where the state directory is (`--state-dir`, else the SPEC's search in
/// this process's environment), without creating or checking it.
pub fn dir_for(configured: Option<&Path>) -> PathBuf {
    dir_candidate(configured, |k| std::env::var_os(k), sys::getuid())
}

/// The state directory, created and checked; an unsafe one is an error
/// (exit 125) before anything runs.
pub fn state_dir(configured: Option<&Path>) -> Result<PathBuf, Error> {
    let dir = dir_for(configured);
    prepare_dir(&dir).map_err(Error::Internal)?;
    Ok(dir)
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

struct Active {
    store: Store,
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
}

impl Gate {
    /// Opens the state of the run's key when any limit is set. An unsafe
    /// state directory or file is an error (exit 125); a store that is merely
    /// unavailable gives a gate that lets everything through, with a warning.
    pub fn new(p: &Policy) -> Result<Gate, Error> {
        let limits = p.limits;
        if !limits.any() {
            return Ok(Gate { active: None });
        }
        let key = p.key.clone();
        let dir = state_dir(p.state_dir.as_deref())?;
        let store = match Store::open(&dir, &key, &file_stem(&key)) {
            Ok(store) => store,
            Err(StoreError::Refused(m)) => return Err(Error::Internal(m)),
            Err(StoreError::Unavailable(m)) => {
                fail_open(&key, &m);
                return Ok(Gate { active: None });
            }
        };
        Ok(Gate {
            active: Some(Active {
                store,
                key,
                limits,
                slot_wait: p.slot_wait,
                me: Holder::me(),
                chatty: p.chatty,
                verbose: p.verbose,
                holds_slot: false,
                probe: false,
            }),
        })
    }

    /// Call before attempt `number` (1-based). Waits for a slot (first
    /// attempt, up to `--slot-wait`) and for a token, through `sleep`, which
    /// returns early with a signal. Never waits past `deadline`.
    pub fn before_attempt(
        &mut self,
        number: u64,
        deadline: Option<Instant>,
        sleep: &mut dyn FnMut(Duration) -> Option<i32>,
    ) -> Result<(), Stop> {
        let Some(a) = &mut self.active else {
            return Ok(());
        };
        let first = number == 1;
        if !first && a.limits.breaker.is_none() && a.limits.rate.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let slot_end = started.checked_add(a.slot_wait).unwrap_or(started);
        let slot_end = deadline.map_or(slot_end, |d| d.min(slot_end));
        let mut pause = Duration::from_millis(20);
        let mut announced = false;
        loop {
            let max_wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (limits, me) = (a.limits, a.me.clone());
            let admit = |st: &mut State, now| admit(st, &limits, &me, now, first, max_wait, &alive);
            // Taking a slot or a token always writes: no read-only try first.
            let writes = (first && limits.max_concurrent.is_some()) || limits.rate.is_some();
            let decided = if writes {
                a.store.modify(&wall_ns, admit)
            } else {
                a.store.update(&wall_ns, admit)
            };
            let decision = match decided {
                Ok(d) => d,
                Err(e) => {
                    fail_open(&a.key, &e.to_string());
                    self.active = None;
                    return Ok(());
                }
            };
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
                    a.probe |= probe;
                    a.holds_slot |= slot;
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
                        if let Some(sig) = sleep(token_wait) {
                            return Err(Stop::Interrupted(sig));
                        }
                    }
                    return Ok(());
                }
                Admission::Breaker(Verdict::Open { left, failures }) => {
                    return refuse(format!(
                        "circuit breaker for key '{}' is open after {failures} consecutive failed attempts; next try in {}",
                        a.key,
                        fmt_dur(left.max(Duration::from_millis(1)))
                    ));
                }
                Admission::Breaker(Verdict::Probing { pid }) => {
                    return refuse(format!(
                        "circuit breaker for key '{}' is half-open and run {pid} is the probe",
                        a.key
                    ));
                }
                Admission::Breaker(_) => unreachable!("admit passes these through as Admitted"),
                Admission::TooLate(wait) => {
                    if !first {
                        return Err(Stop::Failed("deadline reached".into()));
                    }
                    let rate = a.limits.rate.map(|r| r.to_string()).unwrap_or_default();
                    return refuse(format!(
                        "rate limit {rate} for key '{}': the next token comes in {}, after the deadline",
                        a.key,
                        fmt_dur(wait)
                    ));
                }
                Admission::Full { pids } => {
                    let now = Instant::now();
                    if now >= slot_end {
                        let list: Vec<_> = pids.iter().map(|p| p.to_string()).collect();
                        let waited = if a.slot_wait.is_zero() {
                            String::new()
                        } else {
                            format!(" after waiting {}", fmt_dur(now - started))
                        };
                        return refuse(format!(
                            "no free slot for key '{}' (--max-concurrent {}, held by pid {}){waited}",
                            a.key,
                            a.limits.max_concurrent.unwrap_or(0),
                            list.join(", ")
                        ));
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
                    if let Some(sig) = sleep(pause.min(slot_end - now)) {
                        return Err(Stop::Interrupted(sig));
                    }
                    pause = (pause * 3 / 2).min(Duration::from_millis(250));
                }
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
        let recorded = a.store.update(&wall_ns, |st, now| {
            let opened = st.breaker.record(&cfg, &me, success, now);
            (opened, st.breaker.failures)
        });
        match recorded {
            Ok((opened, failures)) => {
                a.probe = false;
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
                fail_open(&a.key, &e.to_string());
                self.active = None;
                false
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let Some(a) = &self.active else {
            return;
        };
        if !a.holds_slot && !a.probe {
            return;
        }
        let (pid, slot, probe) = (a.me.pid, a.holds_slot, a.probe);
        let released = a.store.modify(&wall_ns, |st, _| {
            if slot {
                st.slots.release(pid);
            }
            if probe {
                st.breaker.release_probe(pid);
            }
        });
        if let Err(e) = released {
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

    #[test]
    fn the_state_directory_follows_the_spec_order() {
        let all = [("XDG_STATE_HOME", "/x"), ("HOME", "/h")];
        let p = Some(Path::new("/p"));
        assert_eq!(dir_candidate(p, env(&all), 7), PathBuf::from("/p"));
        assert_eq!(dir_candidate(None, env(&all), 7), PathBuf::from("/x/patience"));
        assert_eq!(
            dir_candidate(None, env(&all[1..]), 7),
            PathBuf::from("/h/.local/state/patience")
        );
        assert_eq!(dir_candidate(None, env(&[]), 7), PathBuf::from("/tmp/patience-7"));
        // Empty or relative values do not count.
        let odd = [("XDG_STATE_HOME", "rel"), ("HOME", "")];
        assert_eq!(
            dir_candidate(None, env(&odd), 7),
            PathBuf::from("/tmp/patience-7")
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
