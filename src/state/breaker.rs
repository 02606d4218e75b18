//! The circuit breaker of one key, as a pure state machine over a stored
//! record: closed → open after N consecutive failed attempts (counted across
//! every process of the key) → half-open after the cooldown, when exactly one
//! run at a time is let through as the probe → closed on its success, open
//! again on its failure.
//!
//! Time is injected (`now`, nanoseconds of wall clock) and so is the question
//! "is this process still alive", so every transition is unit-tested without
//! sleeping. Wall-clock jumps cannot hurt: a time stored in the future is
//! re-anchored to `now` (see `State::normalise`), and every wait is computed
//! with saturating arithmetic and bounded by the cooldown, so a wait is never
//! negative and the breaker never stays open for more than one cooldown
//! after anyone looks at it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Holder;

/// A probe lease is forgotten after this long at least, even if its process
/// still seems alive (a recycled PID in another PID namespace, a hung
/// probe): the breaker must never stay half-open for ever.
pub const PROBE_LEASE_MIN: Duration = Duration::from_secs(60);

/// The breaker's phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    pub fn word(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half-open",
        }
    }
}

/// The stored breaker of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Breaker {
    pub phase: Phase,
    /// Consecutive failed attempts, over every process of the key. Reset by
    /// any success.
    pub failures: u64,
    /// When it last opened (wall clock, ns since the epoch).
    pub opened_at_ns: u64,
    /// The cooldown of the run that opened it, so every process agrees on
    /// when it half-opens.
    pub cooldown_ns: u64,
    /// The run let through as the probe while half-open.
    pub probe: Option<Holder>,
}

/// `--breaker N --breaker-cooldown DUR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub threshold: u64,
    pub cooldown: Duration,
}

/// What the breaker says to a run that wants to start an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Closed: go ahead.
    Pass,
    /// Half-open and this run is the probe (newly granted or already held).
    Probe,
    /// Open: wait this long before trying again.
    Open { left: Duration, failures: u64 },
    /// Half-open, and another live run holds the probe.
    Probing { pid: i32 },
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// The cooldown in force: the opener's, else this run's.
    fn cooldown(&self, cfg: &Config) -> u64 {
        if self.cooldown_ns > 0 {
            self.cooldown_ns
        } else {
            ns(cfg.cooldown)
        }
    }

    /// How long it stays open from `now`: never negative, never more than
    /// the cooldown.
    pub fn time_left(&self, cfg: &Config, now: u64) -> Duration {
        if self.phase != Phase::Open {
            return Duration::ZERO;
        }
        let cooldown = self.cooldown(cfg);
        let elapsed = now.saturating_sub(self.opened_at_ns);
        Duration::from_nanos(cooldown.saturating_sub(elapsed).min(cooldown))
    }

    /// Decides whether run `me` may start an attempt at `now`, moving open
    /// to half-open when the cooldown is over and granting the probe lease
    /// when it is free (no holder, a dead holder, or an expired lease).
    pub fn admit(&mut self, cfg: &Config, me: &Holder, now: u64, alive: &dyn Fn(&Holder) -> bool) -> Verdict {
        match self.phase {
            Phase::Closed => Verdict::Pass,
            Phase::Open => {
                let left = self.time_left(cfg, now);
                if !left.is_zero() {
                    return Verdict::Open {
                        left,
                        failures: self.failures,
                    };
                }
                self.phase = Phase::HalfOpen;
                self.probe = Some(me.clone());
                Verdict::Probe
            }
            Phase::HalfOpen => {
                if let Some(p) = &self.probe {
                    if p.pid == me.pid && p.start == me.start {
                        return Verdict::Probe;
                    }
                    let lease = ns(cfg.cooldown.max(PROBE_LEASE_MIN));
                    let fresh = now.saturating_sub(p.since_ns) < lease;
                    if fresh && alive(p) {
                        return Verdict::Probing { pid: p.pid };
                    }
                }
                self.probe = Some(me.clone());
                Verdict::Probe
            }
        }
    }

    /// Records how one attempt of run `me` ended. Any success closes the
    /// breaker and resets the count. A failure counts; it opens a closed
    /// breaker at the threshold and reopens a half-open one when it was the
    /// probe's (a straggler admitted earlier only adds to the count, and
    /// failures while open do not extend the cooldown). Returns true when
    /// this failure opened the breaker.
    pub fn record(&mut self, cfg: &Config, me: &Holder, success: bool, now: u64) -> bool {
        if success {
            *self = Breaker::default();
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        let reopen = match self.phase {
            Phase::Closed => self.failures >= cfg.threshold,
            Phase::HalfOpen => self.probe.as_ref().is_none_or(|p| p.pid == me.pid),
            Phase::Open => false,
        };
        if reopen {
            self.phase = Phase::Open;
            self.opened_at_ns = now;
            self.cooldown_ns = ns(cfg.cooldown);
            self.probe = None;
        }
        reopen
    }

    /// Gives the probe lease back if run `pid` holds it (a probe run that
    /// ended without an attempt result: interrupted, out of time).
    pub fn release_probe(&mut self, pid: i32) {
        if self.probe.as_ref().is_some_and(|p| p.pid == pid) {
            self.probe = None;
        }
    }

    /// Moves every stored time back by `delta` (the wall clock went back).
    pub fn shift_back(&mut self, delta: u64) {
        self.opened_at_ns = self.opened_at_ns.saturating_sub(delta);
        if let Some(p) = &mut self.probe {
            p.since_ns = p.since_ns.saturating_sub(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn cfg() -> Config {
        Config {
            threshold: 3,
            cooldown: Duration::from_secs(30),
        }
    }

    fn run(pid: i32, since: u64) -> Holder {
        Holder {
            pid,
            start: Some(pid as u64 * 10),
            since_ns: since,
        }
    }

    fn all_alive(_: &Holder) -> bool {
        true
    }

    fn open_at(t: u64) -> Breaker {
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(&cfg(), &run(1, t), false, t);
        }
        assert_eq!(b.phase, Phase::Open);
        b
    }

    #[test]
    fn opens_after_n_consecutive_failures_only() {
        let mut b = Breaker::default();
        let me = run(1, 0);
        assert!(!b.record(&cfg(), &me, false, 0));
        assert!(!b.record(&cfg(), &me, false, 0));
        // A success in between resets the count: 2 + 2 failures never open.
        b.record(&cfg(), &me, true, 0);
        assert_eq!(b.failures, 0);
        assert!(!b.record(&cfg(), &me, false, 0));
        assert!(!b.record(&cfg(), &me, false, 0));
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!(b.admit(&cfg(), &me, 0, &all_alive), Verdict::Pass);
        assert!(b.record(&cfg(), &me, false, 5 * S));
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(b.opened_at_ns, 5 * S);
    }

    #[test]
    fn open_refuses_with_the_time_left_then_lets_one_probe_through() {
        let mut b = open_at(100 * S);
        let v = b.admit(&cfg(), &run(2, 110 * S), 110 * S, &all_alive);
        assert_eq!(
            v,
            Verdict::Open {
                left: Duration::from_secs(20),
                failures: 3
            }
        );
        // Cooldown over: the first caller becomes the probe...
        assert_eq!(
            b.admit(&cfg(), &run(2, 130 * S), 130 * S, &all_alive),
            Verdict::Probe
        );
        assert_eq!(b.phase, Phase::HalfOpen);
        // ...every other one is refused while it lives...
        assert_eq!(
            b.admit(&cfg(), &run(3, 131 * S), 131 * S, &all_alive),
            Verdict::Probing { pid: 2 }
        );
        // ...and the probe itself may go on with its next attempt.
        assert_eq!(
            b.admit(&cfg(), &run(2, 130 * S), 132 * S, &all_alive),
            Verdict::Probe
        );
    }

    #[test]
    fn probe_success_closes_and_failure_reopens() {
        let mut b = open_at(0);
        let probe = run(2, 30 * S);
        assert_eq!(b.admit(&cfg(), &probe, 30 * S, &all_alive), Verdict::Probe);
        assert!(b.record(&cfg(), &probe, false, 31 * S));
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(b.probe, None);
        assert_eq!(b.time_left(&cfg(), 31 * S), Duration::from_secs(30));
        assert_eq!(b.admit(&cfg(), &probe, 61 * S, &all_alive), Verdict::Probe);
        b.record(&cfg(), &probe, true, 62 * S);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_dead_or_expired_probe_is_forgotten() {
        let mut b = open_at(0);
        assert_eq!(
            b.admit(&cfg(), &run(2, 30 * S), 30 * S, &all_alive),
            Verdict::Probe
        );
        // Holder 2 was SIGKILLed: the next run takes over at once.
        let dead2 = |h: &Holder| h.pid != 2;
        assert_eq!(b.admit(&cfg(), &run(3, 31 * S), 31 * S, &dead2), Verdict::Probe);
        assert_eq!(b.probe.as_ref().map(|p| p.pid), Some(3));
        // Holder 3 seems alive but its lease (max(cooldown, 60s)) ran out.
        assert_eq!(
            b.admit(&cfg(), &run(4, 90 * S), 90 * S, &all_alive),
            Verdict::Probing { pid: 3 }
        );
        assert_eq!(
            b.admit(&cfg(), &run(4, 92 * S), 92 * S, &all_alive),
            Verdict::Probe
        );
        // A probe that gives up without a result frees the lease.
        b.release_probe(4);
        assert_eq!(b.probe, None);
        assert_eq!(b.phase, Phase::HalfOpen);
        b.release_probe(9);
    }

    #[test]
    fn stragglers_count_but_do_not_extend_the_cooldown() {
        let mut b = open_at(0);
        assert!(!b.record(&cfg(), &run(7, 0), false, 20 * S));
        assert_eq!(b.failures, 4);
        assert_eq!(b.opened_at_ns, 0);
        assert_eq!(
            b.admit(&cfg(), &run(2, 30 * S), 30 * S, &all_alive),
            Verdict::Probe
        );
        // A failure from a run that is not the probe does not reopen.
        assert!(!b.record(&cfg(), &run(7, 0), false, 31 * S));
        assert_eq!(b.phase, Phase::HalfOpen);
        // A late success from anyone closes it.
        b.record(&cfg(), &run(7, 0), true, 32 * S);
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn clock_jumps_never_give_negative_waits_or_a_stuck_breaker() {
        // Backwards: `now` before `opened_at` means zero elapsed, so the wait
        // is the cooldown at most, never more...
        let b = open_at(1000 * S);
        assert_eq!(b.time_left(&cfg(), 10 * S), Duration::from_secs(30));
        assert_eq!(b.time_left(&cfg(), 0), Duration::from_secs(30));
        // ...and once the timeline is re-anchored (as State::normalise does
        // when it sees a stored time in the future), it half-opens one
        // cooldown later.
        let mut b2 = b.clone();
        b2.shift_back(1000 * S - 10 * S);
        assert_eq!(b2.time_left(&cfg(), 40 * S), Duration::ZERO);
        assert_eq!(
            b2.admit(&cfg(), &run(2, 40 * S), 40 * S, &all_alive),
            Verdict::Probe
        );
        // Forwards by years: simply over.
        assert_eq!(b.time_left(&cfg(), u64::MAX), Duration::ZERO);
    }

    #[test]
    fn the_opener_cooldown_wins() {
        let mut b = Breaker::default();
        let long = Config {
            threshold: 1,
            cooldown: Duration::from_secs(600),
        };
        b.record(&long, &run(1, 0), false, 0);
        // A run configured with 30s still sees the opener's 10 minutes.
        assert_eq!(b.time_left(&cfg(), 60 * S), Duration::from_secs(540));
    }
}
