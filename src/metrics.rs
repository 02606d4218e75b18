//! The metrics datagram protocol, version 1: what `patience` sends to
//! `patienced` over a Unix datagram socket, and how `patienced` checks it.
//!
//! One JSON object per datagram, at most `MAX_DATAGRAM` bytes:
//!
//! ```text
//! {"v":1,"event":"attempt","name":"…","attempt":2,"exit_code":7,"signal":null,"timed_out":false,"duration_s":0.53,"ts":1764000000.1}
//! {"v":1,"event":"run","name":"…","status":"succeeded","attempts":3,"exit_code":0,"duration_s":4.2,"ts":1764000004.3,"pid":4242}
//! {"v":1,"event":"run-start","name":"…","ts":1764000000.1,"pid":4242}
//! {"v":1,"event":"service","name":"shop.app","state":"ready","ready_s":2.4,"health_failures":0,"log_dropped":0,"ts":1764000000.1}
//! ```
//!
//! `service` (from the supervisor of `patience --services`) comes on each
//! state change of a service and every `SERVICE_REFRESH` in between.
//!
//! The sending side ([`Sender`]) never delays patience and never fails it:
//! if the socket path does not exist nothing is even created, and every
//! send is non-blocking with its errors ignored. The receiving side
//! ([`decode`]) trusts nothing: every field is checked and a rejection
//! carries one of a few fixed reasons, so they can be counted by label.

use std::cell::OnceCell;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::outcome::{Attempt, Outcome};
use crate::sys::ExitKind;

/// The protocol version this module speaks.
pub const VERSION: u64 = 1;

/// The largest datagram either side accepts, in bytes.
pub const MAX_DATAGRAM: usize = 4096;

/// The longest name (a label value), in bytes of UTF-8. patienced rejects
/// longer ones (`reason="name"`): a label this long is already a mistake,
/// and every byte of it is repeated on some 45 lines of each scrape. Once
/// JSON-escaped (6 bytes a character at worst) it still leaves room in a
/// datagram for every other field.
pub const MAX_NAME: usize = 256;

/// How a run ended, as the `status` field says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Succeeded,
    Failed,
    Aborted,
    /// Refused before running (circuit open, concurrency limit full).
    Rejected,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Succeeded,
        Status::Failed,
        Status::Aborted,
        Status::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Aborted => "aborted",
            Status::Rejected => "rejected",
        }
    }

    /// Its position in `ALL`, for fixed-size tables.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How one attempt ended, as the `exit_code` label of
/// `patience_attempts_total` shows it: the exit code, `timeout`, or the
/// signal's name (`SIGKILL`, `SIG40`, or whatever `signals::name` calls it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitLabel {
    Code(i32),
    Timeout,
    Signal(i32),
    /// A signal label read from a state file that this build spells
    /// otherwise (or not at all): kept as it was written, so that what was
    /// saved is what is loaded, whatever names another version gives.
    SignalLabel(SignalLabel),
}

/// A signal label matching `SIG[A-Z0-9+-]+`, at most `SignalLabel::MAX`
/// bytes, held inline so that `ExitLabel` stays `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignalLabel {
    len: u8,
    bytes: [u8; SignalLabel::MAX],
}

impl SignalLabel {
    pub const MAX: usize = 23;

    pub fn new(s: &str) -> Option<SignalLabel> {
        let rest = s.strip_prefix("SIG")?;
        let ok = !rest.is_empty()
            && s.len() <= Self::MAX
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-');
        if !ok {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(SignalLabel {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("SIG")
    }
}

impl std::fmt::Display for ExitLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitLabel::Code(c) => write!(f, "{c}"),
            ExitLabel::Timeout => f.write_str("timeout"),
            ExitLabel::Signal(s) => f.write_str(&crate::signals::name(*s)),
            ExitLabel::SignalLabel(l) => f.write_str(l.as_str()),
        }
    }
}

/// The number of the signal called `s`: a name `signals::parse` knows,
/// `SIG<n>` for 1 to 64, or `SIGRTMIN+k` / `SIGRTMAX-k` (and the two bare)
/// within the real-time range.
pub fn signal_number(s: &str) -> Option<i32> {
    let rest = s.strip_prefix("SIG")?;
    if let Ok(n) = crate::signals::parse(s) {
        return Some(n);
    }
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest.parse().ok().filter(|n| (1..=64).contains(n));
    }
    let (min, max) = crate::sys::realtime_signals();
    let offset = |t: &str| -> Option<i32> {
        match t {
            "" => Some(0),
            _ if t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
            _ => None,
        }
    };
    let n = if let Some(t) = rest.strip_prefix("RTMIN") {
        min + offset(t.strip_prefix('+').unwrap_or(if t.is_empty() { "" } else { "x" }))?
    } else if let Some(t) = rest.strip_prefix("RTMAX") {
        max - offset(t.strip_prefix('-').unwrap_or(if t.is_empty() { "" } else { "x" }))?
    } else {
        return None;
    };
    (min..=max).contains(&n).then_some(n)
}

impl ExitLabel {
    /// Parses what `Display` wrote (used for state files): whatever this
    /// or another build wrote for a signal is loaded, and written back the
    /// same.
    pub fn parse(s: &str) -> Option<ExitLabel> {
        if s == "timeout" {
            return Some(ExitLabel::Timeout);
        }
        if s.starts_with("SIG") {
            let label = SignalLabel::new(s)?;
            return Some(match signal_number(s) {
                Some(n) if crate::signals::name(n) == s => ExitLabel::Signal(n),
                _ => ExitLabel::SignalLabel(label),
            });
        }
        s.parse().ok().map(ExitLabel::Code)
    }
}

/// A finished attempt, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptEvent {
    pub name: String,
    pub attempt: Option<u64>,
    pub exit: ExitLabel,
    pub duration_s: f64,
    pub ts: Option<f64>,
}

/// A finished run, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEvent {
    pub name: String,
    pub status: Status,
    pub attempts: Option<u64>,
    pub exit_code: Option<i32>,
    pub duration_s: f64,
    pub ts: Option<f64>,
    /// The sender's process id, to match the run's `run-start`.
    pub pid: Option<u64>,
}

/// A run that has begun (additive to protocol v1).
#[derive(Clone, Debug, PartialEq)]
pub struct RunStartEvent {
    pub name: String,
    pub ts: Option<f64>,
    pub pid: Option<u64>,
}

/// A service's state, as the `state` field of a `service` event says it
/// (the words of `patiencectl status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Stopped,
    Waiting,
    Starting,
    Ready,
    Backoff,
    Stopping,
    Succeeded,
    Failed,
    Blocked,
}

impl ServiceState {
    pub const ALL: [ServiceState; 9] = [
        ServiceState::Stopped,
        ServiceState::Waiting,
        ServiceState::Starting,
        ServiceState::Ready,
        ServiceState::Backoff,
        ServiceState::Stopping,
        ServiceState::Succeeded,
        ServiceState::Failed,
        ServiceState::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Stopped => "stopped",
            ServiceState::Waiting => "waiting",
            ServiceState::Starting => "starting",
            ServiceState::Ready => "ready",
            ServiceState::Backoff => "backoff",
            ServiceState::Stopping => "stopping",
            ServiceState::Succeeded => "succeeded",
            ServiceState::Failed => "failed",
            ServiceState::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceState> {
        ServiceState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether `patience_service_up` is 1: a run of the service is live
    /// (starting, ready, between two attempts, or being stopped). Waiting
    /// for its dependencies, it has not started; ended, it is down.
    pub fn up(self) -> bool {
        matches!(
            self,
            ServiceState::Starting | ServiceState::Ready | ServiceState::Backoff | ServiceState::Stopping
        )
    }
}

/// A service of a stack as its supervisor sees it (additive to protocol v1).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEvent {
    pub name: String,
    pub state: ServiceState,
    /// Seconds from the attempt's start to ready, while ready.
    pub ready_s: Option<f64>,
    /// Totals since the supervisor started.
    pub health_failures: Option<u64>,
    pub log_dropped: Option<u64>,
    pub ts: Option<f64>,
}

/// One valid datagram.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Attempt(AttemptEvent),
    Run(RunEvent),
    RunStart(RunStartEvent),
    Service(ServiceEvent),
}

impl Event {
    pub fn name(&self) -> &str {
        match self {
            Event::Attempt(a) => &a.name,
            Event::Run(r) => &r.name,
            Event::RunStart(r) => &r.name,
            Event::Service(s) => &s.name,
        }
    }

    pub fn ts(&self) -> Option<f64> {
        match self {
            Event::Attempt(a) => a.ts,
            Event::Run(r) => r.ts,
            Event::RunStart(r) => r.ts,
            Event::Service(s) => s.ts,
        }
    }
}

/// Why a datagram was rejected: a small fixed set, used as a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Larger than `MAX_DATAGRAM`, or empty.
    Size,
    /// Not a JSON object in UTF-8.
    Json,
    /// `v` missing or not 1.
    Version,
    /// `event` missing or unknown.
    Event,
    /// A field missing or of the wrong type or range.
    Field,
    /// `duration_s` missing, or it or `ts` negative, not finite or absurd
    /// (over `MAX_DURATION_S`, over `MAX_TS` or a day ahead of the clock).
    Duration,
    /// `status` missing or unknown (a service's `state`).
    Status,
    /// `name` empty or longer than `MAX_NAME` bytes.
    Name,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Size,
        Reject::Json,
        Reject::Version,
        Reject::Event,
        Reject::Field,
        Reject::Duration,
        Reject::Status,
        Reject::Name,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Size => "size",
            Reject::Json => "json",
            Reject::Version => "version",
            Reject::Event => "event",
            Reject::Field => "field",
            Reject::Duration => "duration",
            Reject::Status => "status",
            Reject::Name => "name",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One JSON value of a datagram field, read without allocating (a string is
/// borrowed unless it holds escapes); arrays and objects are skipped and
/// kept only as "something else", which is always the wrong type.
#[derive(Debug)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Int(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Uint(n))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Float(x))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Scalar<'_> {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::Uint(n) => Some(n),
            Scalar::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::Uint(n) => i64::try_from(n).ok(),
            Scalar::Int(n) => Some(n),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Uint(n) => Some(n as f64),
            Scalar::Int(n) => Some(n as f64),
            Scalar::Float(x) => Some(x),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A datagram's fields, each read leniently so that `decode` can say which
/// one is wrong. `null` reads as absent; unknown fields are skipped, so a
/// later sender may add some; a repeated field makes the JSON invalid.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    v: Option<Scalar<'a>>,
    #[serde(borrow)]
    event: Option<Scalar<'a>>,
    #[serde(borrow)]
    name: Option<Scalar<'a>>,
    #[serde(borrow)]
    attempt: Option<Scalar<'a>>,
    #[serde(borrow)]
    attempts: Option<Scalar<'a>>,
    #[serde(borrow)]
    exit_code: Option<Scalar<'a>>,
    #[serde(borrow)]
    signal: Option<Scalar<'a>>,
    #[serde(borrow)]
    timed_out: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    duration_s: Option<Scalar<'a>>,
    #[serde(borrow)]
    ts: Option<Scalar<'a>>,
    #[serde(borrow)]
    pid: Option<Scalar<'a>>,
    #[serde(borrow)]
    state: Option<Scalar<'a>>,
    #[serde(borrow)]
    ready_s: Option<Scalar<'a>>,
    #[serde(borrow)]
    health_failures: Option<Scalar<'a>>,
    #[serde(borrow)]
    log_dropped: Option<Scalar<'a>>,
}

/// Checks one datagram and turns it into an event, or says why not.
pub fn decode(bytes: &[u8]) -> Result<Event, Reject> {
    if bytes.is_empty() || bytes.len() > MAX_DATAGRAM {
        return Err(Reject::Size);
    }
    // Only an object: serde would also read a struct from an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(Reject::Json);
    }
    let w: Wire = serde_json::from_slice(bytes).map_err(|_| Reject::Json)?;
    if w.v.as_ref().and_then(Scalar::as_u64) != Some(VERSION) {
        return Err(Reject::Version);
    }
    #[derive(PartialEq)]
    enum Kind {
        Attempt,
        Run,
        RunStart,
        Service,
    }
    let kind = match w.event.as_ref().and_then(Scalar::as_str) {
        Some("attempt") => Kind::Attempt,
        Some("run") => Kind::Run,
        Some("run-start") => Kind::RunStart,
        Some("service") => Kind::Service,
        _ => return Err(Reject::Event),
    };
    let name = match w.name {
        Some(Scalar::Str(n)) if n.is_empty() || n.len() > MAX_NAME => return Err(Reject::Name),
        Some(Scalar::Str(n)) => n.into_owned(),
        _ => return Err(Reject::Field),
    };
    let ts = seconds(&w.ts, MAX_TS)?;
    let pid = count(&w.pid)?;
    if kind == Kind::RunStart {
        return Ok(Event::RunStart(RunStartEvent { name, ts, pid }));
    }
    if kind == Kind::Service {
        let state = match w.state.as_ref().and_then(Scalar::as_str) {
            Some(s) => ServiceState::parse(s).ok_or(Reject::Status)?,
            None => return Err(Reject::Status),
        };
        return Ok(Event::Service(ServiceEvent {
            name,
            state,
            ready_s: seconds(&w.ready_s, MAX_DURATION_S)?,
            health_failures: count(&w.health_failures)?,
            log_dropped: count(&w.log_dropped)?,
            ts,
        }));
    }
    let duration_s = seconds(&w.duration_s, MAX_DURATION_S)?.ok_or(Reject::Duration)?;
    if kind == Kind::Attempt {
        let timed_out = match w.timed_out {
            None => false,
            Some(Scalar::Bool(b)) => b,
            Some(_) => return Err(Reject::Field),
        };
        let signal = match &w.signal {
            None => None,
            Some(Scalar::Str(s)) if s.starts_with("SIG") => Some(signal_number(s).ok_or(Reject::Field)?),
            Some(n) => match n.as_u64() {
                Some(s @ 1..=64) => Some(s as i32),
                _ => return Err(Reject::Field),
            },
        };
        let exit = match (timed_out, signal, exit_code(&w.exit_code)?) {
            (true, _, _) => ExitLabel::Timeout,
            (false, Some(s), _) => ExitLabel::Signal(s),
            (false, None, Some(c)) => ExitLabel::Code(c),
            (false, None, None) => return Err(Reject::Field),
        };
        Ok(Event::Attempt(AttemptEvent {
            name,
            attempt: count(&w.attempt)?,
            exit,
            duration_s,
            ts,
        }))
    } else {
        let status = match w.status.as_ref().and_then(Scalar::as_str) {
            Some(s) => Status::parse(s).ok_or(Reject::Status)?,
            None => return Err(Reject::Status),
        };
        Ok(Event::Run(RunEvent {
            name,
            status,
            attempts: count(&w.attempts)?,
            exit_code: exit_code(&w.exit_code)?,
            duration_s,
            ts,
            pid,
        }))
    }
}

/// The longest duration taken in, in seconds (about 31 years): beyond it a
/// value is a mistake, and bounding it keeps histogram sums finite.
pub const MAX_DURATION_S: f64 = 1e9;

/// The latest timestamp taken in, in seconds since the epoch (the year
/// 2286): a `ts` of 1e308 would stay the latest run for ever and blind an
/// alert on its age. patienced also refuses one more than a day ahead of
/// its own clock.
pub const MAX_TS: f64 = 1e10;

/// An optional field of finite, non-negative seconds, at most `max`.
fn seconds(field: &Option<Scalar>, max: f64) -> Result<Option<f64>, Reject> {
    match field {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(Some(x)),
            _ => Err(Reject::Duration),
        },
    }
}

/// An optional whole, non-negative count.
fn count(field: &Option<Scalar>) -> Result<Option<u64>, Reject> {
    match field {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(Reject::Field),
    }
}

/// An optional exit code, which must fit an `int`.
fn exit_code(field: &Option<Scalar>) -> Result<Option<i32>, Reject> {
    match field {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|c| i32::try_from(c).ok())
            .map(Some)
            .ok_or(Reject::Field),
    }
}

/// `name` cut on a character boundary to at most `MAX_NAME` bytes, so that
/// patienced accepts it. Names are cut rather than dropped: a run with a
/// long name still counts, and both events of a run carry the same name.
pub fn truncate_name(name: &str) -> &str {
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut end = MAX_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Seconds since the epoch at `start + took`, when the event ended.
fn end_secs(start: SystemTime, took: std::time::Duration) -> f64 {
    let end = start.checked_add(took).unwrap_or(start);
    end.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The datagram for a finished attempt of run `name`.
pub fn encode_attempt(name: &str, a: &Attempt) -> Vec<u8> {
    let (code, signal) = match a.exit {
        Some(ExitKind::Code(c)) => (Some(c), None),
        Some(ExitKind::Signal(s)) => (None, Some(crate::signals::name(s))),
        // It could not start: 126 or 127, as the run's status would say.
        None => (a.spawn_status, None),
    };
    let mut out = serde_json::json!({
        "v": VERSION,
        "event": "attempt",
        "name": truncate_name(name),
        "attempt": a.number,
        "exit_code": code,
        "signal": signal,
        "timed_out": a.timed_out,
        "duration_s": a.duration.as_secs_f64(),
        "ts": end_secs(a.started_at, a.duration),
    })
    .to_string()
    .into_bytes();
    out.truncate(MAX_DATAGRAM);
    out
}

/// The datagram for a run that begins: the daemon shows it as in progress
/// until the run's own datagram (same `pid`) comes.
pub fn encode_run_start(name: &str, started_at: SystemTime) -> Vec<u8> {
    let mut out = serde_json::json!({
        "v": VERSION,
        "event": "run-start",
        "name": truncate_name(name),
        "pid": std::process::id(),
        "ts": end_secs(started_at, std::time::Duration::ZERO),
    })
    .to_string()
    .into_bytes();
    out.truncate(MAX_DATAGRAM);
    out
}

/// How often the supervisor of a stack repeats each service's `service`
/// event between state changes, so that patienced can tell a live stack's
/// gauges from a dead one's.
pub const SERVICE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// What a `service` event says of one service.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServiceReport<'a> {
    pub state: &'a str,
    pub ready_s: Option<f64>,
    pub health_failures: u64,
    pub log_dropped: u64,
}

/// The datagram for service `name` of a stack, as of `at`.
pub fn encode_service(name: &str, r: &ServiceReport, at: SystemTime) -> Vec<u8> {
    let mut out = serde_json::json!({
        "v": VERSION,
        "event": "service",
        "name": truncate_name(name),
        "state": r.state,
        "ready_s": r.ready_s.filter(|x| x.is_finite() && *x >= 0.0),
        "health_failures": r.health_failures,
        "log_dropped": r.log_dropped,
        "ts": end_secs(at, std::time::Duration::ZERO),
    })
    .to_string()
    .into_bytes();
    out.truncate(MAX_DATAGRAM);
    out
}

/// The datagram for a finished run; `exit_status` is what patience exits with.
pub fn encode_run(outcome: &Outcome, exit_status: i32) -> Vec<u8> {
    let mut out = serde_json::json!({
        "v": VERSION,
        "event": "run",
        "name": truncate_name(&outcome.name),
        "status": outcome.ending.word(),
        "attempts": outcome.total,
        "exit_code": exit_status,
        "duration_s": outcome.duration.as_secs_f64(),
        "ts": end_secs(outcome.started_at, outcome.duration),
        "pid": std::process::id(),
    })
    .to_string()
    .into_bytes();
    out.truncate(MAX_DATAGRAM);
    out
}

/// Where a daemon's socket may be, in order: `$PATIENCE_SOCKET`, else
/// `configured` (the config file's `socket`) — either alone when set — else
/// `$XDG_RUNTIME_DIR/patienced.sock`, `/run/user/UID/patienced.sock` (what a
/// login shell's daemon bound, found from cron, which has no
/// `$XDG_RUNTIME_DIR`), `/tmp/patienced-UID.sock`, and a system daemon's
/// `/run/patienced/patienced.sock`. Empty values count as unset.
pub fn socket_candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    candidates(
        env("PATIENCE_SOCKET"),
        configured,
        env("XDG_RUNTIME_DIR"),
        crate::sys::getuid(),
    )
}

fn candidates(
    from_env: Option<PathBuf>,
    configured: Option<&Path>,
    runtime_dir: Option<PathBuf>,
    uid: u32,
) -> Vec<PathBuf> {
    if let Some(p) = from_env {
        return vec![p];
    }
    if let Some(p) = configured.filter(|p| !p.as_os_str().is_empty()) {
        return vec![p.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = runtime_dir
        .map(|d| d.join("patienced.sock"))
        .into_iter()
        .collect();
    for p in [
        format!("/run/user/{uid}/patienced.sock"),
        format!("/tmp/patienced-{uid}.sock"),
        "/run/patienced/patienced.sock".to_string(),
    ] {
        let p = PathBuf::from(p);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Where patienced binds by default: the first candidate, except that
/// without `$XDG_RUNTIME_DIR` it takes `/run/user/UID` only when that
/// directory exists, and never the system daemon's path (which a system
/// daemon is given with `--socket`).
pub fn socket_path(configured: Option<&Path>) -> PathBuf {
    let all = socket_candidates(configured);
    let explicit = all.len() == 1;
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty());
    all.iter()
        .find(|p| {
            explicit
                || runtime
                || p.parent()
                    .is_some_and(|d| d != Path::new("/run/patienced") && d.is_dir())
        })
        .cloned()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/patienced-{}.sock", crate::sys::getuid())))
}

/// What `--dry-run` says of the socket: the one patience would send to (or,
/// when none is there, the first place it looks), and a line on whether a
/// daemon answers there, or where it looked.
pub fn describe_socket(configured: Option<&Path>) -> (PathBuf, String) {
    let all = socket_candidates(configured);
    for p in &all {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if !trusted_socket(p) {
            let what = if meta.file_type().is_socket() {
                format!(
                    "a socket of uid {} in a directory others can write to",
                    meta.uid()
                )
            } else {
                "not a socket".to_string()
            };
            return (
                p.clone(),
                format!(
                    "{} is {what}: nothing is sent (set PATIENCE_SOCKET, or socket in [defaults])",
                    p.display()
                ),
            );
        }
        let answers = UnixDatagram::unbound().and_then(|s| s.connect(p)).is_ok();
        let line = if answers {
            format!("a daemon answers at {}", p.display())
        } else {
            format!(
                "none answers at {} (a stale socket): nothing is sent",
                p.display()
            )
        };
        return (p.clone(), line);
    }
    let looked: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
    let first = all.first().cloned().unwrap_or_default();
    (
        first,
        format!(
            "no socket found (looked at {}): nothing is sent",
            looked.join(", ")
        ),
    )
}

/// True when the socket at `path` may receive our datagrams: it is a socket
/// (not a symlink), and when its directory is writable by others (`/tmp`)
/// it belongs to us or to root, so that another user cannot collect our
/// run names by creating the socket first.
fn trusted_socket(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_socket() {
        return false;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shared_dir = std::fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o002 != 0)
        .unwrap_or(true);
    !shared_dir || meta.uid() == crate::sys::geteuid() || meta.uid() == 0
}

/// Sends patience's datagrams to the daemon, if there is one. Every send
/// checks the path (one `lstat`) so a daemon started mid-run is found; the
/// socket itself is created only once a daemon's socket exists, and every
/// error is ignored.
pub struct Sender {
    /// Where to look, in order; empty when disabled.
    paths: Vec<PathBuf>,
    socket: OnceCell<Option<UnixDatagram>>,
}

impl Sender {
    /// A sender that sends nothing (`--no-metrics`).
    pub fn disabled() -> Sender {
        Sender {
            paths: Vec::new(),
            socket: OnceCell::new(),
        }
    }

    /// A sender to the socket at `path`.
    pub fn to(path: PathBuf) -> Sender {
        Sender::to_first(vec![path])
    }

    /// A sender to the first of `paths` that is a daemon's socket, looked
    /// for at every send.
    pub fn to_first(paths: Vec<PathBuf>) -> Sender {
        Sender {
            paths,
            socket: OnceCell::new(),
        }
    }

    /// The sender for a run with these settings.
    pub fn for_settings(settings: &crate::settings::Settings) -> Sender {
        if settings.no_metrics {
            Sender::disabled()
        } else {
            // settings.socket already holds PATIENCE_SOCKET over the config
            // file's `socket` (config::resolve applies that precedence).
            Sender::to_first(socket_candidates(settings.socket.as_deref()))
        }
    }

    /// Reports a finished attempt (call right after it is recorded).
    pub fn attempt(&self, name: &str, attempt: Option<&Attempt>) {
        if let Some(a) = attempt {
            self.send(|| encode_attempt(name, a));
        }
    }

    /// Reports that run `name` begins.
    pub fn run_start(&self, name: &str, started_at: SystemTime) {
        self.send(|| encode_run_start(name, started_at));
    }

    /// Reports the finished run.
    pub fn run(&self, outcome: &Outcome, exit_status: i32) {
        self.send(|| encode_run(outcome, exit_status));
    }

    /// Reports service `name` of a stack (the supervisor's event).
    pub fn service(&self, name: &str, report: &ServiceReport) {
        self.send(|| encode_service(name, report, SystemTime::now()));
    }

    /// Whether anything may ever be sent (not `--no-metrics`).
    pub fn enabled(&self) -> bool {
        !self.paths.is_empty()
    }

    fn send(&self, datagram: impl FnOnce() -> Vec<u8>) {
        let Some(path) = self.paths.iter().find(|p| trusted_socket(p)) else {
            return;
        };
        let socket = self.socket.get_or_init(|| {
            let s = UnixDatagram::unbound().ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        });
        if let Some(s) = socket {
            // Non-blocking: a full queue (EAGAIN), a stale socket
            // (ECONNREFUSED) or anything else costs one failed syscall.
            let _ = s.send_to(&datagram(), path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Verdict;
    use crate::outcome::Ending;
    use std::time::Duration;

    fn attempt(exit: Option<ExitKind>, timed_out: bool) -> Attempt {
        Attempt {
            number: 2,
            started_at: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
            duration: Duration::from_millis(530),
            exit,
            timed_out,
            killed: false,
            verdict: Verdict::Retry("x".into()),
            delay_after: None,
            spawn_status: if exit.is_none() { Some(127) } else { None },
        }
    }

    #[test]
    fn attempts_round_trip() {
        let cases = [
            (Some(ExitKind::Code(7)), false, ExitLabel::Code(7)),
            (Some(ExitKind::Signal(9)), false, ExitLabel::Signal(9)),
            (Some(ExitKind::Signal(15)), true, ExitLabel::Timeout),
            (None, false, ExitLabel::Code(127)),
        ];
        for (exit, timed_out, label) in cases {
            let bytes = encode_attempt("job", &attempt(exit, timed_out));
            let Ok(Event::Attempt(e)) = decode(&bytes) else {
                panic!("{}", String::from_utf8_lossy(&bytes))
            };
            assert_eq!(e.name, "job");
            assert_eq!(e.exit, label);
            assert_eq!(e.attempt, Some(2));
            assert!((e.duration_s - 0.53).abs() < 1e-9);
            assert!((e.ts.unwrap() - 1_764_000_000.53).abs() < 1e-3);
        }
        assert_eq!(ExitLabel::Signal(9).to_string(), "SIGKILL");
        for l in [ExitLabel::Code(-3), ExitLabel::Timeout, ExitLabel::Signal(9)] {
            assert_eq!(ExitLabel::parse(&l.to_string()), Some(l));
        }
        // Every signal, whatever signals::name calls it, round-trips; so
        // does any label of the form another build may have written.
        for n in 1..=64 {
            let l = ExitLabel::Signal(n);
            let back = ExitLabel::parse(&l.to_string()).unwrap();
            assert_eq!(back.to_string(), l.to_string());
        }
        for text in [
            "SIG40",
            "SIGRTMIN+6",
            "SIGRTMAX-2",
            "SIGRTMIN",
            "SIGFUTURE1",
            "SIGNOPE",
        ] {
            let l = ExitLabel::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(l.to_string(), text);
        }
        for bad in ["SIG", "SIGkill", "SIG 9", "SIG\"", "SIGAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert_eq!(ExitLabel::parse(bad), None, "{bad}");
        }
        let (min, max) = crate::sys::realtime_signals();
        assert_eq!(signal_number("SIGRTMIN+6"), Some(min + 6));
        assert_eq!(signal_number("SIGRTMAX-1"), Some(max - 1));
        assert_eq!(signal_number("SIG40"), Some(40));
        assert_eq!(signal_number("SIGRTMIN6"), None);
        assert_eq!(signal_number("SIGRTMAX+1"), None);
    }

    #[test]
    fn runs_round_trip() {
        let outcome = Outcome {
            name: "nightly \"backup\"\n{x}".into(),
            ending: Ending::Failed("max attempts reached".into()),
            started_at: UNIX_EPOCH,
            duration: Duration::from_secs(4),
            staggered: Duration::ZERO,
            total: 3,
            succeeded: 0,
            failed: 3,
            attempts: Default::default(),
        };
        let Ok(Event::Run(r)) = decode(&encode_run(&outcome, 7)) else {
            panic!()
        };
        assert_eq!(r.name, outcome.name);
        assert_eq!(r.status, Status::Failed);
        assert_eq!((r.attempts, r.exit_code, r.duration_s), (Some(3), Some(7), 4.0));
    }

    #[test]
    fn service_events_round_trip_and_bad_ones_are_rejected() {
        let report = ServiceReport {
            state: "ready",
            ready_s: Some(2.4),
            health_failures: 3,
            log_dropped: 7,
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let bytes = encode_service("shop.app", &report, at);
        let Ok(Event::Service(e)) = decode(&bytes) else {
            panic!("{}", String::from_utf8_lossy(&bytes))
        };
        assert_eq!(
            e,
            ServiceEvent {
                name: "shop.app".into(),
                state: ServiceState::Ready,
                ready_s: Some(2.4),
                health_failures: Some(3),
                log_dropped: Some(7),
                ts: Some(1_764_000_000.0),
            }
        );
        // Every state word round-trips; only live ones are up.
        for st in ServiceState::ALL {
            let r = ServiceReport {
                state: st.as_str(),
                ready_s: None,
                ..report
            };
            let Ok(Event::Service(e)) = decode(&encode_service("s", &r, at)) else {
                panic!("{st:?}")
            };
            assert_eq!((e.state, e.ready_s), (st, None));
        }
        let up: Vec<&str> = ServiceState::ALL
            .into_iter()
            .filter(|s| s.up())
            .map(ServiceState::as_str)
            .collect();
        assert_eq!(up, ["starting", "ready", "backoff", "stopping"]);
        // The least a sender may send: the counters are optional.
        let least = br#"{"v":1,"event":"service","name":"x","state":"failed"}"#;
        assert!(matches!(
            decode(least),
            Ok(Event::Service(ServiceEvent {
                health_failures: None,
                ..
            }))
        ));
        let cases: &[(&[u8], Reject)] = &[
            (br#"{"v":1,"event":"service","name":"x"}"#, Reject::Status),
            (
                br#"{"v":1,"event":"service","name":"x","state":"up"}"#,
                Reject::Status,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":1}"#,
                Reject::Status,
            ),
            (br#"{"v":1,"event":"service","state":"ready"}"#, Reject::Field),
            (
                br#"{"v":1,"event":"service","name":"","state":"ready"}"#,
                Reject::Name,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":"ready","ready_s":-1}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":"ready","ready_s":"2"}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":"ready","health_failures":-1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":"ready","log_dropped":1.5}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"service","name":"x","state":"ready","ts":1e300}"#,
                Reject::Duration,
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(decode(bytes), Err(*reason), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary_not_dropped() {
        for unit in ["a", "é", "😀", "\"", "\u{1}", "a\\"] {
            let name = unit.repeat(5000);
            let a = encode_attempt(&name, &attempt(Some(ExitKind::Code(1)), false));
            let mut o = Outcome {
                name: name.clone(),
                ending: Ending::Interrupted(15),
                started_at: UNIX_EPOCH,
                duration: Duration::from_secs(999_999_999),
                staggered: Duration::ZERO,
                total: u64::MAX,
                succeeded: 0,
                failed: 0,
                attempts: Default::default(),
            };
            o.started_at = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
            let r = encode_run(&o, 143);
            assert!(a.len() <= MAX_DATAGRAM && r.len() <= MAX_DATAGRAM, "{unit:?}");
            let (Ok(ea), Ok(er)) = (decode(&a), decode(&r)) else {
                panic!("{unit:?}")
            };
            assert_eq!(ea.name(), er.name(), "both events carry the same cut name");
            assert!(name.starts_with(ea.name()), "{unit:?}");
            assert!((MAX_NAME - 3..=MAX_NAME).contains(&ea.name().len()), "{unit:?}");
        }
        assert_eq!(truncate_name("short"), "short");
    }

    #[test]
    fn every_kind_of_bad_datagram_is_rejected_with_its_reason() {
        let ok = r#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1}"#;
        assert!(decode(ok.as_bytes()).is_ok());
        let extra = r#" {"future":[{"x":1}],"v":1,"event":"run","name":"a\"b","status":"failed","duration_s":1,"ts":null}"#;
        assert!(matches!(decode(extra.as_bytes()), Ok(Event::Run(r)) if r.name == "a\"b" && r.ts.is_none()));
        let long_name = format!(
            r#"{{"v":1,"event":"run","name":"{}","status":"failed","duration_s":1}}"#,
            "x".repeat(MAX_NAME + 1)
        );
        let longest = long_name.replacen("xx", "x", 1);
        assert!(decode(longest.as_bytes()).is_ok());
        let big = format!(
            r#"{{"v":1,"event":"run","name":"{}","status":"failed","duration_s":1}}"#,
            "x".repeat(5000)
        );
        let cases: &[(&[u8], Reject)] = &[
            (b"", Reject::Size),
            (long_name.as_bytes(), Reject::Name),
            (big.as_bytes(), Reject::Size),
            (b"not json", Reject::Json),
            (b"[1,2]", Reject::Json),
            (
                br#"[1,"run","x",null,null,null,null,null,"failed",1,null]"#,
                Reject::Json,
            ),
            (
                br#"{"v":1,"v":1,"event":"run","name":"x","status":"failed","duration_s":1}"#,
                Reject::Json,
            ),
            (
                br#"{"v":1,"event":"run","name":{"a":[1]},"status":"failed","duration_s":1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1.0,"event":"run","name":"x","status":"failed","duration_s":1}"#,
                Reject::Version,
            ),
            (b"\xff\xfe", Reject::Json),
            (
                br#"{"v":1,"event":"run","name":"\ud800","status":"failed","duration_s":1}"#,
                Reject::Json,
            ),
            (
                br#"{"event":"run","name":"x","status":"failed","duration_s":1}"#,
                Reject::Version,
            ),
            (
                br#"{"v":2,"event":"run","name":"x","status":"failed","duration_s":1}"#,
                Reject::Version,
            ),
            (
                br#"{"v":"1","event":"run","name":"x","status":"failed","duration_s":1}"#,
                Reject::Version,
            ),
            (
                br#"{"v":1,"event":"boom","name":"x","status":"failed","duration_s":1}"#,
                Reject::Event,
            ),
            (
                br#"{"v":1,"name":"x","status":"failed","duration_s":1}"#,
                Reject::Event,
            ),
            (
                br#"{"v":1,"event":"run","name":7,"status":"failed","duration_s":1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"run","status":"failed","duration_s":1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"run","name":"","status":"failed","duration_s":1}"#,
                Reject::Name,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"meh","duration_s":1}"#,
                Reject::Status,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","duration_s":1}"#,
                Reject::Status,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":-1}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":"1"}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed"}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1e999}"#,
                Reject::Json,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1,"ts":-5}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1,"attempts":-1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1,"exit_code":1e10}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1,"signal":"SIGNOPE"}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1,"signal":"SIG65"}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1,"signal":"SIGRTMIN+99"}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1,"ts":1e308}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"run","name":"x","status":"failed","duration_s":1e300}"#,
                Reject::Duration,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1,"signal":99}"#,
                Reject::Field,
            ),
            (
                br#"{"v":1,"event":"attempt","name":"x","duration_s":1,"timed_out":"yes"}"#,
                Reject::Field,
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(decode(bytes), Err(*reason), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn socket_candidates_agree_between_login_shells_and_cron() {
        let p = PathBuf::from;
        let shell = candidates(None, None, Some(p("/run/user/7")), 7);
        let cron = candidates(None, None, None, 7);
        assert_eq!(
            shell,
            [
                p("/run/user/7/patienced.sock"),
                p("/tmp/patienced-7.sock"),
                p("/run/patienced/patienced.sock")
            ]
        );
        assert_eq!(
            cron,
            [
                p("/run/user/7/patienced.sock"),
                p("/tmp/patienced-7.sock"),
                p("/run/patienced/patienced.sock")
            ]
        );
        assert_eq!(
            candidates(None, None, Some(p("/x")), 7)[0],
            p("/x/patienced.sock")
        );
        assert_eq!(
            candidates(Some(p("/e")), Some(Path::new("/c")), None, 7),
            [p("/e")]
        );
        assert_eq!(candidates(None, Some(Path::new("/c")), None, 7), [p("/c")]);
    }

    #[test]
    fn socket_path_order() {
        // Only the parts that do not depend on the environment.
        assert!(socket_path(Some(Path::new("/x.sock"))).is_absolute());
        assert!(!trusted_socket(Path::new("/nonexistent/patienced.sock")));
        // A regular file is never a target.
        assert!(!trusted_socket(Path::new("/etc/hostname")));
    }

    #[test]
    fn a_missing_socket_creates_nothing() {
        let s = Sender::to_first(vec![
            PathBuf::from("/nonexistent/patienced.sock"),
            PathBuf::from("/nonexistent/other.sock"),
        ]);
        s.send(|| panic!("must not even encode"));
        assert!(s.socket.get().is_none());
        Sender::disabled().send(|| panic!("disabled"));
    }
}
