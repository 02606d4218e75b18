//! The datagram decoder: never panics; what it accepts has a name, finite
//! non-negative durations and timestamps, and once aggregated renders an
//! exposition that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patience::daemon::aggregate::{Aggregate, DEFAULT_BUCKETS};
use patience::metrics::{decode, Event};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
    let Ok(event) = decoded.clone() else {
        agg.record(decoded, 1.0e9);
        common::check_render(&agg, &[]);
        return;
    };
    let name = event.name().to_string();
    assert!(!name.is_empty());
    let (duration, ts) = match &event {
        Event::Attempt(a) => (a.duration_s, a.ts),
        Event::Run(r) => (r.duration_s, r.ts),
    };
    assert!(duration.is_finite() && duration >= 0.0, "{duration}");
    assert!(ts.is_none_or(|t| t.is_finite() && t >= 0.0), "{ts:?}");
    // The same datagram twice: the second updates the series the first made.
    agg.record(Ok(event.clone()), 1.0e9);
    agg.record(Ok(event), 1.0e9);
    common::check_render(&agg, &[&name]);
});
