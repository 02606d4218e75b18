//! The resolved settings of one patience run, the table of options that set
//! them, and `apply`, the one place where a named value (from the command
//! line, a config file or the environment) is validated into a setting.
//!
//! Every source speaks the same language: an option's long name and its text
//! value. So the command line, `[defaults]` and `[profile.X]` tables share one
//! validator and one set of error messages, and the attempt loop only ever
//! sees this plain struct.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::{self, Backoff};
use crate::conditions::{CodeSet, Conditions, Pattern};
use crate::duration;
use crate::state::{self, ratelimit::Rate, url::StateUrl};

/// One option patience understands.
#[derive(Debug)]
pub struct Opt {
    pub long: &'static str,
    pub short: Option<char>,
    /// Takes a value (`--timeout 5s`) rather than being a switch.
    pub value: Option<&'static str>,
    /// May be given more than once, each adding to a list.
    pub repeat: bool,
    pub help: &'static str,
}

const fn opt(
    long: &'static str,
    short: Option<char>,
    value: Option<&'static str>,
    help: &'static str,
) -> Opt {
    Opt {
        long,
        short,
        value,
        repeat: false,
        help,
    }
}

/// A row for an option that may be given more than once, each adding to a
/// list (`--failure-pattern a --failure-pattern b`).
const fn many(long: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        short: None,
        value: Some(value),
        repeat: true,
        help,
    }
}

/// Every option that sets a `Settings` field, in `--help` order. The command
/// line also has options that are not settings (`--help`, `--config`, …);
/// those live in `cli`.
pub const OPTIONS: &[Opt] = &[
    opt(
        "attempts",
        Some('a'),
        Some("N"),
        "maximum attempts, 0 = unlimited [3]",
    ),
    opt("forever", None, None, "same as --attempts 0"),
    opt(
        "timeout",
        Some('t'),
        Some("DUR"),
        "time limit per attempt, 0 = none [none]",
    ),
    opt(
        "signal",
        Some('s'),
        Some("SIG"),
        "signal sent at timeout: TERM, 15, RTMIN+1, 0 = none [TERM]",
    ),
    opt(
        "kill-after",
        Some('k'),
        Some("DUR"),
        "grace before SIGKILL (timeouts, leftovers; a passed-on TERM only if given), 0 = none [5s]",
    ),
    opt(
        "deadline",
        None,
        Some("DUR"),
        "limit for the whole run, delays included [none]",
    ),
    opt(
        "stagger",
        None,
        Some("DUR"),
        "wait a random time in [0, DUR) before the first attempt (cron splay), 0 = none [none]",
    ),
    opt(
        "delay",
        Some('d'),
        Some("DUR"),
        "base delay between attempts, or a list 1s,5s,30s (the last repeats) [1s]",
    ),
    opt(
        "backoff",
        Some('b'),
        Some("NAME"),
        "fixed, linear, exponential, fibonacci, jitter, decorrelated-jitter [exponential]",
    ),
    opt("multiplier", None, Some("F"), "exponential growth factor [2]"),
    opt("max-delay", None, Some("DUR"), "cap on any delay [60s]"),
    opt(
        "jitter",
        None,
        Some("FRACTION"),
        "random spread of +-FRACTION on any delay [0]",
    ),
    opt(
        "reset-after",
        None,
        Some("DUR"),
        "an attempt that ran this long restarts the backoff [none]",
    ),
    opt(
        "restart",
        None,
        Some("POLICY"),
        "on-failure, always, on-success [on-failure]",
    ),
    opt(
        "foreground",
        None,
        None,
        "keep the command in patience's process group (terminal access)",
    ),
    opt(
        "init",
        None,
        None,
        "reap every orphan, as PID 1 does (on by itself as PID 1)",
    ),
    opt(
        "name",
        None,
        Some("NAME"),
        "the run's name in reports and metrics",
    ),
    opt(
        "success-exit",
        None,
        Some("CODES"),
        "exit codes that count as success: 0, 0,2, 0-3,5 [0]",
    ),
    opt(
        "retry-exit",
        None,
        Some("CODES"),
        "only these failing exit codes are retried; a timeout is 124 [all]",
    ),
    opt(
        "stop-exit",
        None,
        Some("CODES"),
        "these exit codes are final, never retried; a timeout is 124 [none]",
    ),
    many(
        "success-pattern",
        "RE",
        "the output must match RE for success (repeatable)",
    ),
    many(
        "failure-pattern",
        "RE",
        "output matching RE fails the attempt (repeatable)",
    ),
    many(
        "abort-pattern",
        "RE",
        "output matching RE makes a failure final (repeatable)",
    ),
    many(
        "retry-pattern",
        "RE",
        "retry a failure only if the output matched RE (repeatable)",
    ),
    opt(
        "transient",
        None,
        None,
        "retry only transient errors: connection refused, DNS, locks, 429/503, exit 75",
    ),
    opt(
        "match-stream",
        None,
        Some("STREAM"),
        "what patterns read: stdout, stderr, both [both]",
    ),
    opt(
        "output",
        None,
        Some("MODE"),
        "live, final (last attempt's stdout only; stderr live), failure (only if the run failed) [live]",
    ),
    opt("hold-output", None, None, "same as --output failure (cron mode)"),
    opt(
        "stdin",
        None,
        Some("MODE"),
        "inherit, replay (same bytes to every attempt), null [inherit]",
    ),
    opt("quiet", Some('q'), None, "print only the final failure line"),
    opt("verbose", Some('v'), None, "also print attempt starts and delays"),
    opt("color", None, Some("WHEN"), "auto, always, never [auto]"),
    opt("summary", None, None, "print run statistics at the end"),
    opt(
        "summary-json",
        None,
        Some("PATH"),
        "write a JSON report of the run to PATH (- for stderr)",
    ),
    opt(
        "textfile-dir",
        None,
        Some("DIR"),
        "also write the run's metrics to DIR/NAME.prom (node_exporter)",
    ),
    opt(
        "no-metrics",
        None,
        None,
        "send nothing to patienced, even if its socket exists",
    ),
    opt(
        "key",
        None,
        Some("NAME"),
        "state shared by --breaker, --rate-limit, --max-concurrent [the run's name]",
    ),
    opt(
        "state-url",
        None,
        Some("URL"),
        "share the key's state through Redis: redis://host[:port][/db], unix:///path (env PATIENCE_STATE_URL) [files]",
    ),
    opt(
        "state-url-password-file",
        None,
        Some("FILE"),
        "the --state-url server's password is the first line of FILE",
    ),
    opt(
        "breaker",
        None,
        Some("N"),
        "refuse runs (exit 75) after N consecutive failed attempts of the key [off]",
    ),
    opt(
        "breaker-cooldown",
        None,
        Some("DUR"),
        "how long the breaker refuses runs before one probe run [30s]",
    ),
    opt(
        "rate-limit",
        None,
        Some("N/DUR"),
        "at most N attempts per DUR across runs of the key, bursts of N [off]",
    ),
    opt(
        "max-concurrent",
        None,
        Some("N"),
        "at most N runs of the key at once; others exit 75 [off]",
    ),
    opt(
        "slot-wait",
        None,
        Some("DUR"),
        "wait up to DUR for a free --max-concurrent slot instead [0]",
    ),
    opt(
        "refused-exit",
        None,
        Some("N"),
        "exit status of a run refused before running, 0-255 [75]",
    ),
];

/// Settings that only a config file's `[defaults]`/`[profile.NAME]` or the
/// environment can set: they have no command-line option, but `apply`
/// validates them like the others.
pub const CONFIG_ONLY: &[Opt] = &[
    opt(
        "socket",
        None,
        Some("PATH"),
        "the metrics socket patience sends to (env PATIENCE_SOCKET)",
    ),
    opt(
        "state-dir",
        None,
        Some("PATH"),
        "the directory of the cross-process state (env PATIENCE_STATE_DIR)",
    ),
];

/// Looks an option up by its long name.
pub fn find(long: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.long == long)
}

/// What of the child's output is shown: `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Every attempt's output, as it comes.
    Live,
    /// The last attempt's output, at the end, whatever its result.
    Final,
    /// The last attempt's output, at the end, only if the run failed.
    Failure,
}

impl std::str::FromStr for OutputMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(OutputMode::Live),
            "final" => Ok(OutputMode::Final),
            "failure" => Ok(OutputMode::Failure),
            _ => Err(format!(
                "unknown output mode '{s}' (pick from: live, final, failure)"
            )),
        }
    }
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputMode::Live => "live",
            OutputMode::Final => "final",
            OutputMode::Failure => "failure",
        })
    }
}

/// What each attempt reads on stdin: `--stdin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinMode {
    /// patience's own stdin (the first attempt may consume it).
    Inherit,
    /// patience's stdin read once; every attempt gets the same bytes.
    Replay,
    /// /dev/null.
    Null,
}

impl std::str::FromStr for StdinMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inherit" => Ok(StdinMode::Inherit),
            "replay" => Ok(StdinMode::Replay),
            "null" => Ok(StdinMode::Null),
            _ => Err(format!(
                "unknown stdin mode '{s}' (pick from: inherit, replay, null)"
            )),
        }
    }
}

impl std::fmt::Display for StdinMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StdinMode::Inherit => "inherit",
            StdinMode::Replay => "replay",
            StdinMode::Null => "null",
        })
    }
}

/// What to do after an attempt, whatever `--attempts` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Retry until an attempt succeeds (the default).
    OnFailure,
    /// Run again whatever the result: supervision.
    Always,
    /// Run again until an attempt fails: flaky-test hunting.
    OnSuccess,
}

impl std::str::FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on-failure" => Ok(Restart::OnFailure),
            "always" => Ok(Restart::Always),
            "on-success" => Ok(Restart::OnSuccess),
            _ => Err(format!(
                "unknown restart policy '{s}' (pick from: on-failure, always, on-success)"
            )),
        }
    }
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
            Restart::OnSuccess => "on-success",
        })
    }
}

/// How much patience says about the run on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Whether to use colour and symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for Color {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Color::Auto),
            "always" => Ok(Color::Always),
            "never" => Ok(Color::Never),
            _ => Err(format!(
                "unknown color choice '{s}' (pick from: auto, always, never)"
            )),
        }
    }
}

/// Everything one patience run needs to know, resolved from every source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The command and its arguments, passed through byte for byte.
    pub command: Vec<OsString>,
    /// Maximum attempts; 0 means unlimited.
    pub attempts: u64,
    pub timeout: Option<Duration>,
    pub signal: i32,
    pub kill_after: Duration,
    /// `--kill-after` was given (command line or a file): only then is a
    /// stop signal patience passes on escalated to SIGKILL.
    pub kill_after_given: bool,
    pub deadline: Option<Duration>,
    /// `--stagger`: the first attempt waits a random time below this.
    pub stagger: Option<Duration>,
    pub backoff: Backoff,
    pub reset_after: Option<Duration>,
    pub restart: Restart,
    pub foreground: bool,
    /// Init duty (`--init`): subreaper, reap every child. Also on whenever
    /// patience is PID 1; see `init_mode`.
    pub init: bool,
    pub name: Option<String>,
    /// Exit codes and patterns deciding each attempt's verdict.
    pub conditions: Conditions,
    /// What of the child's output is shown (`--output`).
    pub output: OutputMode,
    /// What each attempt reads on stdin (`--stdin`).
    pub stdin: StdinMode,
    pub verbosity: Verbosity,
    pub color: Color,
    pub summary: bool,
    pub summary_json: Option<PathBuf>,
    /// `--textfile-dir`: node_exporter's textfile collector directory.
    pub textfile_dir: Option<PathBuf>,
    /// The metrics socket (config `socket`, env `PATIENCE_SOCKET`); `None`
    /// means the built-in search.
    pub socket: Option<PathBuf>,
    /// The state directory (config `state-dir`, env `PATIENCE_STATE_DIR`);
    /// `None` means the built-in search.
    pub state_dir: Option<PathBuf>,
    /// The Redis server of the shared state (`--state-url`, config
    /// `state-url`, env `PATIENCE_STATE_URL`); `None` is the file store.
    pub state_url: Option<StateUrl>,
    /// A file whose first line is the server's password (config
    /// `state-url-password-file`): kept off the command line.
    pub state_url_password_file: Option<PathBuf>,
    /// Send no datagrams to patienced.
    pub no_metrics: bool,
    /// The key of the shared state; `None` is the run's name.
    pub key: Option<String>,
    /// Consecutive failed attempts that open the circuit breaker.
    pub breaker: Option<u64>,
    pub breaker_cooldown: Duration,
    pub rate_limit: Option<Rate>,
    pub max_concurrent: Option<u64>,
    pub slot_wait: Duration,
    /// The exit status of a run the shared state refused (`--refused-exit`).
    pub refused_exit: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            command: Vec::new(),
            attempts: 3,
            timeout: None,
            signal: libc::SIGTERM,
            kill_after: Duration::from_secs(5),
            kill_after_given: false,
            deadline: None,
            stagger: None,
            backoff: Backoff::default(),
            reset_after: None,
            restart: Restart::OnFailure,
            foreground: false,
            init: false,
            name: None,
            conditions: Conditions::default(),
            output: OutputMode::Live,
            stdin: StdinMode::Inherit,
            verbosity: Verbosity::Normal,
            color: Color::Auto,
            summary: false,
            summary_json: None,
            textfile_dir: None,
            socket: None,
            state_dir: None,
            state_url: None,
            state_url_password_file: None,
            no_metrics: false,
            key: None,
            breaker: None,
            breaker_cooldown: Duration::from_secs(30),
            rate_limit: None,
            max_concurrent: None,
            slot_wait: Duration::ZERO,
            refused_exit: 75,
        }
    }
}

/// Parses a whole number of attempts; `0` is unlimited.
fn parse_attempts(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n <= u32::MAX as u64 => Ok(n),
        _ => Err(format!(
            "invalid number of attempts '{s}' (expected a whole number from 0 to {}; 0 = unlimited)",
            u32::MAX
        )),
    }
}

/// A count for the shared-state limits: `0` means "off".
fn optional_count(s: &str) -> Result<Option<u64>, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(n) if n <= 1_000_000 => Ok(Some(n)),
        _ => Err(format!(
            "invalid number '{s}' (expected a whole number from 0 to 1000000; 0 = off)"
        )),
    }
}

/// An exit status patience may choose: 0 to 255.
fn parse_status(s: &str) -> Result<i32, String> {
    match s.trim().parse::<u8>() {
        Ok(n) => Ok(i32::from(n)),
        Err(_) => Err(format!(
            "invalid exit status '{s}' (expected a whole number from 0 to 255)"
        )),
    }
}

/// A duration where `0` means "none".
fn optional_duration(s: &str) -> Result<Option<Duration>, String> {
    let d = duration::parse(s)?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn switch(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(format!("expected true or false, not '{v}'")),
    }
}

impl Settings {
    /// What the shared state (`--breaker`, `--rate-limit`,
    /// `--max-concurrent`) of this run is asked to do.
    pub fn shared_state(&self) -> state::Policy {
        state::Policy {
            key: self.key.clone().unwrap_or_else(|| self.run_name()),
            limits: state::Limits {
                breaker: self.breaker.map(|threshold| state::breaker::Config {
                    threshold,
                    cooldown: self.breaker_cooldown,
                }),
                rate: self.rate_limit,
                max_concurrent: self.max_concurrent,
            },
            slot_wait: self.slot_wait,
            state_dir: self.state_dir.clone(),
            state_url: self.state_url.clone(),
            password_file: self.state_url_password_file.clone(),
            chatty: self.verbosity == Verbosity::Verbose
                || (self.verbosity == Verbosity::Normal && self.output != OutputMode::Failure),
            verbose: self.verbosity == Verbosity::Verbose,
        }
    }

    /// The run's name: `--name`, else the command's basename and 8 hex digits
    /// of a stable hash (FNV-1a) of the whole argv, so that `curl a` and
    /// `curl b` are told apart and the name is the same from run to run.
    pub fn run_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        use std::os::unix::ffi::OsStrExt;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for arg in &self.command {
            for &b in arg.as_bytes().iter().chain(std::iter::once(&0u8)) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let first = self
            .command
            .first()
            .map(std::path::Path::new)
            .and_then(|p| p.file_name());
        let base = first
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_else(|| "command".into());
        format!("{base}-{:08x}", (hash ^ (hash >> 32)) as u32)
    }

    /// True when patience must do init's duty: `--init`, or being PID 1 (a
    /// container's entrypoint), where nobody else would reap orphans.
    pub fn init_mode(&self) -> bool {
        self.init || crate::sys::getpid() == 1
    }

    /// patience supervises: as PID 1, with `--init`, or under `--restart
    /// always`. Then SIGHUP, SIGUSR1, SIGUSR2 and SIGWINCH are reload
    /// signals for the command, never the end of the run.
    pub fn supervising(&self) -> bool {
        self.init_mode() || self.restart == Restart::Always
    }

    /// Sets option `long` from `value` (`None` for a switch given on the
    /// command line). The error says what is wrong with the value; the
    /// caller names where it came from.
    pub fn apply(&mut self, long: &str, value: Option<&str>) -> Result<(), String> {
        let text = || value.ok_or_else(|| "a value is required".to_string());
        match long {
            "attempts" => self.attempts = parse_attempts(text()?)?,
            "forever" => {
                if switch(value)? {
                    self.attempts = 0
                }
            }
            "timeout" => self.timeout = optional_duration(text()?)?,
            "signal" => self.signal = crate::signals::parse(text()?)?,
            "kill-after" => {
                self.kill_after = duration::parse(text()?)?;
                self.kill_after_given = true;
            }
            "deadline" => self.deadline = optional_duration(text()?)?,
            "stagger" => self.stagger = optional_duration(text()?)?,
            "delay" => (self.backoff.base, self.backoff.list) = backoff::parse_delay(text()?)?,
            "backoff" => self.backoff.strategy = text()?.parse()?,
            "multiplier" => self.backoff.multiplier = backoff::parse_multiplier(text()?)?,
            "max-delay" => {
                let cap = duration::parse(text()?)?;
                // A cap of 0 would make every delay 0: a busy loop, never
                // what "at most" was meant to say.
                if cap.is_zero() {
                    return Err("a cap of 0 makes every delay 0; use --delay 0 for no delay".into());
                }
                self.backoff.max_delay = cap;
            }
            "jitter" => self.backoff.jitter = backoff::parse_jitter(text()?)?,
            "reset-after" => self.reset_after = optional_duration(text()?)?,
            "restart" => self.restart = text()?.parse()?,
            "foreground" => self.foreground = switch(value)?,
            "init" => self.init = switch(value)?,
            "name" => {
                let name = text()?;
                if name.is_empty() {
                    return Err("the name must not be empty".into());
                }
                self.name = Some(name.to_string());
            }
            "success-exit" => self.conditions.success_exit = CodeSet::parse(text()?)?,
            "retry-exit" => self.conditions.retry_exit = Some(CodeSet::parse(text()?)?),
            "stop-exit" => self.conditions.stop_exit = CodeSet::parse(text()?)?,
            "success-pattern" => self.conditions.success.push(Pattern::new(text()?)?),
            "failure-pattern" => self.conditions.failure.push(Pattern::new(text()?)?),
            "abort-pattern" => self.conditions.abort.push(Pattern::new(text()?)?),
            "retry-pattern" => self.conditions.retry.push(Pattern::new(text()?)?),
            "transient" => self.conditions.transient = switch(value)?,
            "match-stream" => self.conditions.match_stream = text()?.parse()?,
            "output" => self.output = text()?.parse()?,
            "hold-output" => {
                if switch(value)? {
                    self.output = OutputMode::Failure
                }
            }
            "stdin" => self.stdin = text()?.parse()?,
            // `false` undoes a `true` from a lower layer (a profile over
            // `[defaults]`) and leaves the other level alone.
            "quiet" => self.set_level(Verbosity::Quiet, switch(value)?),
            "verbose" => self.set_level(Verbosity::Verbose, switch(value)?),
            "color" => self.color = text()?.parse()?,
            "summary" => self.summary = switch(value)?,
            "summary-json" => self.summary_json = Some(PathBuf::from(text()?)),
            "textfile-dir" => self.textfile_dir = Some(non_empty_path(text()?)?),
            "socket" => self.socket = Some(non_empty_path(text()?)?),
            "state-dir" => self.state_dir = Some(non_empty_path(text()?)?),
            "state-url" => self.state_url = parse_state_url(text()?)?,
            "state-url-password-file" => self.state_url_password_file = Some(non_empty_path(text()?)?),
            "no-metrics" => self.no_metrics = switch(value)?,
            "key" => self.key = Some(state::parse_key(text()?)?),
            "breaker" => self.breaker = optional_count(text()?)?,
            "breaker-cooldown" => {
                let d = duration::parse(text()?)?;
                if d.is_zero() {
                    return Err("the cooldown must be longer than 0".into());
                }
                self.breaker_cooldown = d;
            }
            "rate-limit" => {
                let t = text()?;
                self.rate_limit = if t.trim() == "0" {
                    None
                } else {
                    Some(Rate::parse(t)?)
                };
            }
            "max-concurrent" => self.max_concurrent = optional_count(text()?)?,
            "slot-wait" => self.slot_wait = duration::parse(text()?)?,
            "refused-exit" => self.refused_exit = parse_status(text()?)?,
            _ => return Err(format!("unknown option '{long}'")),
        }
        Ok(())
    }

    /// Sets (`on`) or clears (`!on`, back to normal) one verbosity level.
    fn set_level(&mut self, level: Verbosity, on: bool) {
        if on {
            self.verbosity = level;
        } else if self.verbosity == level {
            self.verbosity = Verbosity::Normal;
        }
    }
}

/// `--state-url`: `none` is the file store (a profile undoing `[defaults]`).
fn parse_state_url(s: &str) -> Result<Option<StateUrl>, String> {
    if s.trim() == "none" {
        return Ok(None);
    }
    let url = StateUrl::parse(s.trim())?;
    if !cfg!(feature = "redis") {
        return Err(format!(
            "'{url}': this patience was built without Redis support (cargo feature redis)"
        ));
    }
    Ok(Some(url))
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path must not be empty".into());
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_is_understood_by_apply() {
        for o in OPTIONS.iter().chain(CONFIG_ONLY) {
            let mut s = Settings::default();
            let sample = match o.value {
                None => None,
                Some("DUR") => Some("1s"),
                Some("N") => Some("2"),
                Some("SIG") => Some("INT"),
                Some("NAME") if o.long == "backoff" => Some("fixed"),
                Some("F") => Some("1.5"),
                Some("FRACTION") => Some("0.5"),
                Some("POLICY") => Some("always"),
                Some("WHEN") => Some("never"),
                Some("CODES") => Some("0-3,5"),
                Some("STREAM") => Some("stderr"),
                Some("MODE") if o.long == "output" => Some("final"),
                Some("MODE") if o.long == "stdin" => Some("null"),
                Some("N/DUR") => Some("10/1s"),
                Some("URL") => Some("redis://127.0.0.1"),
                Some(_) => Some("x"),
            };
            s.apply(o.long, sample)
                .unwrap_or_else(|e| panic!("--{}: {e}", o.long));
        }
    }

    #[test]
    fn refused_exit_is_a_status_from_0_to_255() {
        let mut s = Settings::default();
        assert_eq!(s.refused_exit, 75);
        for (text, want) in [("0", 0), ("255", 255), (" 3 ", 3)] {
            s.apply("refused-exit", Some(text)).unwrap();
            assert_eq!(s.refused_exit, want);
        }
        for bad in ["256", "-1", "", "x", "1.5", "0x10"] {
            let e = s.apply("refused-exit", Some(bad)).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn attempts_bounds() {
        let mut s = Settings::default();
        assert!(s.apply("attempts", Some("-1")).is_err());
        assert!(s.apply("attempts", Some("99999999999999999999")).is_err());
        s.apply("attempts", Some("0")).unwrap();
        assert_eq!(s.attempts, 0);
        s.apply("attempts", Some("3")).unwrap();
        s.apply("forever", None).unwrap();
        assert_eq!(s.attempts, 0);
    }

    #[test]
    fn run_names_are_stable_and_distinct() {
        let with = |args: &[&str]| Settings {
            command: args.iter().map(OsString::from).collect(),
            ..Settings::default()
        };
        let a = with(&["/usr/bin/curl", "-f", "http://a"]).run_name();
        assert!(a.starts_with("curl-") && a.len() == "curl-".len() + 8, "{a}");
        assert_eq!(a, with(&["/usr/bin/curl", "-f", "http://a"]).run_name());
        assert_ne!(a, with(&["/usr/bin/curl", "-f", "http://b"]).run_name());
        // Argument boundaries count: "a b" is not "a" "b".
        assert_ne!(with(&["x", "a b"]).run_name(), with(&["x", "a", "b"]).run_name());
        let mut named = with(&["x"]);
        named.name = Some("nightly".into());
        assert_eq!(named.run_name(), "nightly");
    }

    #[test]
    fn a_false_switch_undoes_its_level_only() {
        let mut s = Settings::default();
        s.apply("quiet", Some("true")).unwrap();
        s.apply("verbose", Some("false")).unwrap();
        assert_eq!(s.verbosity, Verbosity::Quiet);
        s.apply("quiet", Some("false")).unwrap();
        assert_eq!(s.verbosity, Verbosity::Normal);
        s.apply("verbose", None).unwrap();
        assert_eq!(s.verbosity, Verbosity::Verbose);
    }

    #[test]
    fn config_only_paths() {
        let mut s = Settings::default();
        assert!(s.apply("socket", Some("")).is_err());
        s.apply("state-dir", Some("/var/lib/p")).unwrap();
        assert_eq!(s.state_dir, Some(PathBuf::from("/var/lib/p")));
    }

    #[test]
    fn patterns_accumulate_and_bad_ones_are_refused() {
        let mut s = Settings::default();
        s.apply("failure-pattern", Some("a")).unwrap();
        s.apply("failure-pattern", Some("b")).unwrap();
        assert_eq!(s.conditions.failure.len(), 2);
        let e = s.apply("success-pattern", Some("(unclosed")).unwrap_err();
        assert!(e.contains("invalid pattern"), "{e}");
        assert!(s.apply("success-exit", Some("256")).is_err());
        assert!(s.apply("output", Some("loud")).is_err());
        s.apply("hold-output", None).unwrap();
        assert_eq!(s.output, OutputMode::Failure);
        for o in OPTIONS.iter().filter(|o| o.long.ends_with("-pattern")) {
            assert!(o.repeat, "{}", o.long);
        }
    }

    #[test]
    fn shared_state_options() {
        let mut s = Settings::default();
        assert_eq!(s.breaker_cooldown, Duration::from_secs(30));
        s.apply("breaker", Some("5")).unwrap();
        s.apply("max-concurrent", Some("1")).unwrap();
        s.apply("rate-limit", Some("100/1m")).unwrap();
        assert_eq!((s.breaker, s.max_concurrent), (Some(5), Some(1)));
        assert_eq!(s.rate_limit.unwrap().per, Duration::from_secs(60));
        s.apply("breaker", Some("0")).unwrap();
        s.apply("rate-limit", Some("0")).unwrap();
        assert_eq!((s.breaker, s.rate_limit), (None, None));
        for (opt, bad) in [
            ("breaker", "-1"),
            ("breaker", "x"),
            ("breaker", "1.5"),
            ("max-concurrent", "99999999999"),
            ("breaker-cooldown", "0"),
            ("breaker-cooldown", "-1s"),
            ("rate-limit", "10"),
            ("rate-limit", "0/1s"),
            ("slot-wait", "NaN"),
            ("key", ""),
        ] {
            assert!(s.apply(opt, Some(bad)).is_err(), "--{opt} {bad}");
        }
    }

    #[test]
    fn stagger_is_a_duration_and_0_is_none() {
        let mut s = Settings::default();
        assert_eq!(s.stagger, None);
        s.apply("stagger", Some("1m30s")).unwrap();
        assert_eq!(s.stagger, Some(Duration::from_secs(90)));
        s.apply("stagger", Some("0")).unwrap();
        assert_eq!(s.stagger, None);
        for bad in ["-1s", "x", "", "1y"] {
            let e = s.apply("stagger", Some(bad)).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")) || bad.is_empty(), "{e}");
        }
    }

    #[test]
    fn zero_timeout_means_none() {
        let mut s = Settings::default();
        s.apply("timeout", Some("0")).unwrap();
        assert_eq!(s.timeout, None);
        s.apply("timeout", Some("1ns")).unwrap();
        assert_eq!(s.timeout, Some(Duration::from_nanos(1)));
    }
}
