//! One attempt's process: spawning it in its own process group, waiting for
//! it, and taking its whole tree down at a timeout or a forwarded signal.
//!
//! Who does what, so that no signal can ever reach a recycled pid:
//! - a waiter thread blocks in `waitid(WNOWAIT)`: it learns of the exit but
//!   leaves the zombie in place, which keeps the pid and the process group
//!   number reserved;
//! - the calling (main) thread is the watchdog: it waits on one channel for
//!   the exit, a delivered signal or its next timer (first signal at the
//!   timeout, SIGKILL after the grace), sends every signal itself, and only
//!   then reaps. Signalling and reaping happen on one thread, in that order.
//!
//! The main thread is also the one that forks, so `PR_SET_PDEATHSIG` (which
//! follows the forking *thread*) lasts as long as patience does.
//!
//! When the output must be read (`output::Plan`), its reader threads start
//! before the fork and are drained only after all that: the exit is seen,
//! the group cleaned up and the leader reaped, then the readers get a short
//! grace to reach end of file, so a grandchild holding the pipes open cannot
//! keep the attempt from ending.
//!
//! In init mode (PID 1 or `--init`) the run's one `Reaper` thread takes the
//! waiter's place: it forwards the attempt's exit the same way, unreaped, and
//! reaps orphans itself (see reaper.rs). The rule above is unchanged.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::conditions::Observed;
use crate::output::{self, Captured};
use crate::reaper::Reaper;
use crate::signals::Meaning;
use crate::sys::{self, ExitKind, SigMask};

/// What reaches the attempt loop while it waits.
#[derive(Debug)]
pub enum Event {
    /// patience received this signal.
    Signal(i32),
    /// The attempt's process exited (not yet reaped).
    Exited(i32, io::Result<ExitKind>),
    /// The attempt's process was stopped by this signal.
    Stopped(i32, i32),
    /// A slot of the shared state may have been freed (`state::handover`).
    Wake,
    /// The `--services` supervisor ends this attempt (not ready in time):
    /// as a timeout would, so it is a failed attempt (124 if the last).
    End,
    /// The `--services` supervisor stops the service: the stop signal
    /// (`--signal`) goes to the attempt as a stop signal patience received
    /// would, whatever that signal means to patience itself.
    Stop,
    /// The supervisor delivers this signal to the attempt's main process
    /// (`patiencectl signal`); it stops nothing by itself.
    Deliver(i32),
}

/// What patience inherited from its caller and must hand on to each child:
/// which of the signals it changes for itself were ignored, and the mask.
#[derive(Clone, Copy)]
pub struct Inherited {
    pipe_ignored: bool,
    ttin_ignored: bool,
    ttou_ignored: bool,
    chld_ignored: bool,
    mask: SigMask,
}

impl Inherited {
    /// Records the inherited dispositions, then sets patience's own: SIGPIPE
    /// ignored (a closed stdout is an EPIPE to handle, not a death), and
    /// SIGTTIN/SIGTTOU ignored (writing a diagnostic from a background job
    /// must not stop patience). SIGCHLD goes back to default, since an
    /// inherited SIG_IGN would make the kernel reap children on its own and
    /// `waitid` would never see the attempt's exit (GNU timeout 8.29 fix);
    /// and the signals patience acts on are unblocked, whatever mask it
    /// inherited. Call first thing in `main`, before any thread starts.
    pub fn capture_and_prepare() -> Inherited {
        let inherited = Inherited {
            pipe_ignored: sys::is_ignored(libc::SIGPIPE),
            ttin_ignored: sys::is_ignored(libc::SIGTTIN),
            ttou_ignored: sys::is_ignored(libc::SIGTTOU),
            chld_ignored: sys::is_ignored(libc::SIGCHLD),
            mask: SigMask::current(),
        };
        for sig in [libc::SIGPIPE, libc::SIGTTIN, libc::SIGTTOU] {
            sys::ignore(sig);
        }
        sys::set_default(libc::SIGCHLD);
        let mut wanted = crate::signals::caught(false);
        wanted.push(libc::SIGCHLD);
        sys::unblock(&wanted);
        inherited
    }

    /// The set-up a child started by patience gets: the caller's
    /// dispositions and mask back, and death with patience.
    pub fn child_setup(&self) -> sys::ChildSetup {
        sys::ChildSetup {
            restore: [
                (libc::SIGPIPE, self.pipe_ignored),
                (libc::SIGTTIN, self.ttin_ignored),
                (libc::SIGTTOU, self.ttou_ignored),
                (libc::SIGCHLD, self.chld_ignored),
            ],
            mask: self.mask,
            die_with_parent: true,
            parent: sys::getpid(),
            terminal: None,
        }
    }

    /// True when the caller had `sig` blocked.
    pub fn blocked(&self, sig: i32) -> bool {
        self.mask.contains(sig)
    }
}

/// How to start and stop one attempt.
pub struct Spec<'a> {
    pub command: &'a [OsString],
    pub env: Vec<(&'static str, String)>,
    /// Own process group (the default) or patience's (`--foreground`).
    pub own_group: bool,
    /// When to send the first signal (`--timeout` or `--deadline`), if ever.
    pub stop_at: Option<Instant>,
    pub signal: i32,
    /// Grace before SIGKILL after a timeout, and for what the attempt leaves
    /// in its group when it exits.
    pub kill_after: Duration,
    /// Grace before SIGKILL after a stop signal patience received and
    /// passed on: only when `--kill-after` was given, since a container
    /// runtime that sends SIGTERM gives its own grace and then kills.
    pub forward_grace: Option<Duration>,
    /// PID 1, `--init` or `--restart always`: SIGHUP is a reload signal, and
    /// signals that do not stop the run go to the main process only.
    pub supervising: bool,
    /// What the child's stdin, stdout and stderr are.
    pub stdio: &'a output::Plan,
    /// The init-mode reaper, which then waits for the attempt instead of a
    /// waiter thread of its own.
    pub reaper: Option<&'a Reaper>,
}

/// Why an attempt could not start.
#[derive(Debug)]
pub enum SpawnError {
    /// The command does not exist (exit status 127).
    NotFound(io::Error),
    /// The command exists but cannot be executed (exit status 126).
    NotExecutable(io::Error),
    /// patience could not set up the child's streams (pipes, threads,
    /// the replay file): its own failure (exit status 125).
    Setup(io::Error),
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub exit: ExitKind,
    /// The stop timer fired (the attempt counts as timed out whatever it
    /// exited with afterwards, as with `timeout`).
    pub timed_out: bool,
    /// SIGKILL had to be sent after the grace period.
    pub killed: bool,
    /// A stop signal patience received while the attempt ran and passed
    /// on, or the Ctrl-C (SIGINT, SIGQUIT) the attempt died of while it held
    /// the terminal: the run ends with this attempt.
    pub interrupted: Option<i32>,
    /// The attempt was stopped by SIGTTIN or SIGTTOU (it wanted the
    /// terminal from a process group that is not the terminal's), so
    /// patience killed it: it could never have gone on.
    pub tty_stop: Option<i32>,
    pub duration: Duration,
    /// What the capture path saw (pattern matches, held output); empty
    /// when the child inherited patience's streams.
    pub output: Captured,
}

impl Ended {
    /// What the success and retry rules look at.
    pub fn observed(&self) -> Observed {
        Observed {
            exit: self.exit,
            timed_out: self.timed_out,
            tty_stop: self.tty_stop,
            matches: self.output.matches,
            reader_gone: self.output.reader_gone,
        }
    }
}

/// Runs one attempt to its end. `events` carries delivered signals (from
/// `signals::listen`); `tx` is its sender, handed to the waiter thread.
pub fn run(
    spec: &Spec,
    inherited: &Inherited,
    events: &Receiver<Event>,
    tx: &Sender<Event>,
) -> Result<Ended, SpawnError> {
    // A foreground job hands the terminal to the attempt's group while it
    // runs, as job-control shells do, so a command that reads the terminal
    // works; it is taken back after. Never from the background.
    let terminal = if spec.own_group {
        sys::foreground_terminal()
    } else {
        None
    };
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..]);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if spec.own_group {
        cmd.process_group(0);
    }
    sys::prepare_child(
        &mut cmd,
        sys::ChildSetup {
            terminal,
            ..inherited.child_setup()
        },
    );
    let (stdio, capture) = spec.stdio.prepare().map_err(SpawnError::Setup)?;
    stdio.apply(&mut cmd);
    let started = Instant::now();
    let spawned = match spec.reaper {
        Some(reaper) => reaper.spawn(&mut cmd),
        None => cmd.spawn(),
    };
    // The Command holds patience's copies of the child's pipe ends: closed
    // now, so the readers see end of file once the child's side is done.
    drop(cmd);
    let child = spawned.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound(e),
        _ => SpawnError::NotExecutable(e),
    })?;
    let pid = child.id() as i32;
    crate::services::shim::attempt_pid(pid);
    if let Some(fd) = terminal {
        sys::give_terminal(fd, pid);
    }
    // std's Child would reap on wait(); this module reaps by pid instead,
    // after the group is cleaned up. Dropping Child neither kills nor waits.
    drop(child);

    let waiter = match spec.reaper {
        Some(_) => None,
        None => {
            let waiter_tx = tx.clone();
            let waiter = std::thread::Builder::new()
                .name("waiter".into())
                .spawn(move || loop {
                    match sys::wait_exit_or_stop(pid) {
                        Ok(Err(sig)) => {
                            if waiter_tx.send(Event::Stopped(pid, sig)).is_err() {
                                break;
                            }
                        }
                        Ok(Ok(exit)) => {
                            let _ = waiter_tx.send(Event::Exited(pid, Ok(exit)));
                            break;
                        }
                        Err(e) => {
                            let _ = waiter_tx.send(Event::Exited(pid, Err(e)));
                            break;
                        }
                    }
                });
            match waiter {
                Ok(waiter) => Some(waiter),
                // No thread to be told of the exit (out of memory or
                // threads): this attempt cannot be watched, so it goes, and
                // patience says why rather than aborting with the child
                // left behind.
                Err(e) => {
                    Target {
                        pid,
                        group: spec.own_group,
                    }
                    .signal(libc::SIGKILL);
                    sys::reap(pid);
                    drop(capture.finish(output::DRAIN_GRACE));
                    return Err(SpawnError::Setup(e));
                }
            }
        }
    };

    let target = Target {
        pid,
        group: spec.own_group,
    };
    let mut timed_out = false;
    let mut killed = false;
    let mut interrupted = None;
    let mut tty_stop = None;
    // The next timer: (when, signal to send then).
    let mut timer: Option<(Instant, i32)> = spec.stop_at.map(|t| (t, spec.signal));
    let exit = loop {
        let event = match timer {
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some((at, _)) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match event {
            Ok(Event::Exited(p, status)) if p == pid => match status {
                Ok(kind) => break kind,
                // waitid failing on our own child is a bug; report it as a
                // KILL so the run fails visibly rather than hangs.
                Err(_) => break ExitKind::Signal(libc::SIGKILL),
            },
            Ok(Event::Exited(..)) => {}
            // A process group of its own is no job of the shell's: stopped
            // for the terminal, nobody will ever continue it, and it would
            // hang the run until its timeout, or for ever. With
            // --foreground it is the caller's job, and `fg` resumes it.
            Ok(Event::Stopped(p, sig))
                if p == pid
                    && target.group
                    && tty_stop.is_none()
                    && (sig == libc::SIGTTIN || sig == libc::SIGTTOU) =>
            {
                tty_stop = Some(sig);
                target.signal(libc::SIGKILL);
            }
            // Ctrl-Z reached the attempt, which holds the terminal: patience
            // is the shell's job, so it stops too (with the terminal back),
            // and `fg` resumes both.
            Ok(Event::Stopped(p, sig))
                if p == pid && terminal.is_some() && sig != libc::SIGTTIN && sig != libc::SIGTTOU =>
            {
                if let Some(fd) = terminal {
                    sys::give_terminal(fd, sys::getpgrp());
                    sys::stop_self();
                    sys::give_terminal(fd, pid);
                }
                let _ = sys::kill_group(pid, libc::SIGCONT);
            }
            Ok(Event::Stopped(..) | Event::Wake) => {}
            Ok(Event::Deliver(sig)) => {
                let _ = sys::kill(pid, sig);
            }
            Ok(Event::End) => {
                if !timed_out && interrupted.is_none() {
                    target.signal(spec.signal);
                    timed_out = true;
                    timer = Some((grace_end(spec.kill_after), libc::SIGKILL));
                }
            }
            Ok(Event::Stop) => {
                target.signal(spec.signal);
                if interrupted.is_none() {
                    interrupted = Some(spec.signal);
                    if let (false, Some(grace)) = (timed_out, spec.forward_grace) {
                        timer = Some((grace_end(grace), libc::SIGKILL));
                    }
                }
            }
            Ok(Event::Signal(sig)) => match crate::signals::meaning(sig, spec.supervising) {
                Meaning::Stop => {
                    target.signal(sig);
                    if interrupted.is_none() {
                        interrupted = Some(sig);
                        // Escalate only after an explicit --kill-after, and
                        // never over a timeout's escalation under way.
                        if let (false, Some(grace)) = (timed_out, spec.forward_grace) {
                            timer = Some((grace_end(grace), libc::SIGKILL));
                        }
                    }
                }
                Meaning::Pass if spec.supervising => {
                    let _ = sys::kill(pid, sig);
                }
                Meaning::Pass => target.send(sig),
            },
            Err(RecvTimeoutError::Timeout) => {
                let (_, sig) = timer.take().expect("a timer was set");
                target.signal(sig);
                if sig == libc::SIGKILL {
                    killed = true;
                } else {
                    timed_out = true;
                    timer = Some((grace_end(spec.kill_after), libc::SIGKILL));
                }
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the loop holds a sender"),
        }
    };
    // Killed because it stopped for the terminal: it ended by that signal.
    let exit = match tty_stop {
        Some(sig) => ExitKind::Signal(sig),
        None => exit,
    };
    let duration = started.elapsed();
    if let Some(fd) = terminal {
        sys::give_terminal(fd, sys::getpgrp());
    }
    // Ctrl-C or Ctrl-\ on the terminal the attempt held or shared: the
    // user wants the run to stop, as a shell stops a script, whether or not
    // patience got the signal too (it did not, when the attempt held it).
    let at_the_terminal = terminal.is_some() || (!spec.own_group && sys::foreground_terminal().is_some());
    if let (None, true, ExitKind::Signal(sig @ (libc::SIGINT | libc::SIGQUIT))) =
        (interrupted, at_the_terminal, exit)
    {
        interrupted = Some(sig);
    }
    // The leader is a zombie: its group number cannot be reused yet. Whatever
    // it left behind goes now, so retries never pile up on a previous
    // attempt and nothing outlives it: the stop signal (unless the group
    // had one already), then SIGKILL when the grace ends.
    if target.group {
        let already = timed_out || interrupted.is_some();
        let grace_ends = match timer {
            Some((at, libc::SIGKILL)) => at,
            // The grace ran out and the group got SIGKILL: the orphans its
            // leader held until then get no second grace (a service's
            // stop stays within its kill-after, orphans included).
            _ if killed => Instant::now(),
            _ => grace_end(spec.kill_after),
        };
        if clear_leftovers(spec, pid, already, grace_ends, events, &mut interrupted) {
            killed = true;
        }
    }
    match spec.reaper {
        Some(reaper) => reaper.reap_attempt(pid),
        None => sys::reap(pid),
    }
    if let Some(waiter) = waiter {
        let _ = waiter.join();
    }
    let output = capture.finish(output::DRAIN_GRACE);
    Ok(Ended {
        exit,
        timed_out,
        killed,
        interrupted,
        tty_stop,
        duration,
        output,
    })
}

/// How often patience looks whether an attempt's leftovers are gone.
const LEFTOVER_POLL: Duration = Duration::from_millis(10);

/// Takes down what attempt `pid` left in its process group (and, in init
/// mode, the orphans it left outside it) once its leader exited, while the
/// leader is still an unreaped zombie: the stop signal once (to the group
/// unless `already` sent it; to the orphans outside it, which no group
/// signal reached, always), then SIGKILL at `grace_ends` to whatever is
/// left. A stop
/// signal patience receives meanwhile cuts the grace short (and is the
/// run's interruption if there was none). True when SIGKILL was needed.
fn clear_leftovers(
    spec: &Spec,
    pid: i32,
    already: bool,
    grace_ends: Instant,
    events: &Receiver<Event>,
    interrupted: &mut Option<i32>,
) -> bool {
    let left = || {
        let orphans = spec.reaper.is_some_and(|r| r.signal_orphans(pid, 0));
        // Without /proc (an empty chroot) the group cannot be looked at
        // while its leader is a zombie; the signal is sent, and the leftovers
        // get the grace only if they are init's orphans (see below).
        orphans || sys::group_has_others(pid) != Some(false)
    };
    // Without /proc the answer is None, and stays so for this attempt.
    let first_look = sys::group_has_others(pid);
    let visible = first_look.is_some();
    if first_look == Some(false) && !spec.reaper.is_some_and(|r| r.signal_orphans(pid, 0)) {
        return false;
    }
    if !already {
        let _ = sys::kill_group(pid, spec.signal);
        let _ = sys::kill_group(pid, libc::SIGCONT);
    }
    // Orphans outside the group never had the group's signal: they get
    // the stop signal now, whatever the group got, so that a daemon that
    // would exit on it is not simply SIGKILLed when the grace ends.
    if let Some(reaper) = spec.reaper {
        reaper.signal_orphans(pid, spec.signal);
    }
    // `--kill-after 0`: no SIGKILL, ever (GNU timeout's -k 0), so nothing
    // to wait for either.
    if spec.kill_after.is_zero() {
        return false;
    }
    // No /proc: nothing tells whether the group is empty while the leader
    // is unreaped, so it gets the grace only when patience can tell (or the
    // polite signal was all a normal exit asked for before this release).
    while visible && left() {
        let wait = grace_ends.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            break;
        }
        match events.recv_timeout(wait.min(LEFTOVER_POLL)) {
            Ok(Event::Signal(sig)) if crate::signals::meaning(sig, spec.supervising) == Meaning::Stop => {
                interrupted.get_or_insert(sig);
                break;
            }
            Ok(Event::Stop) => {
                interrupted.get_or_insert(spec.signal);
                break;
            }
            _ => {}
        }
    }
    if !left() {
        return false;
    }
    if !visible && !already {
        return false;
    }
    let _ = sys::kill_group(pid, libc::SIGKILL);
    if let Some(reaper) = spec.reaper {
        reaper.signal_orphans(pid, libc::SIGKILL);
    }
    true
}

/// When the grace after a first signal ends. `--kill-after 0` means "never
/// escalate" (GNU timeout's `-k 0`; SIGKILL at once is `-s KILL`), and so
/// does a grace too large to add to `now`: `Instant` cannot express never,
/// so it is pushed out by the largest duration patience accepts.
fn grace_end(kill_after: Duration) -> Instant {
    let now = Instant::now();
    let grace = if kill_after.is_zero() {
        crate::duration::MAX
    } else {
        kill_after
    };
    now.checked_add(grace)
        .or_else(|| now.checked_add(crate::duration::MAX))
        .unwrap_or(now)
}

/// The process (or group) patience signals for this attempt.
struct Target {
    pid: i32,
    group: bool,
}

impl Target {
    /// Sends a stop signal `sig`, then SIGCONT so a stopped process can act
    /// on it (as GNU timeout does). Only called while the leader is
    /// unreaped.
    fn signal(&self, sig: i32) {
        self.send(sig);
        if sig != libc::SIGKILL && sig != libc::SIGCONT {
            self.send(libc::SIGCONT);
        }
    }

    /// Sends `sig` alone: a signal passed on that stops nothing must not
    /// wake a process the user stopped.
    fn send(&self, sig: i32) {
        let _ = if self.group {
            sys::kill_group(self.pid, sig)
        } else {
            sys::kill(self.pid, sig)
        };
    }
}
