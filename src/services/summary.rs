//! The stack's `summary-json` (patience-services(5)): one JSON document
//! written when the supervisor ends, through the same [`JsonOut`] a single
//! run's `--summary-json` goes through (opened before anything starts, so a
//! path that cannot be written is patience's error, 125).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::report::JsonOut;

use super::methods::word;
use super::supervisor::Sup;
use super::Plan;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The document: the stack's status and duration, and per service what the
/// supervisor knows of it at the end. `sup` is `None` for a stack refused
/// its slot, of which nothing ran (`reason` says why).
pub(super) fn document(
    plan: &Plan,
    sup: Option<&Sup>,
    status: i32,
    start: SystemTime,
    duration: Duration,
    reason: Option<&str>,
) -> Value {
    let mut services = Map::new();
    for (i, svc) in plan.stack.services.iter().enumerate() {
        let entry = match sup {
            Some(sup) => {
                let s = &sup.svcs[i];
                json!({
                    "selected": plan.wanted[i],
                    "critical": svc.critical,
                    "state": word(&s.state),
                    "exit_status": s.status,
                    "attempts": s.attempt,
                    "restarts": s.restarts,
                    "last_exit": s.last_exit,
                    "health_failures": s.health.failures,
                    "log_dropped": s.dropped.load(std::sync::atomic::Ordering::Relaxed),
                    "note": sup.note(i, std::time::Instant::now()),
                })
            }
            None => json!({
                "selected": plan.wanted[i],
                "critical": svc.critical,
                "state": if plan.wanted[i] { "waiting" } else { "stopped" },
                "exit_status": null,
                "attempts": 0,
                "restarts": 0,
                "last_exit": null,
                "health_failures": 0,
                "log_dropped": 0,
                "note": if plan.wanted[i] { "never started" } else { "not selected" },
            }),
        };
        services.insert(svc.name.clone(), entry);
    }
    let word = match (reason, status) {
        (Some(_), _) => "rejected",
        (None, 0) => "succeeded",
        (None, _) => "failed",
    };
    json!({
        "name": plan.stack.group.name,
        "file": plan.stack.path.display().to_string(),
        "status": word,
        "reason": reason,
        "exit_status": status,
        "start": unix(start),
        "duration_s": duration.as_secs_f64(),
        "services": services,
    })
}

/// Writes the document if `summary-json` asked for it.
pub(super) fn write(out: Option<JsonOut>, doc: impl FnOnce() -> Value) {
    if let Some(out) = out {
        out.write_value(&doc());
    }
}
