//! The supervisor's event loop. The main thread owns all state; helper
//! threads (signals, the reaper, log readers, shim socket readers, probes,
//! control connections) only send it [`Msg`]s over one channel. Timers
//! (ready-timeout, the kill-after backstop, shutdown-timeout, `wait`
//! timeouts) are deadlines checked on each turn. What each control method
//! does is in `methods`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::child::Inherited;
use crate::error::Error;
use crate::reaper::Reaper;
use crate::settings::{StdinMode, Verbosity};
use crate::signals::Meaning;
use crate::sys::{self, ExitKind};

use super::control::{self, Call, Out};
use super::file::{Cond, ExitRule, LogMode, Ready};
use super::methods::Waiter;
use super::notify::{self, Notice};
use super::shim::{self, Order, Report};
use super::{health, logs, probe, Plan};

/// What reaches the event loop.
#[derive(Debug)]
pub enum Msg {
    Signal(i32),
    /// A tracked child exited (not yet reaped).
    Exited(i32, ExitKind),
    Report(usize, Report),
    PatternReady(usize),
    ProbeReady(usize, u64),
    /// A request on the control socket.
    Control(Call),
    /// One health check's result for an attempt (its generation).
    Health(usize, u64, Result<(), String>),
    /// A service's own word: `READY=1` or `STATUS=` on its notify socket,
    /// or (Ready) a newline on its `ready-fd`.
    Notified(usize, Notice),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Not selected.
    Idle,
    Waiting,
    Starting,
    Ready,
    Backoff,
    Stopping,
    Stopped,
    Succeeded,
    Failed,
    Blocked(String),
}

pub(super) struct Svc {
    pub(super) state: State,
    /// The shim's pid while its run lives.
    pub(super) pid: Option<i32>,
    link: Option<UnixStream>,
    pub(super) started: bool,
    pub(super) ever_ready: bool,
    /// The run's exit status, once it ended (or the root cause's, blocked).
    pub(super) status: Option<i32>,
    generation: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
    ready_deadline: Option<Instant>,
    /// SIGKILL to the shim at this time, if it has not exited (a backstop
    /// behind the shim's own kill-after).
    kill_at: Option<Instant>,
    pub(super) stop_requested: bool,
    /// Start it again once its run has ended (`restart`, or a
    /// `propagate = "restart"` edge), instead of ending.
    pub(super) restart_pending: bool,
    /// What status shows: the current attempt, its process, how the last
    /// one ended, attempts started after the first, the next attempt's time.
    pub(super) attempt: u64,
    pub(super) attempt_pid: Option<i32>,
    pub(super) last_exit: Option<String>,
    pub(super) restarts: u64,
    pub(super) next_at: Option<Instant>,
    /// The state last published (subscribe, waiters) and since when.
    pub(super) shown: State,
    pub(super) since: (Instant, SystemTime),
    pub(super) ring: logs::Shared,
    /// Its `log-file` (or `log-dir`'s), opened at its first start.
    log_file: Option<Arc<std::sync::Mutex<logs::LogFile>>>,
    /// Lines dropped by `log-overflow = "drop"`.
    pub(super) dropped: Arc<AtomicU64>,
    /// For `ready_s` of the `service` datagram.
    pub(super) ready_clock: super::metrics::ReadyClock,
    /// The current attempt's health checks, for status.
    pub(super) health: health::Tally,
    /// The last `STATUS=` of a `ready-notify` service, for status.
    pub(super) notify_status: Option<String>,
    /// Its `NOTIFY_SOCKET`, bound at its first start.
    notify_socket: Option<PathBuf>,
    /// READY=1 (or ready-fd's newline) came before the attempt's start.
    early_ready: bool,
}

/// Runs the stack to its end and returns the group's exit status.
/// `summary`: where the stack's summary-json goes, already opened.
pub fn run(plan: Plan, inherited: &Inherited, summary: Option<crate::report::JsonOut>) -> Result<i32, Error> {
    let (start, clock) = (SystemTime::now(), Instant::now());
    let exe = own_binary()?;
    let (tx, rx) = mpsc::channel();
    let sig_tx = tx.clone();
    crate::signals::listen(&crate::signals::caught(false), move |sig| {
        sig_tx.send(Msg::Signal(sig)).is_ok()
    })
    .map_err(|e| Error::Internal(format!("cannot install signal handlers: {e}")))?;
    // Held until this function returns, which gives the slot back.
    let _slot = match &plan.slot {
        None => None,
        Some(p) => match super::slot::take(p, &plan.group, &rx)? {
            Ok(gate) => Some(gate),
            Err((status, why)) => {
                super::summary::write(summary, || {
                    super::summary::document(&plan, None, status, start, clock.elapsed(), Some(&why))
                });
                return Ok(status);
            }
        },
    };
    let exits: probe::Exits = Default::default();
    let reaper_tx = tx.clone();
    let reaper = Reaper::start(move |pid, event| {
        if let Ok(exit) = event {
            let _ = reaper_tx.send(Msg::Exited(pid, exit));
        }
    })
    .map_err(|e| Error::Internal(format!("cannot start the reaper: {e}")))?;
    if plan.group.output == crate::settings::OutputMode::Failure {
        logs::hold();
    }
    let n = plan.stack.services.len();
    let svcs = (0..n)
        .map(|i| Svc {
            state: if plan.wanted[i] {
                State::Waiting
            } else {
                State::Idle
            },
            pid: None,
            link: None,
            started: false,
            ever_ready: false,
            status: None,
            generation: Arc::new(AtomicU64::new(0)),
            armed: Arc::new(AtomicBool::new(false)),
            ready_deadline: None,
            kill_at: None,
            stop_requested: false,
            restart_pending: false,
            attempt: 0,
            attempt_pid: None,
            last_exit: None,
            restarts: 0,
            next_at: None,
            shown: State::Idle,
            since: (Instant::now(), SystemTime::now()),
            ring: logs::Ring::new(i, plan.stack.group.log_lines, plan.stack.group.log_bytes),
            log_file: None,
            dropped: Arc::new(AtomicU64::new(0)),
            ready_clock: Default::default(),
            health: Default::default(),
            notify_status: None,
            notify_socket: None,
            early_ready: false,
        })
        .collect();
    let width = (0..n)
        .filter(|&i| plan.wanted[i])
        .map(|i| plan.stack.services[i].name.len())
        .max()
        .unwrap_or(0);
    let socket = match control::socket_path(&plan.stack.path, plan.stack.group.control_socket.as_deref()) {
        Ok(path) => match control::bind(&path) {
            Ok(listener) => {
                control::serve(listener, tx.clone())
                    .map_err(|e| Error::Internal(format!("cannot start the control thread: {e}")))?;
                Some(path)
            }
            Err(control::BindError::Live(pid)) => {
                let who = pid.map_or(String::new(), |p| format!(" (pid {p})"));
                let why = format!(
                    "another supervisor{who} already runs {} (control socket {})",
                    plan.stack.path.display(),
                    path.display()
                );
                logs::say("patience", &why);
                super::summary::write(summary, || {
                    super::summary::document(&plan, None, 75, start, clock.elapsed(), Some(&why))
                });
                return Ok(75);
            }
            // No control is no reason not to run the stack (a read-only
            // /tmp in a container): said once, as the state store does.
            Err(control::BindError::Other(why)) => {
                logs::say("patience", &format!("{why}; running without control"));
                None
            }
        },
        Err(e) => {
            logs::say(
                "patience",
                &format!("no control socket: {e}; running without control"),
            );
            None
        }
    };
    let metrics = super::metrics::Publisher::new(&plan);
    let mut sup = Sup {
        metrics,
        plan,
        svcs,
        exe,
        inherited: *inherited,
        tx,
        reaper: Arc::new(reaper),
        exits,
        width,
        shutting_down: false,
        shutdown_deadline: None,
        killed_all: false,
        status: None,
        waiters: Vec::new(),
        subscribers: Vec::new(),
        down_clients: Vec::new(),
        readers: Vec::new(),
        upward: notify::Upward::from_env(),
        sockets: None,
    };
    let status = sup.run(&rx);
    super::summary::write(summary, || {
        super::summary::document(&sup.plan, Some(&sup), status, start, clock.elapsed(), None)
    });
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    // `down` clients are answered by the end of their connection, which
    // must come with the process's exit, not before it.
    std::mem::forget(std::mem::take(&mut sup.down_clients));
    Ok(status)
}

/// The supervisor's own binary: /proc/self/exe, else argv[0] resolved
/// against PATH (a scratch image has no /proc).
fn own_binary() -> Result<PathBuf, Error> {
    if let Ok(p) = std::env::current_exe() {
        if p.is_file() {
            return Ok(p);
        }
    }
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let p = PathBuf::from(&arg0);
    if p.components().count() > 1 {
        return std::path::absolute(&p)
            .map_err(|e| Error::Internal(format!("cannot find patience's own binary: {e}")));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(&p))
        .find(|c| c.is_file())
        .ok_or_else(|| {
            Error::Internal("cannot find patience's own binary (no /proc, argv[0] not on PATH)".into())
        })
}

pub(super) struct Sup {
    pub(super) plan: Plan,
    pub(super) svcs: Vec<Svc>,
    exe: PathBuf,
    inherited: Inherited,
    tx: Sender<Msg>,
    reaper: Arc<Reaper>,
    exits: probe::Exits,
    width: usize,
    pub(super) shutting_down: bool,
    pub(super) shutdown_deadline: Option<Instant>,
    killed_all: bool,
    /// The group's exit status, decided by the first trigger.
    pub(super) status: Option<i32>,
    /// `wait` requests not answered yet.
    pub(super) waiters: Vec<Waiter>,
    /// `subscribe` clients: an `event` notification per state change.
    pub(super) subscribers: Vec<Sender<Out>>,
    /// `down` clients, answered by the supervisor's exit.
    pub(super) down_clients: Vec<Sender<Out>>,
    /// The log readers and the shims' link readers: patience exits once
    /// they have written out all their pipes and sockets held.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The `service` datagrams to patienced.
    pub(super) metrics: super::metrics::Publisher,
    /// patience's own service manager, when NOTIFY_SOCKET named one.
    upward: Option<notify::Upward>,
    /// The `ready-notify` services' sockets, made at the first need.
    sockets: Option<notify::Sockets>,
}

/// A run status as patience's exit status: the code, or 128+N.
fn status_of(exit: ExitKind) -> i32 {
    match exit {
        ExitKind::Code(c) => c,
        ExitKind::Signal(s) => 128 + s,
    }
}

pub(super) fn describe(status: i32) -> String {
    if status > 128 && status < 128 + 65 {
        format!("killed by {}", crate::signals::name(status - 128))
    } else {
        format!("exit code {status}")
    }
}

impl Sup {
    pub(super) fn name(&self, i: usize) -> &str {
        &self.plan.stack.services[i].name
    }

    fn say(&self, i: usize, line: &str) {
        if self.plan.group.verbosity > Verbosity::Quiet {
            logs::say(self.name(i), line);
        }
    }

    fn verbose(&self, i: usize, line: &str) {
        if self.plan.group.verbosity == Verbosity::Verbose {
            logs::say(self.name(i), line);
        }
    }

    fn run(&mut self, rx: &Receiver<Msg>) -> i32 {
        self.start_what_can();
        self.decide();
        self.publish();
        self.tell_manager();
        loop {
            if self.shutting_down {
                self.stop_what_can();
                if self.svcs.iter().all(|s| s.pid.is_none()) {
                    break;
                }
            }
            let next = self.next_timer();
            let msg = match next {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => self.timers(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.shutting_down {
                self.start_what_can();
                self.decide();
            }
            self.publish();
            self.tell_manager();
        }
        self.sweep();
        // The shims are gone, but their last lines may still be in the
        // pipes and sockets. Every write end was in a shim's subtree, all
        // of it gone now, so each reader sees its end of file.
        // Bounded all the same: a writer that escaped every sweep (another
        // session, started by hand) must not hold the exit for ever.
        let end = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in self.readers.drain(..).filter(|r| r.is_finished()) {
            let _ = reader.join();
        }
        if self.plan.group.output == crate::settings::OutputMode::Failure
            && self.status.is_some_and(|s| s != 0)
        {
            self.show_held();
        }
        self.status.unwrap_or(0)
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut at: Option<Instant> = self.shutdown_deadline;
        if let Some(t) = self.metrics.next_timer() {
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        for w in &self.waiters {
            if let Some(t) = w.deadline {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        if let Some(w) = self.upward.as_ref().and_then(|u| u.next_timer()) {
            at = Some(at.map_or(w, |a| a.min(w)));
        }
        for s in &self.svcs {
            for t in [s.ready_deadline, s.kill_at].into_iter().flatten() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if let Some(u) = &mut self.upward {
            u.tick(now);
        }
        if self.shutdown_deadline.is_some_and(|d| d <= now) && !self.killed_all {
            logs::say("patience", "shutdown-timeout reached: killing every service left");
            self.kill_all();
        }
        self.expire_waiters(now);
        for i in 0..self.svcs.len() {
            if self.svcs[i].ready_deadline.is_some_and(|d| d <= now) {
                self.svcs[i].ready_deadline = None;
                let t = self.plan.stack.services[i].ready_timeout.unwrap_or_default();
                self.say(
                    i,
                    &format!(
                        "not ready after {}; ending the attempt",
                        crate::duration::format(t)
                    ),
                );
                self.order(i, Order::End);
            }
            if self.svcs[i].kill_at.is_some_and(|d| d <= now) {
                self.svcs[i].kill_at = None;
                if let Some(pid) = self.svcs[i].pid {
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    pub(super) fn order(&mut self, i: usize, order: Order) {
        if let Some(link) = &mut self.svcs[i].link {
            let _ = link.write_all(&shim::encode(&order));
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Signal(sig) => match crate::signals::meaning(sig, true) {
                Meaning::Stop if self.shutting_down => {
                    if !self.killed_all {
                        logs::say(
                            "patience",
                            &format!("second {}: killing every service left", crate::signals::name(sig)),
                        );
                        self.kill_all();
                    }
                }
                Meaning::Stop => {
                    self.status.get_or_insert(128 + sig);
                    self.begin_shutdown();
                }
                _ => {
                    for s in &self.svcs {
                        if let Some(pid) = s.pid {
                            let _ = sys::kill(pid, sig);
                        }
                    }
                }
            },
            Msg::Exited(pid, exit) => {
                let waiting = self.exits.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
                if let Some(probe) = waiting {
                    let _ = probe.send(exit);
                    return;
                }
                if let Some(i) = self.svcs.iter().position(|s| s.pid == Some(pid)) {
                    self.reaper.reap_tracked(pid);
                    self.ended(i, status_of(exit));
                }
            }
            // The shim's exit (the reaper's thread) can overtake its last
            // reports (its link's thread): a report after the run ended
            // would make an ended service starting again, and the stack
            // would wait for it for ever.
            Msg::Report(i, _) if self.svcs[i].pid.is_none() => {}
            Msg::Report(i, report) => match report {
                Report::Start { attempt } => self.attempt_started(i, attempt),
                Report::Pid { pid } => self.svcs[i].attempt_pid = Some(pid),
                Report::End { exit, .. } => {
                    let s = &mut self.svcs[i];
                    s.generation.fetch_add(1, Ordering::AcqRel);
                    s.armed.store(false, Ordering::Release);
                    s.ready_deadline = None;
                    s.attempt_pid = None;
                    if !exit.is_empty() {
                        s.last_exit = Some(exit);
                    }
                    if matches!(s.state, State::Starting | State::Ready) {
                        s.state = State::Backoff;
                    }
                    self.propagate_restart(i);
                }
                Report::Backoff { delay_ms } => {
                    self.svcs[i].next_at = Instant::now().checked_add(Duration::from_millis(delay_ms));
                }
                Report::Say { .. } => {}
            },
            Msg::Control(call) => self.control(call),
            Msg::PatternReady(i) => {
                if self.svcs[i].state == State::Starting {
                    self.became_ready(i);
                }
            }
            Msg::ProbeReady(i, generation) => {
                if self.svcs[i].state == State::Starting
                    && self.svcs[i].generation.load(Ordering::Acquire) == generation
                {
                    self.became_ready(i);
                }
            }
            Msg::Health(i, generation, result) => self.health_result(i, generation, result),
            Msg::Notified(i, notice) => self.notified(i, notice),
        }
    }

    fn attempt_started(&mut self, i: usize, attempt: u64) {
        let svc = &self.plan.stack.services[i];
        let s = &mut self.svcs[i];
        if s.started || s.attempt > 0 {
            s.restarts += 1;
        }
        s.started = true;
        s.attempt = attempt;
        s.next_at = None;
        logs::lock(&s.ring).attempt = attempt;
        s.health.reset();
        let generation = s.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if self.shutting_down {
            return;
        }
        match &svc.ready {
            None => {
                s.state = State::Ready;
                s.ever_ready = true;
                self.start_health(i);
            }
            Some(kind) => {
                s.state = State::Starting;
                s.ready_deadline = svc.ready_timeout.map(|t| Instant::now() + t);
                match kind {
                    Ready::Pattern(_) => s.armed.store(true, Ordering::Release),
                    // The service tells: over its descriptor or socket.
                    Ready::Fd(_) | Ready::Notify => {}
                    _ => probe::spawn(
                        probe::Probe {
                            service: i,
                            kind: kind.clone(),
                            env: self.plan.shims[i].1.clone(),
                            clear_env: svc.clear_env,
                            cwd: svc.cwd.clone(),
                            delay: svc.ready_delay,
                            interval: svc.ready_interval,
                            probe_timeout: svc.ready_probe_timeout,
                            generation,
                            current: Arc::clone(&s.generation),
                        },
                        Arc::clone(&self.reaper),
                        Arc::clone(&self.exits),
                        self.tx.clone(),
                    ),
                }
            }
        }
        self.verbose(i, &format!("attempt {attempt} started"));
        if std::mem::take(&mut self.svcs[i].early_ready) && self.svcs[i].state == State::Starting {
            self.became_ready(i);
        }
    }

    fn became_ready(&mut self, i: usize) {
        let s = &mut self.svcs[i];
        s.state = State::Ready;
        s.ever_ready = true;
        s.ready_deadline = None;
        let how = self.plan.stack.services[i]
            .ready
            .as_ref()
            .map_or("started", |r| r.kind());
        self.verbose(i, &format!("ready ({how})"));
        self.start_health(i);
    }

    /// Service `i`'s shim exited: its run ended with `status`.
    fn ended(&mut self, i: usize, status: i32) {
        self.propagate_restart(i);
        let s = &mut self.svcs[i];
        s.pid = None;
        s.link = None;
        s.kill_at = None;
        s.ready_deadline = None;
        s.generation.fetch_add(1, Ordering::AcqRel);
        s.armed.store(false, Ordering::Release);
        s.status = Some(status);
        s.attempt_pid = None;
        s.next_at = None;
        if std::mem::take(&mut s.restart_pending) && !self.shutting_down {
            // `restart` or `propagate = "restart"`: a new run as soon as its
            // conditions hold, with no backoff; nothing of it has started.
            s.started = false;
            s.stop_requested = false;
            s.status = None;
            s.state = State::Waiting;
            return;
        }
        s.state = if s.stop_requested {
            State::Stopped
        } else if status == 0 {
            State::Succeeded
        } else {
            State::Failed
        };
        let state = s.state.clone();
        if self.shutting_down {
            return;
        }
        let g = &self.plan.stack.group;
        let critical = self.plan.stack.services[i].critical;
        if g.main.as_deref() == Some(self.name(i)) {
            self.status.get_or_insert(status);
            self.begin_shutdown();
        } else if state == State::Failed && critical {
            self.say(i, &format!("failed ({}); stopping the stack", describe(status)));
            self.status.get_or_insert(status);
            self.begin_shutdown();
        } else if g.exit == ExitRule::Any {
            self.status.get_or_insert(status);
            self.begin_shutdown();
        }
    }

    pub(super) fn ended_state(s: &State) -> bool {
        matches!(
            s,
            State::Stopped | State::Succeeded | State::Failed | State::Blocked(_)
        )
    }

    /// Whether service `i`'s condition `cond` on dependency `d` holds.
    pub(super) fn holds(&self, i: usize, d: usize, cond: Cond) -> bool {
        let dep = &self.svcs[d];
        let again = self.propagates(i, d);
        match cond {
            // Held now, not once: it comes back after a loss.
            Cond::Started if again => matches!(dep.state, State::Starting | State::Ready),
            Cond::Ready if again => dep.state == State::Ready,
            Cond::Started => dep.started,
            Cond::Ready => dep.ever_ready,
            Cond::Succeeded => dep.state == State::Succeeded,
            Cond::Ended => matches!(dep.state, State::Stopped | State::Succeeded | State::Failed),
        }
    }

    /// Starts every waiting service whose conditions hold; blocks those
    /// whose conditions never can.
    fn start_what_can(&mut self) {
        loop {
            let mut changed = false;
            for i in 0..self.svcs.len() {
                if self.svcs[i].state != State::Waiting {
                    continue;
                }
                let mut all = true;
                let mut blocked = None;
                for &(d, cond) in &self.plan.edges[i] {
                    let dep = &self.svcs[d];
                    if !self.holds(i, d, cond) {
                        all = false;
                        if Self::ended_state(&dep.state) {
                            let why = match &dep.state {
                                State::Blocked(w) => format!("{} is blocked ({w})", self.name(d)),
                                _ => format!(
                                    "{} {} ({}) before it {}",
                                    self.name(d),
                                    if dep.state == State::Stopped {
                                        "was stopped"
                                    } else {
                                        "failed"
                                    },
                                    describe(dep.status.unwrap_or(1)),
                                    cond.word()
                                ),
                            };
                            blocked = Some((why, dep.status.unwrap_or(1)));
                        }
                    }
                }
                if let Some((why, status)) = blocked {
                    self.svcs[i].state = State::Blocked(why.clone());
                    self.svcs[i].status = Some(status);
                    self.say(i, &format!("blocked: {why}"));
                    if self.plan.stack.services[i].critical {
                        self.status.get_or_insert(status);
                        self.begin_shutdown();
                        return;
                    }
                    changed = true;
                } else if all {
                    self.spawn(i);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// exit = "all": once every selected run has ended.
    fn decide(&mut self) {
        if self.shutting_down || self.plan.stack.group.exit != ExitRule::All {
            return;
        }
        let wanted: Vec<usize> = (0..self.svcs.len()).filter(|&i| self.plan.wanted[i]).collect();
        if !wanted.iter().all(|&i| Self::ended_state(&self.svcs[i].state)) {
            return;
        }
        let failed = wanted
            .iter()
            .find(|&&i| self.plan.stack.services[i].critical && self.svcs[i].state != State::Succeeded);
        self.status
            .get_or_insert(failed.map_or(0, |&i| self.svcs[i].status.unwrap_or(1)));
        self.begin_shutdown();
    }

    fn spawn(&mut self, i: usize) {
        match self.try_spawn(i) {
            Ok(()) => {}
            Err(e) => {
                logs::say(self.name(i), &format!("cannot start the service: {e}"));
                self.svcs[i].state = State::Failed;
                self.svcs[i].status = Some(125);
                if self.plan.stack.services[i].critical {
                    self.status.get_or_insert(125);
                    self.begin_shutdown();
                }
            }
        }
    }

    fn try_spawn(&mut self, i: usize) -> std::io::Result<()> {
        let notify_socket = self.notify_path(i)?;
        let svc = &self.plan.stack.services[i];
        // s6's readiness descriptor, and the shim's link moved out of its
        // way when the service wants descriptor 3.
        let ready_fd = match svc.ready {
            Some(Ready::Fd(n)) => Some((n, sys::pipe()?)),
            _ => None,
        };
        let link_fd = match ready_fd {
            Some((n, _)) if n == shim::FD => shim::FD + 1,
            _ => shim::FD,
        };
        let (argv, env) = &self.plan.shims[i];
        let (ours, theirs) = UnixStream::pair()?;
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        // Room for a burst (as the capture path asks for): fewer, larger
        // reads and writes for a service that writes a lot.
        sys::set_pipe_size(out_r.as_fd(), logs::PIPE_SIZE);
        sys::set_pipe_size(err_r.as_fd(), logs::PIPE_SIZE);
        let mut cmd = Command::new(&self.exe);
        cmd.args(argv);
        if svc.clear_env {
            cmd.env_clear();
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.env(shim::FD_VAR, link_fd.to_string());
        cmd.env_remove("NOTIFY_SOCKET");
        if let Some(path) = &notify_socket {
            cmd.env("NOTIFY_SOCKET", path);
        }
        if let Some(dir) = &svc.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(if self.plan.resolved[i].settings.stdin == StdinMode::Null {
            crate::output::null_input()?
        } else {
            Stdio::inherit()
        });
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        // Its own group: Ctrl-C on a terminal reaches the supervisor
        // alone, which stops the services in order.
        cmd.process_group(0);
        sys::prepare_child(&mut cmd, self.inherited.child_setup());
        let mut fds = vec![(theirs.as_raw_fd(), link_fd)];
        if let Some((n, (_, w))) = &ready_fd {
            fds.push((w.as_raw_fd(), *n));
        }
        sys::pass_fds(&mut cmd, &fds)?;
        let child = self.reaper.spawn_tracked(&mut cmd)?;
        drop(cmd);
        drop(theirs);
        if let Some((_, (r, w))) = ready_fd {
            // Only the shim and its attempts hold the write end now.
            drop(w);
            notify::watch_ready_fd(i, r, self.tx.clone())?;
        }
        let pid = child.id() as i32;
        drop(child);
        let prefix = match (svc.log, self.plan.stack.group.log_prefix) {
            (LogMode::Prefix, true) => format!("{:<w$} | ", svc.name, w = self.width).into_bytes(),
            _ => Vec::new(),
        };
        let mode = if svc.log == LogMode::Prefix && !self.plan.stack.group.log_prefix {
            LogMode::Raw
        } else {
            svc.log
        };
        let s = &mut self.svcs[i];
        let watch = |stream| match &svc.ready {
            Some(Ready::Pattern(p))
                if svc.ready_stream == stream || svc.ready_stream == super::file::Stream::Both =>
            {
                Some(logs::Watch {
                    pattern: p.clone(),
                    armed: Arc::clone(&s.armed),
                    service: i,
                    tx: self.tx.clone(),
                })
            }
            _ => None,
        };
        let g = &self.plan.stack.group;
        let log_path = svc
            .log_file
            .clone()
            .or_else(|| g.log_dir.as_ref().map(|d| d.join(format!("{}.log", svc.name))));
        if s.log_file.is_none() {
            if let Some(path) = log_path {
                match logs::LogFile::open(&path, svc.log_max_size, svc.log_keep) {
                    Ok(f) => s.log_file = Some(Arc::new(std::sync::Mutex::new(f))),
                    // The copy is lost, not the service: said once a start.
                    Err(e) => logs::say(
                        &svc.name,
                        &format!("log-file {}: {e}; no copy of its output", path.display()),
                    ),
                }
            }
        }
        let hold = self.plan.group.output == crate::settings::OutputMode::Failure;
        let sink = || logs::Sink {
            ring: Arc::clone(&s.ring),
            file: s.log_file.clone(),
            timestamps: g.log_timestamps,
            dropped: g.log_drop.then(|| Arc::clone(&s.dropped)),
            hold,
        };
        let out = logs::spawn_reader(
            out_r,
            1,
            prefix.clone(),
            mode,
            watch(super::file::Stream::Stdout),
            sink(),
        )?;
        let err = logs::spawn_reader(err_r, 2, prefix, mode, watch(super::file::Stream::Stderr), sink())?;
        self.readers.retain(|r| !r.is_finished());
        self.readers.extend([out, err]);
        let reader = ours.try_clone()?;
        let mut go = ours.try_clone()?;
        let ring = Arc::clone(&s.ring);
        let tx = self.tx.clone();
        let name = svc.name.clone();
        let quiet = self.plan.group.verbosity == Verbosity::Quiet;
        let link = std::thread::Builder::new()
            .name("shim-link".into())
            .spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Report>(&line) {
                        // The ring counts what comes next as this
                        // attempt's before the shim may execute it.
                        Ok(Report::Start { attempt }) => {
                            logs::lock(&ring).attempt = attempt;
                            let _ = go.write_all(&shim::encode(&Order::Go { attempt }));
                            if tx.send(Msg::Report(i, Report::Start { attempt })).is_err() {
                                break;
                            }
                        }
                        Ok(Report::Say { line }) => {
                            if !quiet || line.starts_with("failed") {
                                logs::say(&name, &line);
                            }
                        }
                        Ok(r) => {
                            if tx.send(Msg::Report(i, r)).is_err() {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
            })?;
        // Its last words (the run's final line) come just before the
        // shim's exit: patience waits for them as for the logs.
        self.readers.push(link);
        s.pid = Some(pid);
        s.link = Some(ours);
        s.state = State::Starting;
        self.verbose(i, &format!("started (pid {pid})"));
        Ok(())
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Some(u) = &mut self.upward {
            u.stopping();
        }
        self.shutdown_deadline = self.plan.stack.group.shutdown_timeout.map(|t| Instant::now() + t);
        for s in &mut self.svcs {
            if s.state == State::Waiting {
                s.state = State::Stopped;
            }
        }
    }

    /// Stops each running service once every running service that
    /// depends on it has stopped (all at once with shutdown = "parallel").
    /// Asks service `i`'s shim to stop its run (signal, then SIGKILL
    /// after its kill-after).
    pub(super) fn stop_one(&mut self, i: usize) {
        let grace = self.plan.resolved[i].settings.kill_after;
        let s = &mut self.svcs[i];
        s.stop_requested = true;
        s.state = State::Stopping;
        s.ready_deadline = None;
        // The shim escalates after its kill-after; this is the backstop
        // should the shim itself not answer.
        s.kill_at = Instant::now().checked_add(grace + Duration::from_secs(1));
        self.verbose(i, "stopping");
        self.order(i, Order::Stop);
    }

    fn stop_what_can(&mut self) {
        let parallel = self.plan.stack.group.parallel_shutdown;
        for i in 0..self.svcs.len() {
            if self.svcs[i].pid.is_none() || self.svcs[i].stop_requested {
                continue;
            }
            let dependents_running = (0..self.svcs.len())
                .any(|j| self.svcs[j].pid.is_some() && self.plan.edges[j].iter().any(|(d, _)| *d == i));
            if parallel || !dependents_running {
                self.stop_one(i);
            }
        }
    }

    fn kill_all(&mut self) {
        self.killed_all = true;
        for s in &mut self.svcs {
            if let Some(pid) = s.pid {
                s.stop_requested = true;
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
        self.reaper.signal_untracked(libc::SIGKILL);
    }

    /// `hold-output` on a stack that failed: the failed services' last
    /// attempts (from their ring buffers, at most `log-lines` each), then
    /// patience's own lines about them, the final ones included.
    fn show_held(&self) {
        let failed: Vec<usize> = (0..self.svcs.len())
            .filter(|&i| self.svcs[i].state == State::Failed)
            .collect();
        for &i in &failed {
            let s = &self.svcs[i];
            let svc = &self.plan.stack.services[i];
            let prefix = match (svc.log, self.plan.stack.group.log_prefix) {
                (LogMode::Discard, _) => continue,
                (LogMode::Prefix, true) => format!("{:<w$} | ", svc.name, w = self.width),
                _ => String::new(),
            };
            let lines = logs::lock(&s.ring).last(usize::MAX);
            for l in lines.iter().filter(|l| l.attempt == s.attempt) {
                let mut out = Vec::new();
                if self.plan.stack.group.log_timestamps {
                    out.extend_from_slice(logs::timestamp(l.time).as_bytes());
                }
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(&l.bytes);
                out.push(b'\n');
                logs::write_whole(l.stream, &out);
            }
        }
        let names: Vec<&str> = failed.iter().map(|&i| self.name(i)).collect();
        for line in logs::held(&names) {
            logs::write_whole(2, line.as_bytes());
        }
    }

    /// What a shim killed outright left behind goes too; as PID 1, every
    /// other process of the namespace (the final sweep patience does).
    fn sweep(&mut self) {
        if self.reaper.signal_untracked(0) {
            self.reaper.signal_untracked(libc::SIGKILL);
        }
        if self.reaper.signal_everyone(libc::SIGTERM) {
            let end = Instant::now() + Duration::from_secs(5);
            while self.reaper.signal_everyone(0) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.reaper.signal_everyone(libc::SIGKILL);
        }
    }
}

// Readiness by the service's word, health, sd_notify and propagated
// restarts (issue 16): kept apart from the loop's own methods above.
impl Sup {
    /// Starts the health checks of service `i`'s attempt, now ready.
    fn start_health(&mut self, i: usize) {
        let svc = &self.plan.stack.services[i];
        let Some(h) = &svc.health else { return };
        let s = &self.svcs[i];
        health::spawn(
            health::Watch {
                service: i,
                health: h.clone(),
                env: self.plan.shims[i].1.clone(),
                clear_env: svc.clear_env,
                cwd: svc.cwd.clone(),
                generation: s.generation.load(Ordering::Acquire),
                current: Arc::clone(&s.generation),
            },
            Arc::clone(&self.reaper),
            Arc::clone(&self.exits),
            self.tx.clone(),
        );
    }

    /// One health check's result: `health-failures` in a row end the
    /// attempt as a timeout would (the shim's policy and backoff decide
    /// what follows).
    fn health_result(&mut self, i: usize, generation: u64, result: Result<(), String>) {
        let s = &mut self.svcs[i];
        if s.state != State::Ready || s.generation.load(Ordering::Acquire) != generation || s.stop_requested {
            return;
        }
        let Some(h) = &self.plan.stack.services[i].health else {
            return;
        };
        if !s.health.record(&result, h.failures) {
            return;
        }
        // No more checks, nor a second order, for this attempt.
        s.generation.fetch_add(1, Ordering::AcqRel);
        let why = result.err().unwrap_or_default();
        let n = h.failures;
        self.say(
            i,
            &format!(
                "unhealthy: {why} ({n} {} in a row); ending the attempt",
                if n == 1 { "check" } else { "checks" }
            ),
        );
        self.order(i, Order::End);
    }

    /// True when service `j` depends on `d` with `propagate = "restart"`.
    fn propagates(&self, j: usize, d: usize) -> bool {
        let dep = self.name(d);
        self.plan.stack.services[j]
            .deps
            .iter()
            .any(|e| e.restart && e.name == dep)
    }

    /// Service `d`'s attempt ended: every running dependent on a
    /// `propagate = "restart"` edge is stopped, to wait for the condition
    /// again (SERVICES.md §3).
    fn propagate_restart(&mut self, d: usize) {
        if self.shutting_down {
            return;
        }
        for j in 0..self.svcs.len() {
            let s = &self.svcs[j];
            if s.pid.is_none() || s.stop_requested || !self.propagates(j, d) {
                continue;
            }
            self.say(
                j,
                &format!(
                    "{}'s attempt ended; stopping, to start again once it is back",
                    self.name(d)
                ),
            );
            let grace = self.plan.resolved[j].settings.kill_after;
            let s = &mut self.svcs[j];
            s.stop_requested = true;
            s.restart_pending = true;
            s.state = State::Stopping;
            s.ready_deadline = None;
            s.kill_at = Instant::now().checked_add(grace + Duration::from_secs(1));
            self.order(j, Order::Stop);
        }
    }

    /// A service's own word: over its notify socket or its ready-fd.
    fn notified(&mut self, i: usize, notice: Notice) {
        match notice {
            Notice::Ready => {
                let s = &mut self.svcs[i];
                match s.state {
                    State::Starting if s.started => {
                        self.became_ready(i);
                    }
                    // The service spoke before its shim's report that the
                    // attempt started reached this loop (two threads): it
                    // counts for the attempt about to be reported.
                    State::Starting | State::Backoff => s.early_ready = true,
                    _ => {}
                }
            }
            Notice::Status(text) => {
                self.verbose(i, &format!("status: {text}"));
                self.svcs[i].notify_status = Some(text);
            }
        }
    }

    /// Tells patience's own service manager, if any, how the stack is:
    /// `READY=1` once every selected service is ready or succeeded (or,
    /// not critical, has ended), and the counts of states as `STATUS=`.
    fn tell_manager(&mut self) {
        if self.upward.is_none() || self.shutting_down {
            return;
        }
        let mut settled = true;
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for (i, s) in self.svcs.iter().enumerate() {
            if !self.plan.wanted[i] {
                continue;
            }
            let critical = self.plan.stack.services[i].critical;
            settled &=
                s.ever_ready || s.state == State::Succeeded || (!critical && Self::ended_state(&s.state));
            let word = match s.state {
                State::Idle | State::Waiting => "waiting",
                State::Starting => "starting",
                State::Ready => "ready",
                State::Backoff => "backoff",
                State::Stopping => "stopping",
                State::Stopped => "stopped",
                State::Succeeded => "succeeded",
                State::Failed => "failed",
                State::Blocked(_) => "blocked",
            };
            match counts.iter_mut().find(|(w, _)| *w == word) {
                Some((_, n)) => *n += 1,
                None => counts.push((word, 1)),
            }
        }
        let total: usize = counts.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
        let status = format!(
            "{total} service{}: {}",
            if total == 1 { "" } else { "s" },
            parts.join(", ")
        );
        if let Some(u) = &mut self.upward {
            u.update(settled, status);
        }
    }

    /// Service `i`'s NOTIFY_SOCKET, bound at its first start; None for a
    /// service without `ready-notify`.
    fn notify_path(&mut self, i: usize) -> std::io::Result<Option<PathBuf>> {
        if !matches!(self.plan.stack.services[i].ready, Some(Ready::Notify)) {
            return Ok(None);
        }
        if let Some(p) = &self.svcs[i].notify_socket {
            return Ok(Some(p.clone()));
        }
        if self.sockets.is_none() {
            self.sockets = Some(notify::Sockets::new()?);
        }
        let sockets = self.sockets.as_ref().expect("made above");
        let path = sockets.bind(i, self.tx.clone())?;
        self.svcs[i].notify_socket = Some(path.clone());
        Ok(Some(path))
    }
}
