//! Durations as users write them (`250ms`, `1.5s`, `1m30s`, `2h`, `1d`, a bare
//! number of seconds) and as patience prints them back.
//!
//! Parsing refuses anything it cannot represent exactly enough: negative
//! values, NaN, infinities, overflow, unknown units, empty strings. A huge but
//! well-formed value is an error too, rather than a silent saturation, so a
//! typo never turns into "wait forever".

use std::time::Duration;

/// The largest duration patience accepts anywhere: 100 years. Far beyond any
/// real timeout, and small enough that `Instant + d` can never overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration such as `1m30s`. The error says what is wrong with the
/// value; the caller adds which option or key it came from.
///
/// The value is added up in whole nanoseconds, not in floating point, so
/// `1000000007ns` or `1m0.000000001s` mean exactly what they say; digits
/// below a nanosecond are dropped, except that a positive value never
/// becomes zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let too_large = || format!("duration '{text}' is too large (the limit is 100 years)");
    let number = |digits: &str| -> Result<u128, String> {
        match digits {
            "" => Ok(0),
            d => d.parse().map_err(|_| too_large()),
        }
    };
    let max_ns = MAX.as_nanos();
    let mut total: u128 = 0;
    let mut below_ns = false;
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num.starts_with('.') && num.len() == 1 {
            return Err(format!(
                "invalid duration '{text}' (expected e.g. 250ms, 1.5s, 1m30s, 2h, 1d)"
            ));
        }
        if num.matches('.').count() > 1 {
            return Err(format!("invalid duration '{text}' (malformed number '{num}')"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "" if parts == 0 && next.is_empty() => 1_000_000_000,
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            // Only a lone number may go without one: `1m30` is ambiguous.
            "" => {
                return Err(format!(
                    "invalid duration '{text}' (no unit after '{num}'; use ns, us, ms, s, m, h or d)"
                ))
            }
            _ => {
                return Err(format!(
                    "invalid duration '{text}' (unknown unit '{unit}'; use ns, us, ms, s, m, h or d)"
                ))
            }
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        // Leading zeros are harmless however many there are; any other
        // whole part longer than 20 digits is far over the limit.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 20 {
            return Err(too_large());
        }
        let whole = number(whole)?;
        // 18 digits of a fraction are below a nanosecond even for days:
        // 10^18 × 86,400 × 10^9 still fits a u128.
        let kept = &frac[..frac.len().min(18)];
        let digits = number(kept)?;
        let exact = digits * scale;
        let ten_k = 10u128.pow(kept.len() as u32);
        if exact % ten_k != 0 || frac[kept.len()..].bytes().any(|b| b != b'0') {
            below_ns = true;
        }
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(exact / ten_k))
            .and_then(|v| v.checked_add(total))
            .filter(|&v| v <= max_ns)
            .ok_or_else(too_large)?;
        parts += 1;
        rest = next;
    }
    // A positive value below one nanosecond still means "as soon as possible",
    // never "no limit": round it up rather than down to zero (GNU bug 77535).
    if total == 0 && below_ns {
        total = 1;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration for messages: `250ms`, `1.5s`, `2m30s`, `1h5m`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        if d.as_nanos() > 0 && ms == 0 {
            return match d.as_micros() {
                0 => format!("{}ns", d.as_nanos()),
                us => format!("{us}us"),
            };
        }
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            return format!("{}s", tenths as u64);
        }
        return format!("{tenths:.1}s");
    }
    let total = d.as_secs();
    let (days, hours, mins, s) = (total / 86400, total / 3600 % 24, total / 60 % 60, total % 60);
    let mut out = String::new();
    for (v, u) in [(days, "d"), (hours, "h"), (mins, "m"), (s, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{u}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("10us").unwrap(), Duration::from_micros(10));
    }

    #[test]
    fn whole_units_are_read_exactly() {
        // Found by fuzzing: adding up in f64 read these 2 ns off.
        assert_eq!(
            parse("1ms131555511s30s0ms").unwrap(),
            Duration::new(131_555_541, 1_000_000)
        );
        assert_eq!(parse("1000000007ns").unwrap(), Duration::new(1, 7));
        assert_eq!(parse("1m0.000000001s").unwrap(), Duration::new(60, 1));
        assert_eq!(parse("0.1s").unwrap(), Duration::from_millis(100));
        assert_eq!(parse("1.").unwrap(), Duration::from_secs(1));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("36500d").unwrap(), MAX);
        assert!(parse("36500d1ns").is_err());
        assert_eq!(
            parse("00000000000000000000000001s").unwrap(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn tiny_values_never_become_zero() {
        assert_eq!(parse("1ns").unwrap(), Duration::from_nanos(1));
        assert_eq!(parse("0.0000000001s").unwrap(), Duration::from_nanos(1));
        assert_eq!(
            parse("0.0000000000000000000001d").unwrap(),
            Duration::from_nanos(1)
        );
        assert_eq!(parse("0.000s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_nonsense_and_overflow() {
        for bad in [
            "",
            " ",
            "-1",
            "-0",
            "-5s",
            "NaN",
            "nan",
            "inf",
            "1x",
            "1.5.5s",
            "10€",
            "1e999s",
            "18446744073709551616s",
            "9223372036854775808d",
            "s",
            "1s2",
            "ms",
            ".",
            "1 s",
            "1e3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        let e = parse("1m30").unwrap_err();
        assert!(e.contains("no unit after '30'"), "{e}");
    }

    #[test]
    fn formats_for_humans() {
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(1)), "1s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_secs(150)), "2m30s");
        assert_eq!(format(Duration::from_secs(3900)), "1h5m");
        assert_eq!(format(Duration::from_nanos(1)), "1ns");
        assert_eq!(format(Duration::from_micros(5)), "5us");
        assert_eq!(format(Duration::ZERO), "0ms");
    }
}
