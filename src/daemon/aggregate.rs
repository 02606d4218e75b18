//! patienced's memory: every command's counters, histograms and last-run
//! timestamps, the daemon's own counters, and the `--max-series` bound.
//!
//! A *series* is one label set of one `patience_*` family, a histogram
//! counting as one: a command that has run once and succeeded on its first
//! attempt holds five (`runs_total` and `last_run_timestamp_seconds` for its
//! status, `run_duration_seconds`, `attempts_total` for its exit code,
//! `attempt_duration_seconds`). A datagram that would take the total past
//! the bound is dropped whole, so a command's counters and histograms
//! always agree, and the series it would have created are counted.
//!
//! A command that is a service of a stack (`service` events from its
//! supervisor) also holds a [`Service`]: two gauges, dropped when not
//! refreshed for `SERVICE_STALE_S`, a histogram and two counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::metrics::{Event, ExitLabel, Reject, ServiceEvent, ServiceState, Status};

/// The default histogram buckets, in seconds: Prometheus's defaults
/// extended to an hour, for jobs from a health check to a backup.
pub const DEFAULT_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

/// The buckets of `patience_service_ready_seconds`, in seconds: from a
/// service ready as it starts to one that warms up for minutes. Fixed, not
/// `buckets` of `[daemon]`, which fit runs from a health check to a backup.
pub const SERVICE_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A service's gauges are dropped when no `service` event refreshed them
/// for this long, in seconds: five refreshes of the supervisor missed, so
/// it is gone (killed outright) and its last state says nothing any more.
pub const SERVICE_STALE_S: f64 = 300.0;

/// A histogram over shared bucket bounds. `counts` are per bucket (not
/// cumulative), the last one for observations above every bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub counts: Box<[u64]>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(buckets: &[f64]) -> Histogram {
        Histogram {
            counts: vec![0; buckets.len() + 1].into_boxed_slice(),
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, buckets: &[f64], x: f64) {
        let i = buckets.partition_point(|&le| le < x);
        self.counts[i] += 1;
        self.sum += x;
        self.count += 1;
    }
}

/// The runs of one command that ended with one status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Runs {
    pub count: u64,
    /// When the latest of them ended, in seconds since the epoch; None for
    /// a counter born at zero (no such run yet).
    pub last: Option<f64>,
}

/// The latest run of a command (by its end time).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LastRun {
    pub ts: f64,
    /// patience's exit status; without one in the datagram, 0 for a run
    /// that succeeded and 1 for one that did not.
    pub exit_code: i32,
}

/// What the `service` events of one service said.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// The latest state; None once stale (the two gauges are dropped).
    pub state: Option<ServiceState>,
    /// When its latest event arrived, by the daemon's clock.
    pub seen: f64,
    /// Over `SERVICE_BUCKETS`: one observation per transition to ready.
    pub ready_seconds: Histogram,
    /// The supervisor's totals since it started, as last sent.
    pub health_failures: u64,
    pub log_dropped: u64,
}

impl Service {
    /// Its series: `up` and `ready` while fresh, the histogram, two counters.
    pub fn series(&self) -> usize {
        3 + if self.state.is_some() { 2 } else { 0 }
    }

    fn record(&mut self, e: &ServiceEvent, now: f64) {
        // Once per transition: the refreshes in between repeat `ready`.
        if e.state == ServiceState::Ready && self.state != Some(ServiceState::Ready) {
            if let Some(x) = e.ready_s {
                self.ready_seconds.observe(&SERVICE_BUCKETS, x);
            }
        }
        self.state = Some(e.state);
        self.seen = self.seen.max(now);
        // Totals: a supervisor started again starts them at 0 again, a
        // counter reset as Prometheus understands it.
        self.health_failures = e.health_failures.unwrap_or(self.health_failures);
        self.log_dropped = e.log_dropped.unwrap_or(self.log_dropped);
    }
}

/// At most this many runs of one command are followed while in progress.
pub const MAX_RUNNING: usize = 16;

/// Everything known about one command (one `name`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command {
    /// Indexed by `Status::index`.
    pub runs: [Option<Runs>; 4],
    /// Sorted by label.
    pub attempts: Vec<(ExitLabel, u64)>,
    pub run_duration: Option<Histogram>,
    pub attempt_duration: Option<Histogram>,
    pub last_run: Option<LastRun>,
    /// Runs begun and not yet ended: (sender's pid, 0 if unknown; start).
    pub running: Vec<(u64, f64)>,
    /// When a datagram for it last arrived, by the daemon's clock.
    pub seen: f64,
    /// When it is a service of a stack. Not kept in the state file: the
    /// supervisor says it all again within `SERVICE_REFRESH`.
    pub service: Option<Service>,
}

impl Command {
    /// How many series this command holds.
    pub fn series(&self) -> usize {
        self.runs.iter().flatten().count()
            + self.runs.iter().flatten().filter(|r| r.last.is_some()).count()
            + self.attempts.len()
            + usize::from(self.run_duration.is_some())
            + usize::from(self.attempt_duration.is_some())
            + usize::from(self.last_run.is_some())
            + usize::from(!self.running.is_empty())
            + self.service.as_ref().map_or(0, Service::series)
    }

    /// When the oldest run in progress began.
    pub fn running_since(&self) -> Option<f64> {
        self.running.iter().map(|r| r.1).reduce(f64::min)
    }
}

/// What became of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Accepted,
    /// Valid, but over `--max-series`.
    Dropped,
    Rejected(Reject),
}

/// All that patienced knows, behind one mutex in the daemon.
///
/// Commands are shared (`Arc`) with the snapshots that scrapes and the
/// state file writer render from: taking a snapshot copies pointers only,
/// and a datagram for a command a snapshot still holds copies that one
/// command (`Arc::make_mut`), so neither side waits on the other for long.
#[derive(Debug)]
pub struct Aggregate {
    pub buckets: Arc<[f64]>,
    pub max_series: usize,
    pub commands: BTreeMap<Arc<str>, Arc<Command>>,
    series: usize,
    pub accepted: u64,
    pub dropped: u64,
    pub rejected: [u64; Reject::ALL.len()],
    pub series_dropped: u64,
    /// Changed since the state file was last written.
    pub dirty: bool,
}

impl Aggregate {
    pub fn new(buckets: &[f64], max_series: usize) -> Aggregate {
        Aggregate {
            buckets: buckets.into(),
            max_series,
            commands: BTreeMap::new(),
            series: 0,
            accepted: 0,
            dropped: 0,
            rejected: [0; Reject::ALL.len()],
            series_dropped: 0,
            dirty: false,
        }
    }

    /// The number of series held.
    pub fn series(&self) -> usize {
        self.series
    }

    /// Takes in one decoded datagram (or the reason it was rejected) and
    /// says what became of it; `now` is the daemon's clock, used for runs
    /// without `ts` and to know when a command was last seen.
    pub fn record(&mut self, decoded: Result<Event, Reject>, now: f64) -> Fate {
        let event = match decoded {
            Ok(e) => e,
            Err(r) => {
                self.rejected[r.index()] += 1;
                return Fate::Rejected(r);
            }
        };
        let existing = self.commands.get(event.name()).map(|c| &**c);
        let before = existing.map_or(0, Command::series);
        let new = growth(existing, &event);
        if new > 0 && self.series + new > self.max_series {
            self.dropped += 1;
            self.series_dropped += new as u64;
            return Fate::Dropped;
        }
        let command = match self.commands.get_mut(event.name()) {
            Some(c) => Arc::make_mut(c),
            None => Arc::make_mut(self.commands.entry(Arc::from(event.name())).or_default()),
        };
        // Born at zero, so that increase() sees the first failure (a
        // service's run counters are born with its shim's run-start).
        if !matches!(event, Event::Service(_)) {
            for status in [Status::Succeeded, Status::Failed] {
                command.runs[status.index()].get_or_insert(Runs { count: 0, last: None });
            }
        }
        // Only what the state file keeps makes it dirty.
        let dirty = !matches!(event, Event::Service(_));
        command.seen = command.seen.max(now);
        match event {
            Event::Run(r) => {
                let ended = r.ts.unwrap_or(now);
                let runs = command.runs[r.status.index()].get_or_insert(Runs { count: 0, last: None });
                runs.count += 1;
                runs.last = Some(runs.last.map_or(ended, |l| l.max(ended)));
                if command.last_run.is_none_or(|l| ended >= l.ts) {
                    let fallback = i32::from(r.status != Status::Succeeded);
                    command.last_run = Some(LastRun {
                        ts: ended,
                        exit_code: r.exit_code.unwrap_or(fallback),
                    });
                }
                // The run's own start, else (an older sender) the one it
                // most likely was: begun when it ended less its duration.
                let began = ended - r.duration_s;
                let running = &command.running;
                let mine = r
                    .pid
                    .filter(|&p| p != 0)
                    .and_then(|p| running.iter().position(|x| x.0 == p));
                let guess = || running.iter().position(|x| x.0 == 0 && (x.1 - began).abs() < 1.0);
                if let Some(i) = mine.or_else(guess) {
                    command.running.swap_remove(i);
                }
                command
                    .run_duration
                    .get_or_insert_with(|| Histogram::new(&self.buckets))
                    .observe(&self.buckets, r.duration_s);
            }
            Event::Attempt(a) => {
                match command.attempts.binary_search_by(|(l, _)| l.cmp(&a.exit)) {
                    Ok(i) => command.attempts[i].1 += 1,
                    Err(i) => command.attempts.insert(i, (a.exit, 1)),
                }
                command
                    .attempt_duration
                    .get_or_insert_with(|| Histogram::new(&self.buckets))
                    .observe(&self.buckets, a.duration_s);
            }
            Event::RunStart(r) => {
                let pid = r.pid.unwrap_or(0);
                let start = r.ts.unwrap_or(now);
                let running = &mut command.running;
                match running.iter().position(|x| pid != 0 && x.0 == pid) {
                    Some(i) => running[i].1 = start,
                    None if running.len() < MAX_RUNNING => running.push((pid, start)),
                    // Beyond the bound, the newest is forgotten: the oldest
                    // is what "running too long" looks at.
                    None => {}
                }
            }
            Event::Service(e) => {
                command
                    .service
                    .get_or_insert_with(|| Service {
                        state: None,
                        seen: now,
                        ready_seconds: Histogram::new(&SERVICE_BUCKETS),
                        health_failures: 0,
                        log_dropped: 0,
                    })
                    .record(&e, now);
            }
        }
        let after = command.series();
        self.series = self.series - before + after;
        self.accepted += 1;
        self.dirty |= dirty;
        Fate::Accepted
    }

    /// Removes the commands not seen since `before` (daemon clock); returns
    /// how many.
    pub fn retire(&mut self, before: f64) -> usize {
        let old: Vec<Arc<str>> = self
            .commands
            .iter()
            .filter(|(_, c)| c.seen < before)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &old {
            self.remove(name);
        }
        old.len()
    }

    /// Drops the gauges of the services not refreshed since `before`
    /// (daemon clock); returns how many.
    pub fn retire_services(&mut self, before: f64) -> usize {
        let mut n = 0;
        for c in self.commands.values_mut() {
            if c.service
                .as_ref()
                .is_some_and(|s| s.state.is_some() && s.seen < before)
            {
                let c = Arc::make_mut(c);
                if let Some(s) = c.service.as_mut() {
                    s.state = None;
                }
                self.series -= 2;
                n += 1;
            }
        }
        n
    }

    /// Removes command `name`; false when there is none.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.commands.remove(name) {
            Some(c) => {
                self.series -= c.series();
                self.dirty = true;
                true
            }
            None => false,
        }
    }

    /// Adds a command loaded from a state file, if it fits under the bound;
    /// returns false (and counts its series as dropped) when it does not.
    pub fn restore(&mut self, name: String, command: Command) -> bool {
        let n = command.series();
        let old = self.commands.get(name.as_str()).map_or(0, |c| c.series());
        if self.series - old + n > self.max_series {
            self.series_dropped += n as u64;
            return false;
        }
        self.commands.insert(Arc::from(name), Arc::new(command));
        self.series = self.series - old + n;
        true
    }
}

/// What a scrape or the state file writer renders from: the commands as
/// they were at one instant (shared, not copied) and the daemon's counters.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub buckets: Arc<[f64]>,
    pub commands: Vec<(Arc<str>, Arc<Command>)>,
    pub series: usize,
    pub accepted: u64,
    pub dropped: u64,
    pub rejected: [u64; Reject::ALL.len()],
    pub series_dropped: u64,
}

impl Aggregate {
    /// The state now, taken in time proportional to the number of commands
    /// (a pointer copy each).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: self.buckets.clone(),
            commands: self
                .commands
                .iter()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
            series: self.series,
            accepted: self.accepted,
            dropped: self.dropped,
            rejected: self.rejected,
            series_dropped: self.series_dropped,
        }
    }
}

/// How many series `event` would add to `command` at most (a run that
/// ends can also take one away: its in-progress gauge).
fn growth(command: Option<&Command>, event: &Event) -> usize {
    let empty = Command::default();
    let c = command.unwrap_or(&empty);
    let zero_born = [Status::Succeeded, Status::Failed]
        .iter()
        .filter(|s| c.runs[s.index()].is_none() && !matches!(event, Event::Service(_)))
        .count();
    let more = match event {
        Event::Run(r) => {
            let runs = c.runs[r.status.index()];
            let born = matches!(r.status, Status::Succeeded | Status::Failed);
            usize::from(runs.is_none() && !born)
                + usize::from(runs.is_none_or(|x| x.last.is_none()))
                + usize::from(c.run_duration.is_none())
                + usize::from(c.last_run.is_none())
        }
        Event::Attempt(a) => {
            usize::from(c.attempts.binary_search_by(|(l, _)| l.cmp(&a.exit)).is_err())
                + usize::from(c.attempt_duration.is_none())
        }
        Event::RunStart(_) => usize::from(c.running.is_empty()),
        Event::Service(_) => match &c.service {
            None => 5,
            Some(s) if s.state.is_none() => 2,
            Some(_) => 0,
        },
    };
    zero_born + more
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{AttemptEvent, RunEvent};

    fn run(name: &str, status: Status, d: f64, ts: f64) -> Result<Event, Reject> {
        Ok(Event::Run(RunEvent {
            name: name.into(),
            status,
            attempts: Some(1),
            exit_code: Some(0),
            duration_s: d,
            ts: Some(ts),
            pid: None,
        }))
    }

    fn attempt(name: &str, exit: ExitLabel, d: f64) -> Result<Event, Reject> {
        Ok(Event::Attempt(AttemptEvent {
            name: name.into(),
            attempt: Some(1),
            exit,
            duration_s: d,
            ts: None,
        }))
    }

    #[test]
    fn counts_histograms_and_last_run() {
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
        assert_eq!(
            agg.record(run("a", Status::Succeeded, 0.2, 100.0), 0.0),
            Fate::Accepted
        );
        agg.record(run("a", Status::Succeeded, 7200.0, 50.0), 0.0);
        agg.record(attempt("a", ExitLabel::Code(1), 0.005), 0.0);
        agg.record(attempt("a", ExitLabel::Code(1), 0.0051), 0.0);
        agg.record(attempt("a", ExitLabel::Timeout, 3.0), 0.0);
        let c = &agg.commands["a"];
        let r = c.runs[Status::Succeeded.index()].unwrap();
        assert_eq!(
            (r.count, r.last),
            (2, Some(100.0)),
            "an older ts never moves last back"
        );
        let h = c.run_duration.as_ref().unwrap();
        assert_eq!((h.count, h.sum), (2, 7200.2));
        assert_eq!(h.counts[5], 1, "0.2 goes in le=0.25");
        assert_eq!(h.counts[DEFAULT_BUCKETS.len()], 1, "7200 goes in +Inf only");
        let h = c.attempt_duration.as_ref().unwrap();
        assert_eq!(h.counts[0], 1, "le is inclusive: 0.005 <= 0.005");
        assert_eq!(h.counts[1], 1);
        assert_eq!(c.attempts, [(ExitLabel::Code(1), 2), (ExitLabel::Timeout, 1)]);
        // runs_total born at 0 for succeeded and failed, one timestamp,
        // the run histogram, the last run's exit code; two exit codes and
        // the attempt histogram.
        assert_eq!(agg.series(), 5 + 3);
        assert_eq!(agg.series(), c.series());
    }

    #[test]
    fn max_series_drops_whole_datagrams_and_counts_them() {
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 10);
        for i in 0..100 {
            agg.record(run(&format!("n{i}"), Status::Failed, 1.0, 1.0), 0.0);
        }
        assert_eq!(agg.commands.len(), 2);
        assert_eq!(agg.series(), 10);
        assert_eq!((agg.accepted, agg.dropped, agg.series_dropped), (2, 98, 98 * 5));
        // Known series still count once full.
        assert_eq!(
            agg.record(run("n0", Status::Failed, 1.0, 1.0), 0.0),
            Fate::Accepted
        );
        assert_eq!(
            agg.record(run("n0", Status::Aborted, 1.0, 1.0), 0.0),
            Fate::Dropped
        );
        // Nor a new exit code.
        assert_eq!(
            agg.record(attempt("n1", ExitLabel::Code(3), 1.0), 0.0),
            Fate::Dropped
        );
        let rejected = agg.record(Err(Reject::Json), 0.0);
        assert_eq!(rejected, Fate::Rejected(Reject::Json));
        assert_eq!(agg.rejected[Reject::Json.index()], 1);
    }

    fn service(name: &str, state: ServiceState, ready_s: Option<f64>, health: u64) -> Result<Event, Reject> {
        Ok(Event::Service(ServiceEvent {
            name: name.into(),
            state,
            ready_s,
            health_failures: Some(health),
            log_dropped: Some(0),
            ts: None,
        }))
    }

    #[test]
    fn services_observe_ready_once_per_transition_and_go_stale() {
        use ServiceState::*;
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
        agg.record(service("s", Starting, None, 0), 1000.0);
        assert_eq!(
            agg.series(),
            5,
            "up, ready, the histogram, two counters; no runs_total"
        );
        assert!(!agg.dirty, "nothing of it goes in the state file");
        agg.record(service("s", Ready, Some(2.4), 0), 1001.0);
        // The 60 s refreshes repeat ready: no new observation.
        agg.record(service("s", Ready, Some(2.4), 1), 1061.0);
        agg.record(service("s", Ready, Some(2.4), 1), 1121.0);
        let s = agg.commands["s"].service.clone().unwrap();
        assert_eq!((s.ready_seconds.count, s.ready_seconds.sum), (1, 2.4));
        assert_eq!(s.ready_seconds.counts[4], 1, "2.4 goes in le=2.5");
        assert_eq!((s.state, s.health_failures, s.seen), (Some(Ready), 1, 1121.0));
        // Restarted and ready again: a second observation.
        agg.record(service("s", Backoff, None, 3), 1130.0);
        agg.record(service("s", Ready, Some(0.3), 3), 1131.0);
        let s = agg.commands["s"].service.clone().unwrap();
        assert_eq!((s.ready_seconds.count, s.health_failures), (2, 3));
        // Stale: not refreshed for five minutes, by an injected clock.
        agg.record(service("t", Stopped, None, 0), 1200.0);
        let stale_at = |now: f64| now - SERVICE_STALE_S;
        assert_eq!(agg.retire_services(stale_at(1131.0 + SERVICE_STALE_S - 1.0)), 0);
        assert_eq!(agg.retire_services(stale_at(1131.0 + SERVICE_STALE_S + 1.0)), 1);
        assert_eq!(agg.commands["s"].service.as_ref().unwrap().state, None);
        assert_eq!(agg.commands["t"].service.as_ref().unwrap().state, Some(Stopped));
        assert_eq!(agg.series(), 3 + 5);
        assert_eq!(
            agg.series(),
            agg.commands.values().map(|c| c.series()).sum::<usize>()
        );
        assert_eq!(
            agg.retire_services(stale_at(1131.0 + SERVICE_STALE_S + 1.0)),
            0,
            "once"
        );
        // Heard of again: the gauges come back.
        agg.record(service("s", Ready, Some(1.0), 3), 2000.0);
        assert_eq!(agg.series(), 10);
        // The bound holds for services too.
        let mut small = Aggregate::new(&DEFAULT_BUCKETS, 7);
        assert_eq!(
            small.record(service("a", Ready, Some(1.0), 0), 0.0),
            Fate::Accepted
        );
        assert_eq!(
            small.record(service("b", Ready, Some(1.0), 0), 0.0),
            Fate::Dropped
        );
    }

    #[test]
    fn restore_respects_the_bound() {
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 4);
        // Three series: a count, its timestamp and a histogram.
        let mut c = Command::default();
        c.runs[0] = Some(Runs {
            count: 1,
            last: Some(1.0),
        });
        c.run_duration = Some(Histogram::new(&DEFAULT_BUCKETS));
        assert!(agg.restore("a".into(), c.clone()));
        assert!(!agg.restore("b".into(), c.clone()));
        assert!(agg.restore("a".into(), c), "replacing is not growing");
        assert_eq!((agg.series(), agg.series_dropped), (3, 3));
    }
}
