//! What patience says about a run, and the exit status it ends with: the
//! `[patience]` lines on stderr as the run goes, the final line, the
//! `--summary` statistics and the `--summary-json` report.
//!
//! Silence is golden (cron mails any output): a run whose first attempt
//! succeeds prints nothing unless asked. Writes to stderr ignore errors, so
//! a closed or broken stderr never stops or kills patience.

use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Resolved;
use crate::duration::format as fmt_dur;
use crate::messages::say;
use crate::outcome::{Attempt, Ending, Outcome};
use crate::settings::{Color, Restart, Settings, Verbosity};
use crate::signals;
use crate::state::Location;
use crate::sys::{self, ExitKind};

/// Exit status when the last attempt timed out, as `timeout`.
pub const EXIT_TIMEOUT: i32 = 124;

/// The exit status of a finished run: decided here and nowhere else.
/// `refused_exit` is that of a run refused before running (75, EX_TEMPFAIL,
/// unless `--refused-exit` says otherwise).
pub fn exit_status(outcome: &Outcome, refused_exit: i32) -> i32 {
    match &outcome.ending {
        Ending::Succeeded => 0,
        Ending::Interrupted(sig) => 128 + sig,
        // As the attempt ended, whatever the rules would have said of it: a
        // server that exits 0 on SIGTERM gives 0 (GNU timeout, tini).
        Ending::Forwarded(sig) => match outcome.last() {
            Some(a) if a.timed_out => EXIT_TIMEOUT,
            Some(Attempt {
                exit: Some(ExitKind::Code(code)),
                ..
            }) => *code,
            Some(Attempt {
                exit: Some(ExitKind::Signal(s)),
                ..
            }) => 128 + s,
            _ => 128 + sig,
        },
        Ending::Rejected(_) => refused_exit,
        Ending::Failed(_) => match outcome.last() {
            None => 1,
            Some(last) => attempt_status(last),
        },
    }
}

/// The status one attempt would give the run if it were the last.
fn attempt_status(a: &Attempt) -> i32 {
    if let Some(status) = a.spawn_status {
        return status;
    }
    if a.timed_out {
        return EXIT_TIMEOUT;
    }
    match a.exit {
        Some(ExitKind::Signal(sig)) => 128 + sig,
        // A failed attempt that exited with a success code failed on a
        // pattern: 1, so that a script never reads 0 (or another code of
        // --success-exit) as success. Likewise a 0 outside --success-exit.
        Some(ExitKind::Code(code))
            if a.verdict.failed_on_output() || (code == 0 && !a.verdict.is_success()) =>
        {
            1
        }
        Some(ExitKind::Code(code)) => code,
        None => 1,
    }
}

/// How an attempt ended, in words: `exit code 7`, `timeout after 10s`.
pub fn how(a: &Attempt, timeout: Option<Duration>) -> String {
    if a.timed_out {
        return match timeout {
            Some(t) if a.duration + Duration::from_millis(50) >= t => format!("timeout after {}", fmt_dur(t)),
            _ => "stopped at the deadline".to_string(),
        };
    }
    match (a.spawn_status, a.exit) {
        (Some(127), _) => "command not found".into(),
        (Some(_), _) => "command not executable".into(),
        // The rule names the exit code or signal when that decided; when
        // output did, the code is added: `exit code 0, failure pattern 'x'`.
        (None, Some(ExitKind::Code(c))) => {
            let rule = a.verdict.rule();
            if rule.starts_with("exit code") {
                rule.to_string()
            } else {
                format!("exit code {c}, {rule}")
            }
        }
        (None, Some(ExitKind::Signal(s))) => {
            let rule = a.verdict.rule();
            if rule.starts_with("killed by") || rule.starts_with("stopped by") {
                rule.to_string()
            } else {
                format!("killed by {}, {rule}", signals::name(s))
            }
        }
        (None, None) => "did not run".into(),
    }
}

/// Prints the run's messages as it goes, according to the settings.
pub struct Reporter {
    verbosity: Verbosity,
    /// `--output failure` (cron mode) without `--verbose`: say nothing
    /// unless the run fails, like the command's own output.
    hold: bool,
    color: bool,
    timeout: Option<Duration>,
}

impl Reporter {
    pub fn new(settings: &Settings) -> Reporter {
        let color = match settings.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && sys::isatty(2),
        };
        Reporter {
            verbosity: settings.verbosity,
            hold: settings.output == crate::settings::OutputMode::Failure
                && settings.verbosity == Verbosity::Normal,
            color,
            timeout: settings.timeout,
        }
    }

    fn of(n: u64, s: &Settings) -> String {
        if s.attempts == 0 {
            format!("attempt {n}")
        } else {
            format!("attempt {n}/{}", s.attempts)
        }
    }

    /// An attempt is about to start (shown with `--verbose`).
    pub fn starting(&mut self, n: u64, s: &Settings) {
        if self.verbosity == Verbosity::Verbose {
            let cmd: Vec<_> = s.command.iter().map(|a| a.to_string_lossy()).collect();
            say(&format!("{} starting: {}", Self::of(n, s), cmd.join(" ")));
        }
    }

    /// The first attempt waits `wait` of `--stagger stagger` (shown with
    /// `--verbose`); `cut` is the shorter time the deadline left to draw in.
    pub fn staggering(&mut self, wait: Duration, stagger: Duration, cut: Option<Duration>) {
        if self.verbosity == Verbosity::Verbose {
            let why = cut.map_or(String::new(), |left| {
                format!(
                    " (--stagger {} cut to the {} left before --deadline)",
                    fmt_dur(stagger),
                    fmt_dur(left)
                )
            });
            say(&format!("staggering start by {}{why}", fmt_dur(wait)));
        }
    }

    /// The command could not be started at all.
    pub fn cannot_run(&mut self, command: &OsString, err: &std::io::Error) {
        if self.verbosity > Verbosity::Quiet {
            say(&format!("cannot run '{}': {}", command.to_string_lossy(), err));
        }
    }

    /// An attempt ended and another follows after `delay`.
    pub fn attempt_ended(&mut self, a: &Attempt, s: &Settings, delay: Option<Duration>) {
        if self.verbosity == Verbosity::Quiet || self.hold {
            return;
        }
        let verb = if a.verdict.is_success() {
            "succeeded"
        } else {
            "failed"
        };
        // A supervisor (`--restart always`) logs every exit with its status
        // and the delay before the restart, success or not.
        let next = match delay {
            Some(d) if s.restart == Restart::Always => format!("; restarting in {}", fmt_dur(d)),
            Some(d) if a.verdict.is_success() => format!("; running again in {}", fmt_dur(d)),
            Some(d) => format!("; retrying in {}", fmt_dur(d)),
            None => String::new(),
        };
        let what = if a.verdict.is_success() && !a.timed_out && s.restart == Restart::OnFailure {
            String::new()
        } else {
            format!(" ({})", how(a, self.timeout))
        };
        say(&format!("{} {verb}{what}{next}", Self::of(a.number, s)));
    }

    /// The final line, and the statistics with `--summary`.
    pub fn finished(&mut self, o: &Outcome, summary: bool) {
        let plural = |n: u64| if n == 1 { "attempt" } else { "attempts" };
        let took = fmt_secs(o.duration);
        let (mark, line) = match &o.ending {
            Ending::Succeeded => {
                let quiet_ok = o.total <= 1 && self.verbosity != Verbosity::Verbose && !summary;
                if quiet_ok || self.verbosity == Verbosity::Quiet || (self.hold && !summary) {
                    return;
                }
                (
                    "✅",
                    format!("succeeded after {} {} ({took})", o.total, plural(o.total)),
                )
            }
            Ending::Failed(reason) => {
                let how = o.last().map(|a| how(a, self.timeout)).unwrap_or_default();
                (
                    "❌",
                    format!(
                        "failed after {} {} ({how}, {took}): {reason}",
                        o.total,
                        plural(o.total)
                    ),
                )
            }
            // A refusal is what `flock -n` does silently: cron mode and -q
            // keep it out of the mail (the exit status, --summary-json and
            // the metrics still have it).
            Ending::Rejected(_) if self.verbosity == Verbosity::Quiet || (self.hold && !summary) => return,
            Ending::Rejected(why) => ("❌", format!("rejected: {why}")),
            Ending::Interrupted(sig) => (
                "❌",
                format!(
                    "stopped by {} after {} {} ({took})",
                    signals::name(*sig),
                    o.total,
                    plural(o.total)
                ),
            ),
            Ending::Forwarded(sig) => {
                let how = o.last().map(|a| how(a, self.timeout)).unwrap_or_default();
                let kill = if o.last().is_some_and(|a| a.killed) {
                    ", SIGKILL needed"
                } else {
                    ""
                };
                (
                    if exit_status(o, 0) == 0 { "✅" } else { "❌" },
                    format!(
                        "stopped by {} after {} {} ({how}{kill}, {took})",
                        signals::name(*sig),
                        o.total,
                        plural(o.total)
                    ),
                )
            }
        };
        if self.color {
            let paint = if mark == "✅" { "\x1b[32m" } else { "\x1b[31m" };
            say(&format!("{mark} {paint}{line}\x1b[0m"));
        } else {
            say(&line);
        }
        if summary {
            say(&format!(
                "summary: attempts {}, succeeded {}, failed {}, total {took}, result {}",
                o.total,
                o.succeeded,
                o.failed,
                reason(&o.ending)
            ));
        }
    }
}

fn reason(e: &Ending) -> String {
    match e {
        Ending::Succeeded => "succeeded".into(),
        Ending::Failed(r) => r.clone(),
        Ending::Interrupted(s) | Ending::Forwarded(s) => format!("stopped by {}", signals::name(*s)),
        Ending::Rejected(r) => r.clone(),
    }
}

/// Seconds with one decimal: `4.2s`.
fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The `--summary-json` report.
pub fn json(o: &Outcome, s: &Settings) -> serde_json::Value {
    let attempts: Vec<_> = o
        .attempts
        .iter()
        .map(|a| {
            let (code, signal) = match a.exit {
                Some(ExitKind::Code(c)) => (Some(c), None),
                Some(ExitKind::Signal(sig)) => (None, Some(signals::name(sig))),
                None => (a.spawn_status, None),
            };
            serde_json::json!({
                "number": a.number,
                "start": unix_secs(a.started_at),
                "duration_s": a.duration.as_secs_f64(),
                "exit_code": code,
                "signal": signal,
                "timed_out": a.timed_out,
                "killed": a.killed,
                "outcome": match &a.verdict {
                    crate::conditions::Verdict::Success(_) => "success",
                    crate::conditions::Verdict::Retry(_) => "failure",
                    crate::conditions::Verdict::Final(_) => "final-failure",
                },
                "rule": a.verdict.rule(),
                "delay_after_s": a.delay_after.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let command: Vec<_> = s.command.iter().map(|a| a.to_string_lossy()).collect();
    serde_json::json!({
        "name": o.name,
        "command": command,
        "status": o.ending.word(),
        "reason": reason(&o.ending),
        "exit_status": exit_status(o, s.refused_exit),
        "start": unix_secs(o.started_at),
        "duration_s": o.duration.as_secs_f64(),
        "stagger_s": o.staggered.as_secs_f64(),
        "attempts_total": o.total,
        "succeeded": o.succeeded,
        "failed": o.failed,
        "attempts": attempts,
    })
}

/// Where `--summary-json` goes, opened before the run so that a path that
/// cannot be written is patience's error (125) before the command runs, not
/// a warning after it.
pub enum JsonOut {
    Stderr,
    File(std::path::PathBuf, std::fs::File),
}

impl JsonOut {
    /// Opens (creates or truncates) `path`; `-` is stderr.
    pub fn open(path: &std::path::Path) -> Result<JsonOut, crate::error::Error> {
        if path.as_os_str() == "-" {
            return Ok(JsonOut::Stderr);
        }
        std::fs::File::create(path)
            .map(|f| JsonOut::File(path.to_path_buf(), f))
            .map_err(|e| {
                crate::error::Error::Internal(format!("cannot write --summary-json {}: {e}", path.display()))
            })
    }

    /// Writes the JSON report of the run. A failure now (a full disk) is
    /// reported but does not change the run's exit status.
    pub fn write(self, o: &Outcome, s: &Settings) {
        self.write_value(&json(o, s));
    }

    /// Writes any JSON document (a stack's, patience-services(5)) the way
    /// a run's report is written.
    pub fn write_value(self, v: &serde_json::Value) {
        let text = format!("{v:#}\n");
        let (result, path) = match self {
            JsonOut::Stderr => (std::io::stderr().lock().write_all(text.as_bytes()), "-".into()),
            JsonOut::File(path, mut f) => (f.write_all(text.as_bytes()), path),
        };
        if let Err(e) = result {
            say(&format!("cannot write --summary-json {}: {e}", path.display()));
        }
    }
}

/// The `--dry-run` text: the config files and profile, every setting with
/// where it came from, then the delays that would follow the first attempts.
pub fn dry_run(r: &Resolved) -> String {
    let s = &r.settings;
    // Looked for, not created: a dry run writes nothing.
    let state = crate::state::locate(s.state_dir.as_deref(), false);
    let b = &s.backoff;
    let c = &s.conditions;
    let patterns = |p: &[crate::conditions::Pattern]| {
        if p.is_empty() {
            "none".to_string()
        } else {
            p.iter()
                .map(|p| format!("{:?}", p.source))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let opt_dur = |d: Option<Duration>| d.map(fmt_dur).unwrap_or_else(|| "none".into());
    let opt_path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    };
    let cmd: Vec<_> = s
        .command
        .iter()
        .map(|a| format!("{:?}", a.to_string_lossy()))
        .collect();
    let rows: Vec<(&str, String)> = vec![
        (
            "attempts",
            if s.attempts == 0 {
                "unlimited".into()
            } else {
                s.attempts.to_string()
            },
        ),
        ("timeout", opt_dur(s.timeout)),
        ("signal", signals::name(s.signal)),
        ("kill-after", fmt_dur(s.kill_after)),
        ("deadline", opt_dur(s.deadline)),
        ("stagger", opt_dur(s.stagger)),
        ("delay", crate::backoff::format_delay(b)),
        (
            "backoff",
            if b.list.is_empty() {
                b.strategy.to_string()
            } else {
                "none (a delay list)".into()
            },
        ),
        ("multiplier", b.multiplier.to_string()),
        ("max-delay", fmt_dur(b.max_delay)),
        ("jitter", b.jitter.to_string()),
        ("reset-after", opt_dur(s.reset_after)),
        ("restart", s.restart.to_string()),
        ("foreground", s.foreground.to_string()),
        ("success-exit", c.success_exit.to_string()),
        (
            "retry-exit",
            c.retry_exit
                .map(|r| r.to_string())
                .unwrap_or_else(|| "all".into()),
        ),
        ("stop-exit", c.stop_exit.to_string()),
        ("success-pattern", patterns(&c.success)),
        ("failure-pattern", patterns(&c.failure)),
        ("abort-pattern", patterns(&c.abort)),
        ("retry-pattern", patterns(&c.retry)),
        ("transient", c.transient.to_string()),
        ("match-stream", format!("{:?}", c.match_stream).to_lowercase()),
        ("output", s.output.to_string()),
        ("stdin", s.stdin.to_string()),
        ("init", s.init_mode().to_string()),
        ("name", s.run_name()),
        ("verbosity", format!("{:?}", s.verbosity).to_lowercase()),
        ("color", format!("{:?}", s.color).to_lowercase()),
        ("summary", s.summary.to_string()),
        ("summary-json", opt_path(&s.summary_json)),
        ("textfile-dir", opt_path(&s.textfile_dir)),
        (
            "socket",
            if s.no_metrics {
                "none (--no-metrics)".into()
            } else {
                crate::metrics::describe_socket(s.socket.as_deref())
                    .0
                    .display()
                    .to_string()
            },
        ),
        (
            "state-dir",
            match &state {
                Location::Found { dir, .. } => dir.display().to_string(),
                _ => "none".into(),
            },
        ),
        (
            "state-url",
            s.state_url
                .as_ref()
                .map_or("none (files)".into(), |u| u.to_string()),
        ),
        ("no-metrics", s.no_metrics.to_string()),
        ("key", s.key.clone().unwrap_or_else(|| s.run_name())),
        ("breaker", s.breaker.map_or("off".into(), |n| n.to_string())),
        ("breaker-cooldown", fmt_dur(s.breaker_cooldown)),
        ("rate-limit", s.rate_limit.map_or("off".into(), |r| r.to_string())),
        (
            "max-concurrent",
            s.max_concurrent.map_or("off".into(), |n| n.to_string()),
        ),
        ("slot-wait", fmt_dur(s.slot_wait)),
        ("refused-exit", s.refused_exit.to_string()),
    ];
    let mut out = format!("command: {}\n", cmd.join(" "));
    if r.files.is_empty() {
        out.push_str("config: none (--no-config)\n");
    }
    for f in &r.files {
        let state = if f.found { "read" } else { "not found" };
        out.push_str(&format!("config: {} ({state})\n", f.path.display()));
    }
    if let Some((name, by)) = &r.profile {
        out.push_str(&format!("profile: {name} ({by})\n"));
    }
    for (key, value) in rows {
        // Some rows are set by more than one option; the config merge keeps
        // only the source of the one applied last.
        let source = match key {
            "attempts" if r.sources.contains_key("forever") => r.source("forever"),
            "verbosity" if r.sources.contains_key("quiet") => r.source("quiet"),
            "verbosity" => r.source("verbose"),
            "output" if r.sources.contains_key("hold-output") => r.source("hold-output"),
            _ => r.source(key),
        };
        out.push_str(&format!("{key:<17} {value:<24} ({source})\n"));
    }
    // The server is not contacted: a dry run says where, not whether.
    if let Some(url) = &s.state_url {
        let password = match &s.state_url_password_file {
            Some(p) => format!(", password from {}", p.display()),
            None if url.has_password() => ", password from the URL".into(),
            None => String::new(),
        };
        out.push_str(&format!(
            "state store: redis at {url} (timeout {}, lease {}{password}); if it cannot be reached, a run goes on without --breaker, --rate-limit and --max-concurrent\n",
            fmt_dur(url.timeout),
            fmt_dur(url.lease)
        ));
    } else {
        out.push_str("state store: files in the state directory\n");
    }
    out.push_str(&match &state {
        Location::Found { how, .. } => format!("state directory: {how}\n"),
        Location::Unsafe(why) => format!("state directory: {why}: a run would exit 125\n"),
        Location::Nowhere(why) => format!(
            "state directory: none can be had ({why}); a run would go on without --breaker, --rate-limit and --max-concurrent\n"
        ),
    });
    if !s.no_metrics {
        let (_, daemon) = crate::metrics::describe_socket(s.socket.as_deref());
        out.push_str(&format!("daemon: {daemon}\n"));
    }
    let shown = if s.attempts == 0 {
        10
    } else {
        (s.attempts - 1).min(10)
    };
    out.push_str("schedule:\n");
    if let Some(st) = s.stagger {
        let below = s.deadline.map_or(st, |d| d.min(st));
        let cut = if below < st {
            format!(" (--stagger {} cut to --deadline)", fmt_dur(st))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  before attempt 1: a random wait in [0, {}){cut}\n",
            fmt_dur(below)
        ));
    }
    if shown == 0 {
        out.push_str("  a single attempt: no delay\n");
    }
    // The delays alone, attempts taking no time: once they reach the
    // deadline the run has ended, whatever the attempts took.
    let mut least = Duration::ZERO;
    for n in 1..=shown {
        let (lo, hi) = b.range(n);
        let when = if lo == hi {
            fmt_dur(lo)
        } else {
            format!("{} to {}", fmt_dur(lo), fmt_dur(hi))
        };
        least = least.saturating_add(lo);
        if let Some(d) = s.deadline.filter(|d| least >= *d) {
            out.push_str(&format!(
                "  after attempt {n}: {when} would reach --deadline {}: the run ends here at the latest\n",
                fmt_dur(d)
            ));
            break;
        }
        out.push_str(&format!("  after attempt {n}: {when}\n"));
    }
    out
}
