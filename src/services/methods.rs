//! What each control method does to the stack (patience-services(5),
//! "Control"): the event loop's side of `control`. Every method runs on
//! the main thread, with the state it owns; answers go back over the
//! call's channel, at once or (`wait`, `down`, followers) later.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::control::{self, Call, Out, RpcError};
use super::file::Cond;
use super::logs;
use super::shim::Order;
use super::supervisor::{describe, State, Sup};

/// What a `wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Ready, or its run succeeded.
    Ready,
    Succeeded,
}

/// A `wait` not answered yet.
pub struct Waiter {
    services: Vec<usize>,
    goal: Goal,
    pub deadline: Option<Instant>,
    out: Sender<Out>,
}

/// The word of a state, as status and events show it.
pub(super) fn word(state: &State) -> &'static str {
    match state {
        State::Idle | State::Stopped => "stopped",
        State::Waiting => "waiting",
        State::Starting => "starting",
        State::Ready => "ready",
        State::Backoff => "backoff",
        State::Stopping => "stopping",
        State::Succeeded => "succeeded",
        State::Failed => "failed",
        State::Blocked(_) => "blocked",
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn error(code: i64, message: impl Into<String>) -> Result<Value, RpcError> {
    Err(RpcError::new(code, message))
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::new(
        control::INVALID_PARAMS,
        format!("invalid params: {}", message.into()),
    )
}

/// Refuses params the method does not take (a typo must not pass).
fn only(params: &Value, allowed: &[&str]) -> Result<(), RpcError> {
    let Value::Object(map) = params else {
        return Ok(());
    };
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("unknown param \"{k}\""))),
        None => Ok(()),
    }
}

fn seconds(params: &Value, key: &str) -> Result<Option<Duration>, RpcError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(invalid(format!("\"{key}\" must be a number of seconds"))),
        },
    }
}

impl Sup {
    /// The services a request names (`services`: an array of names), or
    /// `default` when it names none.
    fn named(&self, params: &Value, default: impl Fn(usize) -> bool) -> Result<Vec<usize>, RpcError> {
        match params.get("services") {
            None | Some(Value::Null) => Ok((0..self.svcs.len()).filter(|&i| default(i)).collect()),
            Some(Value::Array(items)) if items.is_empty() => {
                Ok((0..self.svcs.len()).filter(|&i| default(i)).collect())
            }
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    let Some(name) = item.as_str() else {
                        return Err(invalid("\"services\" must be an array of names"));
                    };
                    match self.plan.stack.index(name) {
                        Some(i) if !out.contains(&i) => out.push(i),
                        Some(_) => {}
                        None => return Err(RpcError::no_such_service(name)),
                    }
                }
                Ok(out)
            }
            Some(_) => Err(invalid("\"services\" must be an array of names")),
        }
    }

    fn names(&self, list: &[usize]) -> Value {
        Value::Array(list.iter().map(|&i| Value::from(self.name(i))).collect())
    }

    pub(super) fn control(&mut self, call: Call) {
        let Call { method, params, out } = call;
        let reply = match method.as_str() {
            "ping" => only(&params, &[]).map(|()| {
                json!({
                    "pid": crate::sys::getpid(),
                    "file": self.plan.stack.path.display().to_string(),
                    "name": self.plan.stack.group.name,
                    "version": env!("CARGO_PKG_VERSION"),
                })
            }),
            "status" => only(&params, &[]).map(|()| self.status_json()),
            "start" => self.start(&params),
            "stop" => self.stop(&params),
            "restart" => self.restart(&params),
            "signal" => self.signal(&params),
            "reset" => self.reset(&params),
            "logs" => return self.logs(&params, out),
            "wait" => return self.wait(&params, out),
            "subscribe" => {
                let _ = match only(&params, &[]) {
                    Ok(()) => {
                        let sent = out.send(Out::Reply(Ok(json!({ "subscribed": true })), true));
                        if sent.is_ok() {
                            self.subscribers.push(out);
                        }
                        return;
                    }
                    Err(e) => out.send(Out::Reply(Err(e), false)),
                };
                return;
            }
            "down" => return self.down(&params, out),
            _ => Err(RpcError::new(
                control::METHOD_NOT_FOUND,
                format!("method not found: {method}"),
            )),
        };
        let _ = out.send(Out::Reply(reply, false));
    }

    fn not_while_stopping(&self) -> Result<(), RpcError> {
        if self.shutting_down {
            Err(RpcError::new(
                control::SHUTTING_DOWN,
                "the stack is shutting down",
            ))
        } else {
            Ok(())
        }
    }

    /// Marks `i` and what it needs to run (as a selection on the command
    /// line does).
    fn want(&mut self, i: usize, started: &mut Vec<usize>) {
        if self.plan.wanted[i] && !Self::ended_state(&self.svcs[i].state) && self.svcs[i].state != State::Idle
        {
            return;
        }
        if started.contains(&i) {
            return;
        }
        self.plan.wanted[i] = true;
        let s = &mut self.svcs[i];
        if s.pid.is_none() {
            s.state = State::Waiting;
            s.stop_requested = false;
            started.push(i);
        }
        let deps: Vec<usize> = self.plan.edges[i].iter().map(|(d, _)| *d).collect();
        for d in deps {
            let dep = &self.svcs[d];
            // A dependency that already did what it must stays as it is.
            // Readiness counts only while the dependency still runs.
            let met = self.plan.edges[i]
                .iter()
                .any(|&(dd, c)| dd == d && self.holds(i, d, c) && (c != Cond::Ready || dep.pid.is_some()));
            if !met && dep.pid.is_none() {
                self.want(d, started);
            }
        }
    }

    fn start(&mut self, params: &Value) -> Result<Value, RpcError> {
        only(params, &["services"])?;
        self.not_while_stopping()?;
        let list = self.named(params, |i| self.plan.stack.services[i].autostart)?;
        let mut started = Vec::new();
        for i in list {
            self.want(i, &mut started);
        }
        Ok(json!({ "started": self.names(&started) }))
    }

    fn stop(&mut self, params: &Value) -> Result<Value, RpcError> {
        only(params, &["services"])?;
        self.not_while_stopping()?;
        let list = self.named(params, |_| false)?;
        if list.is_empty() {
            return Err(invalid("name the services to stop (\"down\" stops the stack)"));
        }
        let mut stopped = Vec::new();
        for i in list {
            let s = &mut self.svcs[i];
            s.restart_pending = false;
            if s.pid.is_some() && !s.stop_requested {
                self.stop_one(i);
                stopped.push(i);
            } else if s.state == State::Waiting {
                s.state = State::Stopped;
                s.stop_requested = true;
                stopped.push(i);
            }
        }
        Ok(json!({ "stopped": self.names(&stopped) }))
    }

    fn restart(&mut self, params: &Value) -> Result<Value, RpcError> {
        only(params, &["services"])?;
        self.not_while_stopping()?;
        let list = self.named(params, |i| self.plan.wanted[i])?;
        let mut restarted = Vec::new();
        for i in list {
            if self.svcs[i].pid.is_some() {
                if !self.svcs[i].stop_requested {
                    self.stop_one(i);
                }
                self.svcs[i].restart_pending = true;
                restarted.push(i);
            } else {
                let mut started = Vec::new();
                self.want(i, &mut started);
                restarted.push(i);
            }
        }
        Ok(json!({ "restarted": self.names(&restarted) }))
    }

    fn signal(&mut self, params: &Value) -> Result<Value, RpcError> {
        only(params, &["services", "signal"])?;
        let sig = match params.get("signal") {
            Some(Value::String(s)) => crate::signals::parse(s).map_err(invalid)?,
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|&n| (1..=64).contains(&n))
                .ok_or_else(|| invalid("\"signal\" must be a signal name or number from 1 to 64"))?,
            _ => {
                return Err(invalid(
                    "\"signal\" is required: a name such as \"HUP\" or a number",
                ))
            }
        };
        let list = self.named(params, |_| false)?;
        if list.is_empty() {
            return Err(invalid("name the services to signal"));
        }
        let mut signalled = Vec::new();
        for i in list {
            if self.svcs[i].attempt_pid.is_some() {
                self.order(i, Order::Signal { signal: sig });
                signalled.push(i);
            }
        }
        Ok(json!({ "signalled": self.names(&signalled), "signal": crate::signals::name(sig) }))
    }

    fn reset(&mut self, params: &Value) -> Result<Value, RpcError> {
        only(params, &["services"])?;
        let list = self.named(params, |_| false)?;
        if list.is_empty() {
            return Err(invalid("name the services to reset"));
        }
        for &i in &list {
            let s = &mut self.svcs[i];
            s.restarts = 0;
            s.last_exit = None;
            if matches!(s.state, State::Failed | State::Blocked(_)) {
                s.state = State::Stopped;
                s.status = None;
            }
        }
        Ok(json!({ "reset": self.names(&list) }))
    }

    fn logs(&mut self, params: &Value, out: Sender<Out>) {
        let reply = (|| {
            only(params, &["services", "lines", "follow"])?;
            let list = self.named(params, |_| true)?;
            let n = match params.get("lines") {
                None | Some(Value::Null) => 100,
                Some(v) => v
                    .as_u64()
                    .map(|n| n.min(usize::MAX as u64) as usize)
                    .ok_or_else(|| invalid("\"lines\" must be a whole number"))?,
            };
            let follow = match params.get("follow") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid("\"follow\" must be true or false")),
            };
            Ok((list, n, follow))
        })();
        let (list, n, follow) = match reply {
            Ok(x) => x,
            Err(e) => {
                let _ = out.send(Out::Reply(Err(e), false));
                return;
            }
        };
        let mut lines: Vec<Arc<logs::Line>> = Vec::new();
        for &i in &list {
            lines.extend(logs::lock(&self.svcs[i].ring).last(n));
        }
        lines.sort_by_key(|l| l.time);
        let skip = lines.len().saturating_sub(n);
        let names: Vec<String> = (0..self.svcs.len()).map(|i| self.name(i).to_string()).collect();
        let shown: Vec<Value> = lines[skip..].iter().map(|l| line_json(l, &names)).collect();
        // The past first, then the followers registered under each ring's
        // lock: a line written in between is in one or the other.
        let ok = out
            .send(Out::Reply(Ok(json!({ "lines": shown })), follow))
            .is_ok();
        if follow && ok {
            let names = Arc::new(names);
            for &i in &list {
                let tx = out.clone();
                let names = Arc::clone(&names);
                logs::lock(&self.svcs[i].ring).follow(Box::new(move |l: &Arc<logs::Line>| {
                    tx.send(Out::Note("log", line_json(l, &names))).is_ok()
                }));
            }
        }
    }

    fn wait(&mut self, params: &Value, out: Sender<Out>) {
        let parsed = (|| {
            only(params, &["services", "for", "timeout"])?;
            let goal = match params.get("for").and_then(Value::as_str) {
                None => Goal::Ready,
                Some("ready") => Goal::Ready,
                Some("succeeded") => Goal::Succeeded,
                Some(_) => return Err(invalid("\"for\" must be \"ready\" or \"succeeded\"")),
            };
            let list = self.named(params, |i| self.plan.wanted[i])?;
            let timeout = seconds(params, "timeout")?;
            Ok((list, goal, timeout))
        })();
        match parsed {
            Ok((services, goal, timeout)) => {
                self.waiters.push(Waiter {
                    services,
                    goal,
                    deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                    out,
                });
                self.check_waiters();
            }
            Err(e) => {
                let _ = out.send(Out::Reply(Err(e), false));
            }
        }
    }

    fn down(&mut self, params: &Value, out: Sender<Out>) {
        if let Err(e) = only(params, &["timeout"]) {
            let _ = out.send(Out::Reply(Err(e), false));
            return;
        }
        let timeout = match seconds(params, "timeout") {
            Ok(t) => t,
            Err(e) => {
                let _ = out.send(Out::Reply(Err(e), false));
                return;
            }
        };
        self.status.get_or_insert(0);
        let was = self.shutting_down;
        self.begin_shutdown();
        if let Some(at) = timeout.and_then(|t| Instant::now().checked_add(t)) {
            if !was || self.shutdown_deadline.is_none_or(|d| at < d) {
                self.shutdown_deadline = Some(at);
            }
        }
        if out
            .send(Out::Reply(Ok(json!({ "stopping": true })), true))
            .is_ok()
        {
            // Answered by the end of the connection: the supervisor's exit.
            self.down_clients.push(out);
        }
    }

    /// What one service is, for status and events.
    fn service_json(&self, i: usize, now: Instant) -> Value {
        let s = &self.svcs[i];
        let running = s.pid.is_some();
        let note = self.note(i, now);
        json!({
            "name": self.name(i),
            "state": word(&s.state),
            "attempt": s.attempt,
            "pid": if running { s.attempt_pid } else { None },
            "since": unix(s.since.1),
            "since_s": now.saturating_duration_since(s.since.0).as_secs_f64(),
            "restarts": s.restarts,
            "log_dropped": s.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "health": s.health.summary,
            "health_failures": s.health.failures,
            "notify_status": s.notify_status,
            "last_exit": s.last_exit,
            "status": s.status,
            "critical": self.plan.stack.services[i].critical,
            "selected": self.plan.wanted[i],
            "note": note,
        })
    }

    pub(super) fn note(&self, i: usize, now: Instant) -> String {
        let s = &self.svcs[i];
        match &s.state {
            State::Idle => "not selected".into(),
            State::Waiting => {
                let waiting: Vec<String> = self.plan.edges[i]
                    .iter()
                    .filter(|&&(d, c)| !self.holds(i, d, c))
                    .map(|&(d, c)| format!("{} {}", self.name(d), c.word()))
                    .collect();
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!("waiting for {}", waiting.join(", "))
                }
            }
            State::Ready => {
                let mut parts = Vec::new();
                if let Some(ready) = &self.plan.stack.services[i].ready {
                    parts.push(format!("ready: {}", ready.kind()));
                }
                if let Some(h) = &s.health.summary {
                    parts.push(h.clone());
                }
                if let Some(t) = &s.notify_status {
                    parts.push(format!("status: {t}"));
                }
                parts.join("; ")
            }
            State::Backoff => match s.next_at {
                Some(at) => format!(
                    "next attempt in {}",
                    crate::duration::format(round_secs(at.saturating_duration_since(now)))
                ),
                None => String::new(),
            },
            State::Blocked(why) => why.clone(),
            State::Failed | State::Succeeded | State::Stopped => s
                .status
                .map(|st| format!("run ended: {}", describe(st)))
                .unwrap_or_default(),
            State::Starting | State::Stopping => String::new(),
        }
    }

    fn status_json(&self) -> Value {
        let now = Instant::now();
        let services: Vec<Value> = (0..self.svcs.len()).map(|i| self.service_json(i, now)).collect();
        json!({
            "name": self.plan.stack.group.name,
            "pid": crate::sys::getpid(),
            "shutting_down": self.shutting_down,
            "services": services,
        })
    }

    /// After each turn: a state that changed restarts its `since`, goes to
    /// the subscribers, and may answer a waiter.
    pub(super) fn publish(&mut self) {
        let now = Instant::now();
        let mut events = Vec::new();
        for i in 0..self.svcs.len() {
            if self.svcs[i].shown != self.svcs[i].state {
                let state = self.svcs[i].state.clone();
                let was = std::mem::replace(&mut self.svcs[i].shown, state);
                self.svcs[i].since = (now, SystemTime::now());
                self.service_changed(i, &was, now);
                events.push(i);
            }
        }
        self.refresh_services(now);
        if !events.is_empty() && !self.subscribers.is_empty() {
            let values: Vec<Value> = events.iter().map(|&i| self.service_json(i, now)).collect();
            self.subscribers.retain(|tx| {
                values
                    .iter()
                    .all(|v| tx.send(Out::Note("event", v.clone())).is_ok())
            });
        }
        if !events.is_empty() {
            self.check_waiters();
        }
    }

    /// Answers the waiters whose goal holds, or can no longer hold.
    fn check_waiters(&mut self) {
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let mut done = true;
            let mut lost = Vec::new();
            for &s in &w.services {
                let st = &self.svcs[s].state;
                let holds = match w.goal {
                    Goal::Ready => matches!(st, State::Ready | State::Succeeded),
                    Goal::Succeeded => *st == State::Succeeded,
                };
                if holds {
                    continue;
                }
                done = false;
                let hopeless = matches!(
                    st,
                    State::Failed | State::Blocked(_) | State::Stopped | State::Idle
                ) || (w.goal == Goal::Ready && *st == State::Succeeded)
                    || self.shutting_down;
                if hopeless {
                    lost.push(s);
                }
            }
            if done || !lost.is_empty() {
                let w = self.waiters.swap_remove(i);
                let result = json!({
                    "ok": done,
                    "services": self.names(&w.services),
                    "not": self.names(&lost),
                });
                let _ = w.out.send(Out::Reply(Ok(result), false));
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn expire_waiters(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].deadline.is_some_and(|d| d <= now) {
                let w = self.waiters.swap_remove(i);
                let _ = w
                    .out
                    .send(Out::Reply(error(control::TIMED_OUT, "timed out"), false));
            } else {
                i += 1;
            }
        }
    }
}

fn round_secs(d: Duration) -> Duration {
    if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

/// A log line as JSON: the text with invalid UTF-8 replaced, and then its
/// exact bytes in base64 beside it.
pub fn line_json(l: &logs::Line, names: &[String]) -> Value {
    let mut m = Map::new();
    m.insert(
        "service".into(),
        Value::from(names.get(l.service).cloned().unwrap_or_default()),
    );
    m.insert("time".into(), Value::from(unix(l.time)));
    m.insert(
        "stream".into(),
        Value::from(if l.stream == 1 { "stdout" } else { "stderr" }),
    );
    m.insert("attempt".into(), Value::from(l.attempt));
    match std::str::from_utf8(&l.bytes) {
        Ok(t) => {
            m.insert("text".into(), Value::from(t));
        }
        Err(_) => {
            m.insert(
                "text".into(),
                Value::from(String::from_utf8_lossy(&l.bytes).into_owned()),
            );
            m.insert("base64".into(), Value::from(control::base64(&l.bytes)));
        }
    }
    Value::Object(m)
}
