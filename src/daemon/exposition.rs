//! The Prometheus text exposition format 0.0.4, written by hand: each
//! family contiguous under its HELP and TYPE lines, label values escaped
//! (backslash, double quote, line feed), histograms cumulative with `+Inf`
//! equal to `_count`, and numbers spelled so that Prometheus's parser
//! (Go's `strconv.ParseFloat`) reads them back exactly.

use std::fmt::Write as _;

use super::aggregate::{Histogram, Snapshot, SERVICE_BUCKETS};
use crate::metrics::{ExitLabel, Reject, ServiceState, Status};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the exposition goes: a socket in chunks (see `http`), or memory.
/// Writing never fails here; a sink that cannot write remembers it and
/// drops the rest.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_str(&mut self, s: &str) {
        self.put(s.as_bytes());
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

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

/// A few bytes on the stack, for numbers formatted without allocating.
struct Scratch {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for Scratch {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn put_float(out: &mut impl Sink, x: f64) {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        // Timestamps and sums of whole seconds: the common case.
        if x < 0.0 {
            out.put(b"-");
        }
        return push_u64(out, x.abs() as u64);
    }
    let mut s = Scratch { buf: [0; 64], len: 0 };
    if x.is_nan() {
        out.put_str("NaN");
    } else if x.is_infinite() {
        out.put_str(if x > 0.0 { "+Inf" } else { "-Inf" });
    } else if x != 0.0 && (x.abs() >= 1e15 || x.abs() < 1e-4) {
        let _ = write!(s, "{x:e}");
        out.put(&s.buf[..s.len]);
    } else {
        let _ = write!(s, "{x}");
        out.put(&s.buf[..s.len]);
    }
}

/// `name` as a label value: itself, unless it holds a character to escape.
fn label_of(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        let mut label = String::with_capacity(name.len() + 8);
        escape_label(&mut label, name);
        std::borrow::Cow::Owned(label)
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

fn header(out: &mut impl Sink, name: &str, kind: &str, help: &str) {
    for part in ["# HELP ", name, " ", help, "\n# TYPE ", name, " ", kind, "\n"] {
        out.put_str(part);
    }
}

/// Writes a whole number without the formatting machinery: a scrape of
/// 10,000 series writes some 100,000 of them.
fn push_u64(out: &mut impl Sink, mut n: u64) {
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
    out.put(&digits[i..]);
}

/// Writes `family{command="label"` (without the closing brace).
fn open(out: &mut impl Sink, family: &str, label: &str) {
    out.put_str(family);
    out.put_str("{command=\"");
    out.put_str(label);
    out.put(b"\"");
}

/// Renders `snap` into `out`, one command at a time per family, so that
/// nothing but a command's escaped name is held beside the snapshot;
/// `start_time` is when the daemon started.
pub fn render(snap: &Snapshot, start_time: f64, out: &mut impl Sink) {
    render_families(snap, Some(start_time), out);
}

/// The `patience_*` families of `snap`, and the daemon's own when
/// `daemon` (its start time) is given: a textfile for node_exporter has none.
pub fn render_families(snap: &Snapshot, daemon: Option<f64>, out: &mut impl Sink) {
    // The `le` values, spelled once.
    let spell = |buckets: &[f64]| -> Vec<String> {
        buckets
            .iter()
            .map(|&le| {
                let mut s = String::new();
                write_float(&mut s, le);
                s.push_str("\"} ");
                s
            })
            .chain(std::iter::once("+Inf\"} ".to_string()))
            .collect()
    };
    let les = spell(&snap.buckets);
    // Each family walks every command again; a name that needs escaping
    // is escaped each time rather than kept, so memory stays that of the
    // snapshot.
    let each = |out: &mut dyn FnMut(&str, &super::aggregate::Command)| {
        for (name, c) in &snap.commands {
            out(&label_of(name), c);
        }
    };
    let mut prefix = String::new();

    header(
        out,
        "patience_runs_total",
        "counter",
        "Finished patience runs, by command name and final status.",
    );
    each(&mut |label, c| {
        for status in Status::ALL {
            if let Some(r) = c.runs[status.index()] {
                open(out, "patience_runs_total", label);
                out.put_str(",status=\"");
                out.put_str(status.as_str());
                out.put_str("\"} ");
                push_u64(out, r.count);
                out.put(b"\n");
            }
        }
    });

    header(
        out,
        "patience_attempts_total",
        "counter",
        "Finished attempts, by command name and how they ended: the exit code, timeout, or the signal's name.",
    );
    each(&mut |label, c| {
        for (exit, n) in &c.attempts {
            open(out, "patience_attempts_total", label);
            out.put_str(",exit_code=\"");
            match exit {
                ExitLabel::Code(c) => {
                    if *c < 0 {
                        out.put(b"-");
                    }
                    push_u64(out, c.unsigned_abs().into());
                }
                other => out.put_str(&other.to_string()),
            }
            out.put_str("\"} ");
            push_u64(out, *n);
            out.put(b"\n");
        }
    });

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
        header(out, family, "histogram", help);
        each(&mut |label, c| {
            let h = if run { &c.run_duration } else { &c.attempt_duration };
            if let Some(h) = h {
                write_histogram(out, &mut prefix, family, label, h, &les);
            }
        });
    }

    header(
        out,
        "patience_last_run_timestamp_seconds",
        "gauge",
        "When the latest run with this status ended, in seconds since the epoch.",
    );
    each(&mut |label, c| {
        for status in Status::ALL {
            if let Some(last) = c.runs[status.index()].and_then(|r| r.last) {
                open(out, "patience_last_run_timestamp_seconds", label);
                out.put_str(",status=\"");
                out.put_str(status.as_str());
                out.put_str("\"} ");
                put_float(out, last);
                out.put(b"\n");
            }
        }
    });

    header(
        out,
        "patience_last_run_exit_code",
        "gauge",
        "The exit status of the latest run: 0 when it succeeded.",
    );
    each(&mut |label, c| {
        if let Some(l) = c.last_run {
            open(out, "patience_last_run_exit_code", label);
            out.put_str("} ");
            if l.exit_code < 0 {
                out.put(b"-");
            }
            push_u64(out, l.exit_code.unsigned_abs().into());
            out.put(b"\n");
        }
    });

    header(
        out,
        "patience_running_since_timestamp_seconds",
        "gauge",
        "When the oldest run still in progress began, in seconds since the epoch; absent when none is.",
    );
    each(&mut |label, c| {
        if let Some(since) = c.running_since() {
            open(out, "patience_running_since_timestamp_seconds", label);
            out.put_str("} ");
            put_float(out, since);
            out.put(b"\n");
        }
    });

    service_families(out, snap, &mut prefix, &spell(&SERVICE_BUCKETS));

    if let Some(start_time) = daemon {
        let mut text = String::with_capacity(4096);
        daemon_families(&mut text, snap, start_time);
        out.put_str(&text);
    }
}

/// The `patience_service_*` families, from the supervisors of stacks.
fn service_families(out: &mut impl Sink, snap: &Snapshot, prefix: &mut String, les: &[String]) {
    let each = |out: &mut dyn FnMut(&str, &super::aggregate::Command)| {
        for (name, c) in snap.commands.iter().filter(|(_, c)| c.service.is_some()) {
            out(&label_of(name), c);
        }
    };
    for (family, help, up) in [
        (
            "patience_service_up",
            "1 while a run of the service is live (starting, ready, backoff or stopping), else 0.",
            true,
        ),
        (
            "patience_service_ready",
            "1 while the service is ready, else 0.",
            false,
        ),
    ] {
        header(out, family, "gauge", help);
        each(&mut |label, c| {
            if let Some(state) = c.service.as_ref().and_then(|s| s.state) {
                open(out, family, label);
                let on = if up {
                    state.up()
                } else {
                    state == ServiceState::Ready
                };
                out.put_str(if on { "} 1\n" } else { "} 0\n" });
            }
        });
    }
    header(
        out,
        "patience_service_ready_seconds",
        "histogram",
        "How long the service took from an attempt's start to ready, once per time it became ready.",
    );
    each(&mut |label, c| {
        if let Some(s) = &c.service {
            write_histogram(
                out,
                prefix,
                "patience_service_ready_seconds",
                label,
                &s.ready_seconds,
                les,
            );
        }
    });
    for (family, help, health) in [
        (
            "patience_service_health_failures_total",
            "Failed health checks of the service since its supervisor started.",
            true,
        ),
        (
            "patience_service_log_dropped_total",
            "Lines of the service's output dropped (log-overflow = drop) since its supervisor started.",
            false,
        ),
    ] {
        header(out, family, "counter", help);
        each(&mut |label, c| {
            if let Some(s) = &c.service {
                open(out, family, label);
                out.put_str("} ");
                push_u64(out, if health { s.health_failures } else { s.log_dropped });
                out.put(b"\n");
            }
        });
    }
}

/// The `patienced_*` families: a few lines.
fn daemon_families(out: &mut String, snap: &Snapshot, start_time: f64) {
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    header(out, "patienced_active", "gauge", "Always 1 while patienced runs.");
    out.push_str("patienced_active 1\n");

    header(
        out,
        "patienced_datagrams_total",
        "counter",
        "Datagrams received: accepted, dropped (over --max-series) or rejected (with the reason).",
    );
    let _ = writeln!(
        out,
        "patienced_datagrams_total{{result=\"accepted\"}} {}",
        snap.accepted
    );
    let _ = writeln!(
        out,
        "patienced_datagrams_total{{result=\"dropped\"}} {}",
        snap.dropped
    );
    for r in Reject::ALL {
        let _ = writeln!(
            out,
            "patienced_datagrams_total{{result=\"rejected\",reason=\"{}\"}} {}",
            r.as_str(),
            snap.rejected[r.index()]
        );
    }

    header(
        out,
        "patienced_series",
        "gauge",
        "Series held in memory (a histogram counts as one).",
    );
    let _ = writeln!(out, "patienced_series {}", snap.series);

    header(
        out,
        "patienced_series_dropped_total",
        "counter",
        "Series not created because --max-series was reached.",
    );
    let _ = writeln!(out, "patienced_series_dropped_total {}", snap.series_dropped);

    header(
        out,
        "patienced_start_time_seconds",
        "gauge",
        "When patienced started, in seconds since the epoch.",
    );
    out.push_str("patienced_start_time_seconds ");
    write_float(out, start_time);
    out.push('\n');
}

/// Writes one command's histogram: cumulative buckets up to `+Inf`, then
/// the sum and the count. `les` are the bounds as text, `+Inf` last, each
/// with the `"} ` that follows it.
fn write_histogram(
    out: &mut impl Sink,
    prefix: &mut String,
    family: &str,
    label: &str,
    h: &Histogram,
    les: &[String],
) {
    // What the bucket lines share, put together once.
    prefix.clear();
    prefix.push_str(family);
    prefix.push_str("_bucket{command=\"");
    prefix.push_str(label);
    prefix.push_str("\",le=\"");
    let mut cumulative = 0;
    for (n, le) in h.counts.iter().zip(les) {
        cumulative += n;
        out.put_str(prefix);
        out.put_str(le);
        push_u64(out, cumulative);
        out.put(b"\n");
    }
    for (suffix, is_sum) in [("_sum{command=\"", true), ("_count{command=\"", false)] {
        out.put_str(family);
        out.put_str(suffix);
        out.put_str(label);
        out.put_str("\"} ");
        if is_sum {
            put_float(out, h.sum);
        } else {
            push_u64(out, h.count);
        }
        out.put(b"\n");
    }
}

/// The whole exposition in memory (tests, and nothing that serves it).
pub fn render_to_string(snap: &Snapshot, start_time: f64) -> String {
    let mut out = Vec::new();
    render(snap, start_time, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::{Aggregate, DEFAULT_BUCKETS};
    use super::*;
    use crate::metrics::{AttemptEvent, Event, ExitLabel, RunEvent, ServiceEvent};

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
            let mut s = Vec::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string().as_bytes());
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
                    pid: None,
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
        for (state, ready_s) in [(ServiceState::Starting, None), (ServiceState::Ready, Some(0.7))] {
            agg.record(
                Ok(Event::Service(ServiceEvent {
                    name: "a".into(),
                    state,
                    ready_s,
                    health_failures: Some(2),
                    log_dropped: None,
                    ts: None,
                })),
                0.0,
            );
        }
        let text = render_to_string(&agg.snapshot(), 10.0);
        for line in [
            "patience_service_up{command=\"a\"} 1\n",
            "patience_service_ready{command=\"a\"} 1\n",
            "patience_service_ready_seconds_bucket{command=\"a\",le=\"0.5\"} 0\n",
            "patience_service_ready_seconds_bucket{command=\"a\",le=\"1\"} 1\n",
            "patience_service_ready_seconds_bucket{command=\"a\",le=\"600\"} 1\n",
            "patience_service_ready_seconds_bucket{command=\"a\",le=\"+Inf\"} 1\n",
            "patience_service_ready_seconds_sum{command=\"a\"} 0.7\n",
            "patience_service_ready_seconds_count{command=\"a\"} 1\n",
            "patience_service_health_failures_total{command=\"a\"} 2\n",
            "patience_service_log_dropped_total{command=\"a\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(
            !text.contains("patience_service_up{command=\"b\"}"),
            "b is no service"
        );
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
        assert!(text.contains("patienced_series 19\n"));
        assert!(text.contains("patience_runs_total{command=\"a\",status=\"failed\"} 0\n"));
        assert!(!text.contains("patience_last_run_timestamp_seconds{command=\"a\",status=\"failed\"}"));
        assert!(text.contains("patience_last_run_exit_code{command=\"a\"} 0\n"));
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
        assert_eq!(seen.len(), 17);
        // Stale: the gauges go, the histogram and counters stay.
        assert_eq!(agg.retire_services(f64::MAX), 1);
        let text = render_to_string(&agg.snapshot(), 10.0);
        assert!(!text.contains("patience_service_up{"), "{text}");
        assert!(!text.contains("patience_service_ready{"), "{text}");
        assert!(text.contains("patience_service_ready_seconds_count{command=\"a\"} 1\n"));
        assert!(text.contains("patience_service_health_failures_total{command=\"a\"} 2\n"));
        assert!(text.contains("patienced_series 17\n"));
    }
}
