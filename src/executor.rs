//! The attempt loop: runs attempts, waits the backoff delays, honours the
//! attempt limit, the restart policy and the deadline, and stops when a
//! signal arrives. It produces an [`Outcome`]; it prints nothing itself but
//! tells the `Reporter` what happens as it happens.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::{Rng, Schedule};
use crate::child::{self, Ended, Event, Inherited, SpawnError};
use crate::conditions::Verdict;
use crate::error::Error;
use crate::messages;
use crate::outcome::{Attempt, Ending, Outcome};
use crate::output;
use crate::reaper::Reaper;
use crate::report::Reporter;
use crate::settings::{Restart, Settings, Verbosity};

/// How many attempt records an outcome keeps: a supervisor restarting for
/// months must not grow without bound. Counters cover the rest.
pub const KEEP_ATTEMPTS: usize = 1000;

/// Runs the command as the settings say and returns how it went.
pub fn run(settings: &Settings, inherited: &Inherited, reporter: &mut Reporter) -> Result<Outcome, Error> {
    let (tx, rx) = mpsc::channel();
    let signal_tx = tx.clone();
    // Handlers first: as PID 1, a signal without a handler is dropped by the
    // kernel, so SIGTERM (`docker stop`) works only once they are installed.
    let caught = crate::signals::caught(settings.foreground);
    crate::signals::listen(&caught, move |sig| signal_tx.send(Event::Signal(sig)).is_ok())
        .map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))?;
    crate::services::shim::listen(tx.clone());
    let stdio = output::Plan::new(settings)
        .map_err(|e| Error::Internal(format!("cannot read stdin for --stdin replay: {e}")))?;
    let reaper = if settings.init_mode() {
        let tx = tx.clone();
        let reaper = Reaper::start(move |pid, event| {
            let _ = tx.send(match event {
                Ok(exit) => Event::Exited(pid, Ok(exit)),
                Err(sig) => Event::Stopped(pid, sig),
            });
        })
        .map_err(|e| Error::Internal(format!("cannot start the init-mode reaper: {e}")))?;
        Some(reaper)
    } else {
        None
    };
    let mut run = Loop {
        settings,
        inherited,
        reporter,
        rx,
        tx,
        stdio,
        held: None,
        metrics: crate::metrics::Sender::for_settings(settings),
        reaper: reaper.as_ref(),
    };
    let outcome = run.run()?;
    if let Some(reaper) = &reaper {
        run.last_rites(reaper);
    }
    Ok(outcome)
}

struct Loop<'a> {
    settings: &'a Settings,
    inherited: &'a Inherited,
    reporter: &'a mut Reporter,
    rx: Receiver<Event>,
    tx: Sender<Event>,
    /// How each attempt's stdin/stdout/stderr are set up.
    stdio: output::Plan,
    /// The last attempt's output, with `--output final|failure`.
    held: Option<std::sync::Arc<output::Held>>,
    metrics: crate::metrics::Sender,
    reaper: Option<&'a Reaper>,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<Outcome, Error> {
        let s = self.settings;
        let start = Instant::now();
        let mut outcome = Outcome {
            name: s.run_name(),
            ending: Ending::Succeeded,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            staggered: Duration::ZERO,
            total: 0,
            succeeded: 0,
            failed: 0,
            attempts: VecDeque::new(),
        };
        self.metrics.run_start(&outcome.name, outcome.started_at);
        // A deadline too far to represent is no deadline.
        let deadline = s.deadline.and_then(|d| start.checked_add(d));
        let mut rng = Rng::from_entropy();
        // Before admission (breaker, rate limit, slots), so the splay spreads
        // that traffic too and no slot is held through the wait.
        let (staggered, mut stagger_stop) = self.stagger(deadline, &mut rng);
        outcome.staggered = staggered;
        let mut schedule = Schedule::new(s.backoff.clone(), rng);
        let mut number: u64 = 0;
        let wake_tx = self.tx.clone();
        let waker: crate::state::handover::Waker = std::sync::Arc::new(move || {
            let _ = wake_tx.send(Event::Wake);
        });
        let mut gate = crate::state::Gate::new(&s.shared_state(), Some(waker))?;
        let ending = loop {
            if let Some(sig) = stagger_stop.take() {
                break Ending::Interrupted(sig);
            }
            // A signal that arrived during set-up or a delay ends the run
            // before another attempt starts.
            if let Some(sig) = self.pending_signal() {
                break Ending::Interrupted(sig);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break stopped_by_limit(outcome.last(), "deadline reached");
            }
            if let Err(stop) = gate.before_attempt(number + 1, deadline, &mut |d, wakeable| {
                self.sleep_or_wake(d, wakeable)
            }) {
                break match stop {
                    crate::state::Stop::Refused(why) => Ending::Rejected(why),
                    crate::state::Stop::Failed(why) => Ending::Failed(why),
                    crate::state::Stop::Interrupted(sig) => Ending::Interrupted(sig),
                };
            }
            number += 1;
            self.reporter.starting(number, s);
            crate::services::shim::attempt_started(number);
            let (attempt, interrupted) = self.attempt(number, deadline);
            let breaker_opened = interrupted.is_none() && gate.after_attempt(attempt.verdict.is_success());
            outcome.total += 1;
            if attempt.verdict.is_success() {
                outcome.succeeded += 1;
            } else {
                outcome.failed += 1;
            }
            let last_allowed = s.attempts != 0 && number >= s.attempts;
            let verdict = attempt.verdict.clone();
            let ran_for = attempt.duration;
            crate::services::shim::attempt_ended(
                number,
                verdict.is_success(),
                &crate::report::how(&attempt, s.timeout),
            );
            push(&mut outcome.attempts, attempt);
            self.metrics.attempt(&outcome.name, outcome.attempts.back());
            // A stop signal passed on to the attempt: the run ends as the
            // attempt did (GNU timeout and tini give the command's status).
            if let Some(sig) = interrupted {
                break Ending::Forwarded(sig);
            }
            let again = match (&verdict, s.restart) {
                (Verdict::Final(_), _) => Err(Ending::Failed("not retried".into())),
                (Verdict::Success(_), Restart::OnFailure) => Err(Ending::Succeeded),
                (Verdict::Retry(_), Restart::OnSuccess) => {
                    Err(Ending::Failed("failed under --restart on-success".into()))
                }
                _ if last_allowed => Err(stopped_by_limit(outcome.last(), "max attempts reached")),
                _ => Ok(()),
            };
            if let Err(ending) = again {
                break ending;
            }
            // The next admission is refused: say so now, not after a delay
            // announced as a retry.
            if breaker_opened {
                continue;
            }
            if s.reset_after.is_some_and(|r| ran_for >= r) {
                schedule.reset();
            }
            let delay = schedule.next_delay();
            if let Some(d) = deadline {
                // A delay that would reach the deadline could only be
                // followed by no attempt at all: stop now instead of waiting.
                if Instant::now().checked_add(delay).is_none_or(|end| end >= d) {
                    break stopped_by_limit(outcome.last(), "deadline reached");
                }
            }
            if let Some(last) = outcome.attempts.back_mut() {
                last.delay_after = Some(delay);
            }
            crate::services::shim::backoff(delay);
            self.reporter
                .attempt_ended(outcome.attempts.back().expect("just pushed"), s, Some(delay));
            if let Some(sig) = self.sleep(delay) {
                break Ending::Interrupted(sig);
            }
        };
        // Slot and probe lease go back before the run is reported.
        drop(gate);
        output::show_held(s.output, self.held.as_deref(), ending == Ending::Succeeded);
        outcome.ending = ending;
        outcome.duration = start.elapsed();
        Ok(outcome)
    }

    /// Runs attempt `number`; also returns the signal that interrupted it.
    fn attempt(&mut self, number: u64, deadline: Option<Instant>) -> (Attempt, Option<i32>) {
        let s = self.settings;
        let started_at = SystemTime::now();
        let now = Instant::now();
        let timeout_at = s.timeout.and_then(|t| now.checked_add(t));
        let stop_at = match (timeout_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let spec = child::Spec {
            command: &s.command,
            env: vec![
                ("PATIENCE_ATTEMPT", number.to_string()),
                ("PATIENCE_MAX_ATTEMPTS", s.attempts.to_string()),
            ],
            own_group: !s.foreground,
            stop_at,
            signal: s.signal,
            kill_after: s.kill_after,
            forward_grace: s.kill_after_given.then_some(s.kill_after),
            supervising: s.supervising(),
            stdio: &self.stdio,
            reaper: self.reaper,
        };
        // Only the last attempt's held output is ever shown.
        self.held = None;
        match child::run(&spec, self.inherited, &self.rx, &self.tx) {
            Ok(ended) => {
                let verdict = s.conditions.classify(&ended.observed());
                self.held = ended.output.held.clone();
                let interrupted = ended.interrupted;
                (from_ended(number, started_at, &ended, verdict), interrupted)
            }
            Err(e) => {
                let (status, what, err) = match e {
                    SpawnError::NotFound(e) => (127, "command not found", e),
                    SpawnError::NotExecutable(e) => (126, "command not executable", e),
                    SpawnError::Setup(e) => (125, "cannot set up the attempt (its streams or threads)", e),
                };
                self.reporter.cannot_run(&s.command[0], &err);
                let attempt = Attempt {
                    number,
                    started_at,
                    duration: now.elapsed(),
                    exit: None,
                    timed_out: false,
                    killed: false,
                    verdict: s.conditions.not_started(status, what),
                    delay_after: None,
                    spawn_status: Some(status),
                };
                (attempt, None)
            }
        }
    }

    /// What PID 1 does before it exits (the kernel then SIGKILLs whatever is
    /// left in its namespace, with no warning): every other process gets the
    /// attempt's stop signal and `--kill-after` to finish, as `docker stop`
    /// gives (tini#180), then SIGKILL. A signal to patience cuts the grace
    /// short. Outside PID 1 nothing happens: the orphans an attempt left went
    /// with it.
    fn last_rites(&mut self, reaper: &Reaper) {
        let s = self.settings;
        if !reaper.signal_everyone(s.signal) {
            return;
        }
        let end = Instant::now().checked_add(s.kill_after);
        while reaper.signal_everyone(0) {
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => Duration::from_millis(20),
            };
            if left.is_zero() {
                break;
            }
            if let Ok(Event::Signal(sig)) = self.rx.recv_timeout(left.min(Duration::from_millis(20))) {
                if self.stops(sig) {
                    break;
                }
            }
        }
        // Silent when everyone left in time: the common case needs no words.
        if reaper.signal_everyone(libc::SIGKILL) && s.verbosity > Verbosity::Quiet {
            messages::say(&format!(
                "processes left in the container did not exit within {} of {}: sent SIGKILL",
                crate::duration::format(s.kill_after),
                crate::signals::name(s.signal)
            ));
        }
    }

    /// A stop signal received and not yet acted on, if any. Signals that
    /// stop nothing have no attempt to go to between attempts.
    fn pending_signal(&self) -> Option<i32> {
        while let Ok(event) = self.rx.try_recv() {
            match event {
                Event::Signal(sig) if self.stops(sig) => return Some(sig),
                Event::Stop => return Some(self.settings.signal),
                _ => {}
            }
        }
        None
    }

    /// True when `sig` ends the run.
    fn stops(&self, sig: i32) -> bool {
        crate::signals::meaning(sig, self.settings.supervising()) == crate::signals::Meaning::Stop
    }

    /// Waits the `--stagger` before the first attempt: a random time below
    /// it, or below what is left of the deadline when that is less, so the
    /// first attempt always starts (a cron user's splay must not skip the
    /// job). Returns the time waited and the stop signal that cut it short.
    fn stagger(&mut self, deadline: Option<Instant>, rng: &mut Rng) -> (Duration, Option<i32>) {
        let Some(stagger) = self.settings.stagger else {
            return (Duration::ZERO, None);
        };
        let began = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(began));
        // Cut by the deadline, the draw leaves a tenth of the time left, so
        // that oversleeping a few milliseconds on a loaded machine never
        // turns the splay into a run with no attempt at all.
        let span = left.map_or(stagger, |l| if l < stagger { l - l / 10 } else { stagger });
        let wait = crate::backoff::stagger(span, rng);
        self.reporter
            .staggering(wait, stagger, left.filter(|l| *l < stagger));
        let stop = self.sleep(wait);
        (began.elapsed(), stop)
    }

    /// Waits `delay`, or less if a stop signal arrives: returns that signal.
    fn sleep(&self, delay: Duration) -> Option<i32> {
        self.sleep_or_wake(delay, false)
    }

    /// `sleep`, that also ends early, with `None`, on a wake from the shared
    /// state (a slot holder let go) when `wakeable`.
    fn sleep_or_wake(&self, delay: Duration, wakeable: bool) -> Option<i32> {
        let end = Instant::now().checked_add(delay);
        loop {
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => crate::duration::MAX,
            };
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left) {
                Ok(Event::Signal(sig)) if self.stops(sig) => return Some(sig),
                Ok(Event::Wake) if wakeable => return None,
                Ok(Event::Stop) => return Some(self.settings.signal),
                Ok(
                    Event::Signal(_)
                    | Event::Exited(..)
                    | Event::Stopped(..)
                    | Event::Wake
                    | Event::End
                    | Event::Deliver(_),
                ) => {}
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// How the run ends when a limit (`--attempts`, `--deadline`) stops it:
/// as the last attempt did. Under `--restart on-failure` that is always a
/// failure; under `always` or `on-success` a last attempt that succeeded
/// makes a successful run (exit status 0 and a message that agrees).
fn stopped_by_limit(last: Option<&Attempt>, reason: &str) -> Ending {
    match last {
        Some(a) if a.verdict.is_success() => Ending::Succeeded,
        _ => Ending::Failed(reason.into()),
    }
}

fn from_ended(number: u64, started_at: SystemTime, ended: &Ended, verdict: Verdict) -> Attempt {
    Attempt {
        number,
        started_at,
        duration: ended.duration,
        exit: Some(ended.exit),
        timed_out: ended.timed_out,
        killed: ended.killed,
        verdict,
        delay_after: None,
        spawn_status: None,
    }
}

fn push(attempts: &mut VecDeque<Attempt>, attempt: Attempt) {
    if attempts.len() == KEEP_ATTEMPTS {
        attempts.pop_front();
    }
    attempts.push_back(attempt);
}
