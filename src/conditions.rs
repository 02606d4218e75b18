//! Whether an attempt succeeded, and if not, whether its failure is worth
//! another try. Pure decisions over how the attempt ended.

use crate::child::Ended;
use crate::sys::ExitKind;

/// The verdict on one attempt, with the rule that decided it (for messages
/// and the JSON report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// A failure that may be retried.
    Retry(String),
    /// A failure that ends the run at once.
    Final(String),
}

impl Verdict {
    pub fn is_success(&self) -> bool {
        matches!(self, Verdict::Success)
    }

    /// The rule that decided it, in a few words.
    pub fn rule(&self) -> &str {
        match self {
            Verdict::Success => "success exit code",
            Verdict::Retry(r) | Verdict::Final(r) => r,
        }
    }
}

/// Classifies an attempt that ran.
pub fn classify(ended: &Ended) -> Verdict {
    if ended.timed_out {
        return Verdict::Retry("timeout".into());
    }
    match ended.exit {
        ExitKind::Code(0) => Verdict::Success,
        ExitKind::Code(c) => Verdict::Retry(format!("exit code {c}")),
        // Whoever read the output went away (`patience -- yes | head -1`):
        // another attempt would only write into the same closed pipe.
        ExitKind::Signal(libc::SIGPIPE) => Verdict::Final("SIGPIPE: the output reader went away".into()),
        ExitKind::Signal(s) => Verdict::Retry(format!("signal {}", crate::signals::name(s))),
    }
}
