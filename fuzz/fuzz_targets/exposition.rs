//! The exposition writer's escaping: whatever the command name, the label
//! value written for it unescapes to the same name, and a run and an
//! attempt of that name render an exposition that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patience::daemon::aggregate::{Aggregate, DEFAULT_BUCKETS};
use patience::daemon::exposition::escape_label;
use patience::metrics::decode;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let mut label = String::new();
    escape_label(&mut label, &name);
    assert!(!label.contains('\n'), "a raw line feed in {label:?}");
    label.push('"');
    let (back, rest) = common::unescape(&label).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, name);
    assert!(rest.is_empty(), "an unescaped quote in {label:?}");

    let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
    let run = serde_json::json!({"v": 1, "event": "run", "name": name, "status": "failed",
        "attempts": 2, "exit_code": 7, "duration_s": 1.5});
    let attempt = serde_json::json!({"v": 1, "event": "attempt", "name": name, "attempt": 2,
        "exit_code": 7, "signal": null, "timed_out": false, "duration_s": 0.25});
    for event in [run, attempt] {
        let bytes = serde_json::to_vec(&event).unwrap();
        match decode(&bytes) {
            Ok(e) => assert_eq!(e.name(), name),
            // Only an empty or oversized name may be refused.
            Err(r) => assert!(name.is_empty() || bytes.len() > 4096, "{r:?} for {name:?}"),
        }
        agg.record(decode(&bytes), 1.0e9);
    }
    common::check_render(&agg, &[&name]);
});
