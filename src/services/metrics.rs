//! The stack's `service` datagrams to patienced (SERVICES.md §8): one for a
//! service on each change of its state, and one for every service every
//! `SERVICE_REFRESH`, so that patienced can drop the gauges of a stack that
//! is gone. Each goes where that service's shim sends its own datagrams
//! (its `socket`, `$PATIENCE_SOCKET`), under the same run name, and nothing
//! is sent with `no-metrics` (the group's or the service's). Sending never
//! blocks the event loop (`metrics::Sender`).

use std::time::Instant;

use crate::metrics::{self, Sender, ServiceReport};

use super::methods::word;
use super::supervisor::{State, Sup, Svc};
use super::Plan;

/// When the current attempt of a service began (as far as the supervisor
/// saw it: the shim's start for the first, else the attempt's start
/// report), and how long it then took to be ready.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ReadyClock {
    starting_at: Option<Instant>,
    ready_s: Option<f64>,
}

/// One sender per service, and when the next refresh is due.
pub(super) struct Publisher {
    senders: Vec<Sender>,
    next_refresh: Instant,
}

impl Publisher {
    pub(super) fn new(plan: &Plan) -> Publisher {
        let senders = plan
            .resolved
            .iter()
            .map(|r| {
                if plan.group.no_metrics {
                    Sender::disabled()
                } else {
                    Sender::for_settings(&r.settings)
                }
            })
            .collect();
        Publisher {
            senders,
            next_refresh: Instant::now() + metrics::SERVICE_REFRESH,
        }
    }

    /// The refresh deadline, when anything is ever sent.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.senders
            .iter()
            .any(Sender::enabled)
            .then_some(self.next_refresh)
    }
}

/// What the event says of service `s`.
fn report(s: &Svc) -> ServiceReport<'static> {
    ServiceReport {
        state: word(&s.state),
        ready_s: s.ready_clock.ready_s.filter(|_| s.state == State::Ready),
        // Totals since the supervisor started (a Tally outlives runs).
        health_failures: s.health.total_failures,
        // Lines log-overflow = "drop" dropped, since the supervisor started.
        log_dropped: s.dropped.load(std::sync::atomic::Ordering::Relaxed),
    }
}

impl Sup {
    /// Service `i` went from state `was` to its current one (called by
    /// `publish`, once per change): times its readiness and says so.
    pub(super) fn service_changed(&mut self, i: usize, was: &State, now: Instant) {
        let s = &mut self.svcs[i];
        let clock = &mut s.ready_clock;
        match s.state {
            State::Starting => {
                *clock = ReadyClock {
                    starting_at: Some(now),
                    ready_s: None,
                }
            }
            // Straight to ready (no readiness check): ready as it started.
            State::Ready => {
                clock.ready_s = Some(match (was, clock.starting_at) {
                    (State::Starting, Some(t)) => now.saturating_duration_since(t).as_secs_f64(),
                    _ => 0.0,
                })
            }
            _ => clock.ready_s = None,
        }
        self.send_service(i);
    }

    /// Every `SERVICE_REFRESH`: each service's event again.
    pub(super) fn refresh_services(&mut self, now: Instant) {
        if now < self.metrics.next_refresh {
            return;
        }
        self.metrics.next_refresh = now + metrics::SERVICE_REFRESH;
        for i in 0..self.svcs.len() {
            self.send_service(i);
        }
    }

    fn send_service(&self, i: usize) {
        let s = &self.svcs[i];
        // Not selected: not part of the running stack.
        if s.state == State::Idle {
            return;
        }
        let name = self.plan.resolved[i].settings.run_name();
        self.metrics.senders[i].service(&name, &report(s));
    }
}
