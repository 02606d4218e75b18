//! Health checks (SERVICES.md §4): once an attempt is ready, after
//! `health-grace`, its `health-command`, `health-tcp` or `health-http`
//! runs every `health-interval`, each within `health-timeout`. A thread per
//! attempt runs them and sends every result to the supervisor, which
//! counts the failures in a row ([`Tally`]) and ends the attempt as
//! unhealthy at `health-failures`: a failed attempt under the service's
//! restart policy and backoff. The thread ends when the attempt does (its
//! generation changed), at its next wake-up.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use crate::reaper::Reaper;

use super::file::Health;
use super::probe::{self, Exits, ProbeEnv};
use super::supervisor::Msg;

/// One attempt's health checks.
pub struct Watch {
    pub service: usize,
    pub health: Health,
    pub env: Vec<(OsString, OsString)>,
    pub clear_env: bool,
    pub cwd: Option<PathBuf>,
    /// The attempt these checks are for; a different value ends them.
    pub generation: u64,
    pub current: Arc<AtomicU64>,
}

/// Starts the attempt's health thread.
pub fn spawn(w: Watch, reaper: Arc<Reaper>, exits: Exits, tx: Sender<Msg>) {
    let _ = std::thread::Builder::new().name("health".into()).spawn(move || {
        let live = || w.current.load(Ordering::Acquire) == w.generation;
        let env = ProbeEnv {
            vars: &w.env,
            clear: w.clear_env,
            cwd: w.cwd.as_deref(),
        };
        let h = &w.health;
        std::thread::sleep(h.grace);
        // Checks are due on a fixed schedule, not `interval` after each
        // one ended, so a slow check does not stretch the period.
        let mut due = Instant::now();
        while live() {
            let result = probe::check(&h.check, &env, h.timeout, &reaper, &exits);
            if !live() || tx.send(Msg::Health(w.service, w.generation, result)).is_err() {
                return;
            }
            due += h.interval;
            let now = Instant::now();
            if due < now {
                due = now;
            }
            std::thread::sleep(due - now);
        }
    });
}

/// A service's health as the supervisor keeps it, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// None until the current attempt's first check; then `healthy`, or
    /// `unhealthy: WHY (N/M)`.
    pub summary: Option<String>,
    /// Failures in a row of the current attempt.
    pub failures: u32,
    /// Every failed check of the run, for metrics.
    pub total_failures: u64,
}

impl Tally {
    /// A new attempt: nothing known yet.
    pub fn reset(&mut self) {
        self.summary = None;
        self.failures = 0;
    }

    /// Counts one result; true when it makes `limit` failures in a row.
    pub fn record(&mut self, result: &Result<(), String>, limit: u32) -> bool {
        match result {
            Ok(()) => {
                self.failures = 0;
                self.summary = Some("healthy".into());
                false
            }
            Err(why) => {
                self.failures += 1;
                self.total_failures += 1;
                self.summary = Some(format!("unhealthy: {why} ({}/{limit})", self.failures));
                self.failures >= limit
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_reach_the_limit_and_a_success_resets_them() {
        let mut t = Tally::default();
        let bad = Err("HTTP 503".to_string());
        assert!(!t.record(&bad, 3) && !t.record(&bad, 3));
        assert!(!t.record(&Ok(()), 3));
        assert_eq!(t.summary.as_deref(), Some("healthy"));
        assert!(!t.record(&bad, 3) && !t.record(&bad, 3) && t.record(&bad, 3));
        assert_eq!(t.summary.as_deref(), Some("unhealthy: HTTP 503 (3/3)"));
        assert_eq!(t.total_failures, 5);
        t.reset();
        assert_eq!((t.summary.clone(), t.failures), (None, 0));
    }
}
