//! The duration parser: never panics; what it accepts is at most 100 years;
//! a duration written in whole units reads as exactly that many
//! nanoseconds; what patience prints, it reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patience::duration;
use std::time::Duration;

/// The exact value of `text` if it is a sequence of whole numbers with
/// units (`1m30s`, `1500ms`), computed in integers.
fn exact(text: &str) -> Option<u128> {
    let s = text.trim();
    let mut total: u128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if n == 0 || n > 30 {
            return None;
        }
        let value: u128 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale: u128 = match &rest[..u] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(scale)?)?;
        rest = &rest[u..];
    }
    Some(total)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = duration::parse(text) else {
        return;
    };
    assert!(d <= duration::MAX, "{text:?} gave {d:?}, over the limit");
    if let Some(ns) = exact(text) {
        assert_eq!(d.as_nanos(), ns, "{text:?} is not read exactly");
    }
    let shown = duration::format(d);
    let back = duration::parse(&shown).unwrap_or_else(|e| panic!("{d:?} printed as {shown:?}: {e}"));
    // format() rounds: to the microsecond or millisecond below 1s, the
    // tenth of a second below 1m, the second above.
    let slack = if d < Duration::from_secs(1) {
        Duration::from_millis(1)
    } else if d < Duration::from_secs(60) {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(1)
    };
    let diff = if back > d { back - d } else { d - back };
    assert!(diff <= slack, "{d:?} printed as {shown:?} reads back as {back:?}");
});
