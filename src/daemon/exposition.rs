//! The Prometheus text exposition format 0.0.4, written by hand: each
//! family contiguous under its HELP and TYPE lines, label values escaped
//! (backslash, double quote, line feed), histograms cumulative with `+Inf`
//! equal to `_count`, and numbers spelled so that Prometheus's parser
//! (Go's `strconv.ParseFloat`) reads them back exactly.

use std::fmt::Write;

use super::aggregate::{Aggregate, Command, Histogram};
use crate::metrics::{Reject, Status};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes `value` as a label value, escaped.
pub fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes a sample value: integers plainly, other numbers in the shortest
/// form that reads back as the same f64, with an exponent when very large
/// or small, `+Inf`, `-Inf` and `NaN` as Prometheus spells them.
pub fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "+Inf" } else { "-Inf" });
    } else if x != 0.0 && (x.abs() >= 1e15 || x.abs() < 1e-4) {
        let _ = write!(out, "{x:e}");
    } else {
        let _ = write!(out, "{x}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a whole number without the formatting machinery: a scrape of
/// 10,000 series writes some 100,000 of them.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

/// Writes `family{command="label"` (without the closing brace).
fn open(out: &mut String, family: &str, label: &str) {
    out.push_str(family);
    out.push_str("{command=\"");
    out.push_str(label);
    out.push('"');
}

/// Renders everything in `agg`; `start_time` is when the daemon started.
pub fn render(agg: &Aggregate, start_time: f64) -> String {
    let buckets = &agg.buckets[..];
    // Each command's label value, escaped once for all its lines.
    let commands: Vec<(String, &Command)> = agg
        .commands
        .iter()
        .map(|(name, c)| {
            let mut label = String::with_capacity(name.len() + 8);
            escape_label(&mut label, name);
            (label, c)
        })
        .collect();
    // The `le` values, spelled once.
    let les: Vec<String> = buckets
        .iter()
        .map(|&le| {
            let mut s = String::new();
            write_float(&mut s, le);
            s
        })
        .chain(std::iter::once("+Inf".to_string()))
        .collect();
    // A close estimate, so the text is built without reallocating.
    let labels: usize = commands.iter().map(|(l, _)| l.len()).sum();
    let histogram_lines = les.len() + 2;
    let mut out = String::with_capacity(
        4096 + agg.series() * 90
            + labels * (8 + 2 * histogram_lines)
            + commands.len() * 2 * histogram_lines * 70,
    );

    header(
        &mut out,
        "patience_runs_total",
        "counter",
        "Finished patience runs, by command name and final status.",
    );
    for (label, c) in &commands {
        for status in Status::ALL {
            if let Some(r) = c.runs[status.index()] {
                open(&mut out, "patience_runs_total", label);
                out.push_str(",status=\"");
                out.push_str(status.as_str());
                out.push_str("\"} ");
                push_u64(&mut out, r.count);
                out.push('\n');
            }
        }
    }

    header(
        &mut out,
        "patience_attempts_total",
        "counter",
        "Finished attempts, by command name and how they ended: the exit code, timeout, or the signal's name.",
    );
    for (label, c) in &commands {
        for (exit, n) in &c.attempts {
            open(&mut out, "patience_attempts_total", label);
            let _ = write!(out, ",exit_code=\"{exit}\"}} ");
            push_u64(&mut out, *n);
            out.push('\n');
        }
    }

    for (family, help, run) in [
        (
            "patience_run_duration_seconds",
            "How long whole runs took, delays included.",
            true,
        ),
        (
            "patience_attempt_duration_seconds",
            "How long single attempts took.",
            false,
        ),
    ] {
        header(&mut out, family, "histogram", help);
        for (label, c) in &commands {
            let h = if run { &c.run_duration } else { &c.attempt_duration };
            if let Some(h) = h {
                write_histogram(&mut out, family, label, h, &les);
            }
        }
    }

    header(
        &mut out,
        "patience_last_run_timestamp_seconds",
        "gauge",
        "When the latest run with this status ended, in seconds since the epoch.",
    );
    for (label, c) in &commands {
        for status in Status::ALL {
            if let Some(r) = c.runs[status.index()] {
                open(&mut out, "patience_last_run_timestamp_seconds", label);
                out.push_str(",status=\"");
                out.push_str(status.as_str());
                out.push_str("\"} ");
                write_float(&mut out, r.last);
                out.push('\n');
            }
        }
    }

    header(
        &mut out,
        "patienced_active",
        "gauge",
        "Always 1 while patienced runs.",
    );
    out.push_str("patienced_active 1\n");

    header(
        &mut out,
        "patienced_datagrams_total",
        "counter",
        "Datagrams received: accepted, dropped (over --max-series) or rejected (with the reason).",
    );
    let _ = writeln!(
        out,
        "patienced_datagrams_total{{result=\"accepted\"}} {}",
        agg.accepted
    );
    let _ = writeln!(
        out,
        "patienced_datagrams_total{{result=\"dropped\"}} {}",
        agg.dropped
    );
    for r in Reject::ALL {
        let _ = writeln!(
            out,
            "patienced_datagrams_total{{result=\"rejected\",reason=\"{}\"}} {}",
            r.as_str(),
            agg.rejected[r.index()]
        );
    }

    header(
        &mut out,
        "patienced_series",
        "gauge",
        "Series held in memory (a histogram counts as one).",
    );
    let _ = writeln!(out, "patienced_series {}", agg.series());

    header(
        &mut out,
        "patienced_series_dropped_total",
        "counter",
        "Series not created because --max-series was reached.",
    );
    let _ = writeln!(out, "patienced_series_dropped_total {}", agg.series_dropped);

    header(
        &mut out,
        "patienced_start_time_seconds",
        "gauge",
        "When patienced started, in seconds since the epoch.",
    );
    out.push_str("patienced_start_time_seconds ");
    write_float(&mut out, start_time);
    out.push('\n');
    out
}

/// Writes one command's histogram: cumulative buckets up to `+Inf`, then
/// the sum and the count. `les` are the bounds as text, `+Inf` last.
fn write_histogram(out: &mut String, family: &str, label: &str, h: &Histogram, les: &[String]) {
    let mut cumulative = 0;
    for (n, le) in h.counts.iter().zip(les) {
        cumulative += n;
        out.push_str(family);
        out.push_str("_bucket{command=\"");
        out.push_str(label);
        out.push_str("\",le=\"");
        out.push_str(le);
        out.push_str("\"} ");
        push_u64(out, cumulative);
        out.push('\n');
    }
    for (suffix, is_sum) in [("_sum{command=\"", true), ("_count{command=\"", false)] {
        out.push_str(family);
        out.push_str(suffix);
        out.push_str(label);
        out.push_str("\"} ");
        if is_sum {
            write_float(out, h.sum);
        } else {
            push_u64(out, h.count);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::DEFAULT_BUCKETS;
    use super::*;
    use crate::metrics::{AttemptEvent, Event, ExitLabel, RunEvent};

    fn float(x: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, x);
        s
    }

    #[test]
    fn floats_read_back_exactly() {
        for x in [
            0.0,
            1.0,
            0.005,
            0.1,
            3600.0,
            1_764_000_000.123_456,
            1e-7,
            1e300,
            123.456e20,
            f64::MAX,
        ] {
            let s = float(x);
            assert_eq!(s.parse::<f64>().unwrap(), x, "{s}");
            assert!(s.len() < 30, "{s}");
        }
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\"b\\c\nd{e}\tf");
        assert_eq!(s, "a\\\"b\\\\c\\nd{e}\tf");
    }

    #[test]
    fn histograms_are_cumulative_and_families_contiguous() {
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
        for (name, d) in [("b", 0.3), ("a", 0.3), ("a", 7000.0), ("a", 0.001)] {
            agg.record(
                Ok(Event::Run(RunEvent {
                    name: name.into(),
                    status: Status::Succeeded,
                    attempts: None,
                    exit_code: None,
                    duration_s: d,
                    ts: Some(1.5),
                })),
                0.0,
            );
            agg.record(
                Ok(Event::Attempt(AttemptEvent {
                    name: name.into(),
                    attempt: None,
                    exit: ExitLabel::Signal(9),
                    duration_s: d,
                    ts: None,
                })),
                0.0,
            );
        }
        let text = render(&agg, 10.0);
        assert!(text.contains("patience_runs_total{command=\"a\",status=\"succeeded\"} 3\n"));
        assert!(text.contains("patience_attempts_total{command=\"a\",exit_code=\"SIGKILL\"} 3\n"));
        assert!(text.contains("patience_run_duration_seconds_bucket{command=\"a\",le=\"0.005\"} 1\n"));
        assert!(text.contains("patience_run_duration_seconds_bucket{command=\"a\",le=\"0.5\"} 2\n"));
        assert!(text.contains("patience_run_duration_seconds_bucket{command=\"a\",le=\"3600\"} 2\n"));
        assert!(text.contains("patience_run_duration_seconds_bucket{command=\"a\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("patience_run_duration_seconds_count{command=\"a\"} 3\n"));
        assert!(
            text.contains("patience_last_run_timestamp_seconds{command=\"b\",status=\"succeeded\"} 1.5\n")
        );
        assert!(text.contains("patienced_series 10\n"));
        // Each family's lines are contiguous: once a family is left, its
        // name never comes back.
        let mut seen = Vec::new();
        for line in text.lines() {
            let name = if let Some(rest) = line.strip_prefix("# ") {
                rest.split(' ').nth(1).unwrap().to_string()
            } else {
                let metric = line.split(['{', ' ']).next().unwrap();
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(metric, |m, s| m.strip_suffix(s).unwrap_or(m))
                    .to_string()
            };
            if seen.last() != Some(&name) {
                assert!(!seen.contains(&name), "{name} is split");
                seen.push(name);
            }
        }
        assert_eq!(seen.len(), 10);
    }
}
