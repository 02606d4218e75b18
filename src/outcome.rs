//! What a run came to: each finished attempt, how the run ended, and the
//! whole `Outcome` that the attempt loop produces and the report, the exit
//! status and the metrics are made from. Plain data, no behaviour.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::conditions::Verdict;
use crate::sys::ExitKind;

/// One finished attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub number: u64,
    pub started_at: SystemTime,
    pub duration: Duration,
    /// How it ended; `None` when it could not start.
    pub exit: Option<ExitKind>,
    pub timed_out: bool,
    /// SIGKILL was needed after the grace period.
    pub killed: bool,
    pub verdict: Verdict,
    /// The delay waited after it, if another attempt followed.
    pub delay_after: Option<Duration>,
    /// 126 or 127 when the command could not be started.
    pub spawn_status: Option<i32>,
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Failed, with the reason the attempts stopped.
    Failed(String),
    /// patience received this stop signal between attempts and stopped
    /// (exit 128+N).
    Interrupted(i32),
    /// patience passed this stop signal on to the running attempt and
    /// stopped when it ended: the run exits as that attempt did.
    Forwarded(i32),
    /// Refused before any attempt by the shared state (circuit breaker open,
    /// no free slot, no token before the deadline): exit 75.
    Rejected(String),
}

impl Ending {
    /// The status word of reports and metrics.
    pub fn word(&self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Failed(_) => "failed",
            Ending::Interrupted(_) | Ending::Forwarded(_) => "aborted",
            Ending::Rejected(_) => "rejected",
        }
    }
}

/// The result of a whole run.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub ending: Ending,
    pub started_at: SystemTime,
    pub duration: Duration,
    /// The time waited before the first attempt (`--stagger`).
    pub staggered: Duration,
    /// Attempts made, succeeded and failed, over the whole run.
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// The most recent attempts (at most `KEEP_ATTEMPTS`), oldest first.
    pub attempts: VecDeque<Attempt>,
}

impl Outcome {
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.back()
    }
}
