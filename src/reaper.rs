//! Init duty, for patience as a container's PID 1 or with `--init`: patience
//! becomes a child subreaper, so whatever its attempts leave behind (daemons
//! that double-fork, children of a shell that exited) re-parents to it, and
//! one reaper thread reaps every child that exits, for the whole run,
//! including during the delays between attempts. Nothing ever stays a zombie.
//!
//! The attempt's own exit status must never be stolen by that reaping, and
//! child.rs's rule still holds (the main thread signals, then reaps; no
//! signal can reach a recycled pid). So:
//! - the reaper thread replaces the per-attempt waiter thread: it blocks in
//!   `waitid(P_ALL, WNOWAIT)`, which reports an exit but reaps nothing;
//! - when the exited child is the current attempt, it only hands the exit
//!   to the main thread (through `on_event`) and waits until the main
//!   thread has reaped it (until then `waitid` would report the same zombie
//!   forever); the attempt's stops are handed on the same way;
//! - any other child is an orphan, reaped at once;
//! - one lock orders it all: the main thread holds it from fork until the
//!   attempt's pid is recorded (so a fast-exiting attempt is never taken for
//!   an orphan, and std can still reap a child whose exec failed), while
//!   reaping the attempt, and while signalling orphans (so an orphan's pid is
//!   not recycled between the listing and the signal). The reaper holds it
//!   to decide and to reap.

use std::collections::HashSet;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys::{self, ExitKind};

/// How long the reaper sleeps when patience has no child at all. Children
/// normally appear only when patience spawns (which wakes it at once), but
/// as PID 1 a process that entered the container from outside (`docker
/// exec`) is adopted when its parent dies.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The init-mode reaper. Created once per run; its thread lives as long as
/// patience does.
pub struct Reaper {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The running attempt's pid, from fork until the main thread reaps it.
    attempt: Option<i32>,
    /// Its exit was sent to the main thread already.
    forwarded: bool,
    /// Children patience had before its first attempt, which it did not
    /// start (a shell's background job, inherited through exec): reaped when
    /// they exit, never signalled. Their pids stay reserved until reaped.
    strangers: HashSet<i32>,
    /// More children whose exits are forwarded, not reaped, as the
    /// attempt's is: the shims and probes of `patience --services`, which
    /// has many at once. Reaped by `reap_tracked`.
    tracked: HashSet<i32>,
    /// Those of them whose exit was forwarded already.
    tracked_forwarded: HashSet<i32>,
}

impl Reaper {
    /// Makes patience a child subreaper and starts the reaper thread, which
    /// hands the attempt's exit (pid and how it ended) or stop (pid and the
    /// signal) to `on_event`. Call once, before the first attempt.
    pub fn start(on_event: impl Fn(i32, Result<ExitKind, i32>) + Send + 'static) -> io::Result<Reaper> {
        // PID 1 adopts orphans anyway; elsewhere, without the prctl (a kernel
        // before 3.4, a seccomp filter) orphans go to init as usual, and
        // patience still reaps what is its own.
        if let Err(e) = sys::set_child_subreaper() {
            if sys::getpid() != 1 {
                crate::messages::say(&format!("--init: cannot become a child subreaper: {e}"));
            }
        }
        let state = State {
            strangers: children().into_iter().collect(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&for_thread, &on_event))?;
        Ok(Reaper { shared })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Spawns the attempt and records its pid before the reaper may look at
    /// it. Call from the main thread (PR_SET_PDEATHSIG follows the forking
    /// thread).
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut state = self.lock();
        // While the lock is held the reaper may see this child exit but not
        // reap it: std's spawn reaps a child whose exec failed itself, and
        // panics if that child is already gone.
        let child = cmd.spawn()?;
        state.attempt = Some(child.id() as i32);
        state.forwarded = false;
        self.shared.changed.notify_all();
        Ok(child)
    }

    /// Spawns a child whose exit is forwarded like the attempt's, for a
    /// caller with many children at once; reap it with `reap_tracked`.
    pub fn spawn_tracked(&self, cmd: &mut Command) -> io::Result<Child> {
        let mut state = self.lock();
        let child = cmd.spawn()?;
        state.tracked.insert(child.id() as i32);
        self.shared.changed.notify_all();
        Ok(child)
    }

    /// Reaps tracked child `pid` once its exit was forwarded.
    pub fn reap_tracked(&self, pid: i32) {
        let mut state = self.lock();
        sys::reap(pid);
        state.tracked.remove(&pid);
        state.tracked_forwarded.remove(&pid);
        self.shared.changed.notify_all();
    }

    /// Sends `sig` to every child that is neither tracked nor a stranger:
    /// what a shim killed outright left behind. True when there was one.
    pub fn signal_untracked(&self, sig: i32) -> bool {
        let state = self.lock();
        let mut any = false;
        for pid in children() {
            if !state.tracked.contains(&pid) && !state.strangers.contains(&pid) && state.attempt != Some(pid)
            {
                any |= sys::alive_not_zombie(pid) && sys::kill(pid, sig).is_ok();
            }
        }
        any
    }

    /// Reaps the attempt `pid` once its exit was forwarded and its group
    /// cleaned up. After this its pid may be reused.
    pub fn reap_attempt(&self, pid: i32) {
        let mut state = self.lock();
        sys::reap(pid);
        if state.attempt == Some(pid) {
            state.attempt = None;
        }
        self.shared.changed.notify_all();
    }

    /// Sends `sig` (then SIGCONT, unless it is SIGKILL or 0) to every child
    /// of patience other than the attempt `except`, the members of its
    /// process group (signalled with the group, and only once) and the
    /// strangers: the orphans an attempt left behind outside its process
    /// group (after `setsid`), which are killed with the attempt as its
    /// group is. True when there was one; signal 0 only asks.
    pub fn signal_orphans(&self, except: i32, sig: i32) -> bool {
        let state = self.lock();
        let mut any = false;
        for pid in children() {
            if pid != except && !state.strangers.contains(&pid) && sys::getpgid(pid) != Some(except) {
                any |= sys::alive_not_zombie(pid) && sys::kill(pid, sig).is_ok();
                if sig != libc::SIGKILL && sig != 0 {
                    let _ = sys::kill(pid, libc::SIGCONT);
                }
            }
        }
        any
    }

    /// As PID 1 only: sends `sig` to every other process of the PID
    /// namespace (then SIGCONT, so a stopped one can act on it). False when
    /// there is nobody left, or patience is not PID 1. Signal 0 only asks.
    pub fn signal_everyone(&self, sig: i32) -> bool {
        if sys::getpid() != 1 {
            return false;
        }
        let anyone = sys::kill_everyone_else(sig);
        if anyone && sig != 0 && sig != libc::SIGKILL {
            sys::kill_everyone_else(libc::SIGCONT);
        }
        anyone
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A poisoned lock only means a thread panicked while holding it; the
    // state (two plain fields) is still consistent, and panic = abort anyway.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reaper thread's loop.
fn reap_forever(shared: &Shared, on_event: &dyn Fn(i32, Result<ExitKind, i32>)) {
    loop {
        match sys::wait_any_exit_or_stop() {
            // The attempt's stop goes to the main thread, which decides;
            // an orphan's is only consumed.
            Ok(Some((pid, Err(sig)))) => {
                if lock(shared).attempt == Some(pid) {
                    on_event(pid, Err(sig));
                }
            }
            Ok(Some((pid, Ok(exit)))) => {
                let mut state = lock(shared);
                if state.attempt == Some(pid) {
                    if !state.forwarded {
                        state.forwarded = true;
                        on_event(pid, Ok(exit));
                    }
                    // The main thread signals the group, then reaps.
                    while state.attempt == Some(pid) {
                        state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                } else if state.tracked.contains(&pid) {
                    if state.tracked_forwarded.insert(pid) {
                        on_event(pid, Ok(exit));
                    }
                    while state.tracked.contains(&pid) {
                        state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                } else if sys::reap_if_exited(pid) {
                    state.strangers.remove(&pid);
                }
            }
            Ok(None) => {
                // No child at all: wait for the next attempt to be spawned.
                let state = lock(shared);
                if state.attempt.is_none() && state.tracked.is_empty() {
                    let _ = shared.changed.wait_timeout(state, IDLE_POLL);
                }
            }
            // waitid fails only on bad arguments; never spin on it.
            Err(_) => std::thread::sleep(IDLE_POLL),
        }
    }
}

/// The pids of patience's children, from /proc/self/task/*/children (a
/// re-parented orphan may hang under any of patience's threads). Empty when
/// /proc is missing (an empty chroot) or belongs to another PID namespace
/// (`unshare --pid` without `--mount-proc`), where its numbers are not ours.
fn children() -> Vec<i32> {
    let ours = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
    if ours != Some(sys::getpid()) {
        return Vec::new();
    }
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_lists_a_child_and_not_ourselves() {
        let mut child = Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let pid = child.id() as i32;
        let listed = children();
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed.contains(&pid), "{listed:?} lacks {pid}");
        assert!(!listed.contains(&sys::getpid()));
    }
}
