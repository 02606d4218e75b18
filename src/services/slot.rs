//! The stack's own slot: `key`, `max-concurrent` and `slot-wait` in
//! `[supervisor]` (a cron-started stack that must not overlap its previous
//! run). The slot is taken through the same [`crate::state::Gate`] a single
//! run's first attempt goes through, so the file store under flock, the
//! Redis store of `state-url`, the sweep of dead holders, the hand-over
//! between waiters and the refusal messages are those of `--max-concurrent`.
//! The supervisor holds the gate until it returns, which gives the slot back.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::settings::{OutputMode, Settings, Verbosity};
use crate::signals::Meaning;
use crate::state::{Gate, Limits, Policy, Stop};

use super::file::Stack;
use super::supervisor::Msg;

/// The stack's slot policy, from the group's settings; `None` unless
/// `[supervisor]` itself sets `max-concurrent` (a `[defaults]` of a config
/// file is every run's, so the services', not the stack's). `key` and
/// `slot-wait` are only taken from `[supervisor]` too; without `key`, the
/// stack's `name`, else the services file's absolute path, is the key.
pub fn policy(
    stack: &Stack,
    group: &Settings,
    in_supervisor: &dyn Fn(&str) -> bool,
) -> Result<Option<Policy>, Error> {
    let path = stack.path.display();
    if !in_supervisor("max-concurrent") {
        for key in ["key", "slot-wait"] {
            if in_supervisor(key) {
                return Err(Error::Config(format!(
                    "{path}: key '{key}' in [supervisor] needs max-concurrent in [supervisor] (the stack's slot)"
                )));
            }
        }
        return Ok(None);
    }
    // `max-concurrent = 0` is "no limit", as on the command line.
    let Some(max) = group.max_concurrent else {
        return Ok(None);
    };
    let mut p = group.shared_state();
    p.key = match (&group.key, &stack.group.name) {
        (Some(k), _) if in_supervisor("key") => k.clone(),
        (_, Some(name)) => name.clone(),
        _ => std::path::absolute(&stack.path)
            .unwrap_or_else(|_| stack.path.clone())
            .display()
            .to_string(),
    };
    p.limits = Limits {
        max_concurrent: Some(max),
        ..Limits::default()
    };
    if !in_supervisor("slot-wait") {
        p.slot_wait = Duration::ZERO;
    }
    Ok(Some(p))
}

/// Takes the stack's slot before anything starts. `Ok(Err((status, why)))`:
/// the stack must exit with `status` and start nothing — no slot after
/// `slot-wait` (`refused-exit`, 75 by default, said in one line unless
/// quiet or in cron mode, as a refused run is), or a stop signal while
/// waiting (128+N). `rx` is the supervisor's channel, on which only
/// signals arrive this early.
pub fn take(p: &Policy, group: &Settings, rx: &Receiver<Msg>) -> Result<Result<Gate, (i32, String)>, Error> {
    let mut gate = Gate::new(p, None)?;
    let mut sleep = |d: Duration, _wakeable: bool| -> Option<i32> {
        let end = Instant::now() + d;
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(Msg::Signal(sig)) if crate::signals::meaning(sig, true) == Meaning::Stop => {
                    return Some(sig)
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    };
    let (status, why, refused) = match gate.before_attempt(1, None, &mut sleep) {
        Ok(()) => return Ok(Ok(gate)),
        Err(Stop::Refused(why)) | Err(Stop::Failed(why)) => (group.refused_exit, why, true),
        Err(Stop::Interrupted(sig)) => (
            128 + sig,
            format!(
                "stopped by {} while waiting for a slot of key '{}'",
                crate::signals::name(sig),
                p.key
            ),
            false,
        ),
    };
    // A refusal is what `flock -n` does silently: -q and cron mode keep it
    // out of the mail (the exit status and summary-json still have it).
    let silent = group.verbosity == Verbosity::Quiet || group.output == OutputMode::Failure;
    if !(silent && refused) {
        let line = if refused {
            format!("rejected: {why}")
        } else {
            why.clone()
        };
        super::logs::say("patience", &line);
    }
    Ok(Err((status, why)))
}
