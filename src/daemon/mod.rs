//! patienced: collects what `patience` runs report over a Unix datagram
//! socket and serves it to Prometheus.
//!
//! This module owns the daemon's options (command line and the `[daemon]`
//! table of a config file), start-up and shutdown. The rest is split by
//! concern: [`intake`] (the socket), [`aggregate`] (memory),
//! [`exposition`] (the text format), [`http`] (serving it) and [`persist`]
//! (`--state-file`).
//!
//! Threads: one reads datagrams, one accepts HTTP connections and serves each
//! on a thread of its own (at most `http::MAX_CONNECTIONS`), one drops
//! stale service gauges, writes the state file and retires old commands
//! every `FLUSH_EVERY`; the main thread
//! waits for signals and stops the others. They share one `Shared`, whose mutex is only ever held
//! for in-memory work.

pub mod aggregate;
pub mod exposition;
pub mod http;
pub mod intake;
pub mod persist;
pub mod textfile;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lexopt::prelude::*;

use crate::metrics::{self, Event, Reject};
use aggregate::{Aggregate, Fate, DEFAULT_BUCKETS};

/// How often the state file is written (when something changed).
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Exit status for a bad command line or config file (as patience's).
pub const EXIT_USAGE: i32 = 125;
/// Exit status when the daemon cannot start (socket, port, state file).
pub const EXIT_START: i32 = 1;

/// Writes one line to stderr, prefixed with the program name; errors ignored.
pub fn log(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "patienced: {line}");
}

/// Seconds since the epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What patienced was asked to do, as given on the command line.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub help: bool,
    pub version: bool,
    pub config: Option<PathBuf>,
    pub no_config: bool,
    /// `[daemon]` keys given as options: (key, value).
    pub options: Vec<(&'static str, String)>,
}

/// The options that are also `[daemon]` keys: (name, value name, help).
const KEYS: &[(&str, &str, &str)] = &[
    (
        "socket",
        "PATH",
        "the datagram socket [$PATIENCE_SOCKET, $XDG_RUNTIME_DIR/patienced.sock, /run/user/UID/..., /tmp/patienced-UID.sock]",
    ),
    ("socket-mode", "MODE", "the socket's permissions, in octal [0600]"),
    ("listen", "ADDR:PORT", "where to serve HTTP [127.0.0.1:9977]"),
    (
        "state-file",
        "PATH",
        "keep counters and histograms across restarts in PATH [none]",
    ),
    (
        "max-series",
        "N",
        "at most N series in memory; more are dropped [10000]",
    ),
    (
        "series-ttl",
        "DUR",
        "forget a command not heard from for DUR, e.g. 30d [never]",
    ),
];

/// Parses patienced's arguments (without argv[0]).
pub fn parse_args<I>(args: I) -> Result<Args, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    let mut parser = lexopt::Parser::from_args(args);
    let mut out = Args::default();
    let text = |v: std::ffi::OsString, name: &str| {
        v.into_string()
            .map_err(|v| format!("--{name}: the value {v:?} is not valid UTF-8"))
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => out.help = true,
            Short('V') | Long("version") => out.version = true,
            Long("config") => out.config = Some(parser.value().map_err(|e| e.to_string())?.into()),
            Long("no-config") => out.no_config = true,
            Long(name) if KEYS.iter().any(|k| k.0 == name) => {
                let key = KEYS.iter().find(|k| k.0 == name).map(|k| k.0).unwrap_or_default();
                let value = parser.value().map_err(|e| e.to_string())?;
                out.options.push((key, text(value, key)?));
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(out)
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::from(
        "Usage: patienced [OPTIONS]\n\
         Collect what patience runs report and serve it to Prometheus.\n\nOptions:\n",
    );
    let mut line = |left: String, help: &str| out.push_str(&format!("  {left:<24} {help}\n"));
    for (name, value, help) in KEYS {
        line(format!("--{name} {value}"), help);
    }
    line("--config PATH".into(), "read the [daemon] table of PATH");
    line("--no-config".into(), "read no config file");
    line("-h, --help".into(), "print this help");
    line("-V, --version".into(), "print the version");
    out.push_str("\nSee patienced(8) for the datagram protocol and the metrics.\n");
    out
}

/// Everything the daemon needs, resolved from defaults, the config file(s)
/// and the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub listen: SocketAddr,
    pub state_file: Option<PathBuf>,
    pub max_series: usize,
    pub buckets: Vec<f64>,
    /// `--series-ttl`: commands not seen for this long are retired.
    pub series_ttl: Option<Duration>,
}

/// A `[daemon]` value as it came from the command line or a config file.
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

/// The settings being built; the socket is resolved last, since
/// `$PATIENCE_SOCKET` sits between the command line and the files.
struct Draft {
    socket_cli: Option<PathBuf>,
    socket_file: Option<PathBuf>,
    socket_mode: u32,
    listen: SocketAddr,
    state_file: Option<PathBuf>,
    max_series: usize,
    buckets: Vec<f64>,
    series_ttl: Option<Duration>,
}

impl Draft {
    /// Sets `key` from `raw`; `from_cli` tells which socket slot it fills.
    /// The error says what is wrong with the value.
    fn apply(&mut self, key: &str, raw: Raw, from_cli: bool) -> Result<(), String> {
        let text = || match raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(toml::Value::String(s)) => Ok(s.as_str()),
            Raw::Toml(v) => Err(format!("expected a string, not {}", v.type_str())),
        };
        match key {
            "socket" => {
                let p = PathBuf::from(non_empty(text()?)?);
                if from_cli {
                    self.socket_cli = Some(p);
                } else {
                    self.socket_file = Some(p);
                }
            }
            "socket-mode" => {
                self.socket_mode = match raw {
                    Raw::Toml(toml::Value::Integer(n)) => u32::try_from(*n).ok().filter(|m| *m <= 0o777),
                    _ => {
                        let t = text()?;
                        u32::from_str_radix(t, 8)
                            .ok()
                            .filter(|m| *m <= 0o777 && !t.is_empty() && t.len() <= 4)
                    }
                }
                .ok_or("expected an octal mode such as \"0600\" or \"0660\"")?;
            }
            "listen" => {
                let t = text()?;
                self.listen = t
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("expected ADDR:PORT such as 127.0.0.1:9977, not '{t}'"))?;
            }
            "state-file" => self.state_file = Some(PathBuf::from(non_empty(text()?)?)),
            "max-series" => {
                let n = match raw {
                    Raw::Toml(toml::Value::Integer(n)) => usize::try_from(*n).ok(),
                    _ => text()?.trim().parse::<usize>().ok(),
                };
                self.max_series = n
                    .filter(|n| (1..=100_000_000).contains(n))
                    .ok_or("expected a whole number from 1 to 100000000")?;
            }
            "series-ttl" => {
                let d = crate::duration::parse(text()?)?;
                if d.is_zero() {
                    return Err("must be more than 0 (leave it out to keep every command)".into());
                }
                self.series_ttl = Some(d);
            }
            "buckets" => {
                let Raw::Toml(toml::Value::Array(items)) = raw else {
                    return Err("expected an array of seconds such as [0.1, 1, 10]".into());
                };
                let mut buckets = Vec::with_capacity(items.len());
                for item in items {
                    let x = match item {
                        toml::Value::Integer(n) => *n as f64,
                        toml::Value::Float(f) => *f,
                        _ => return Err("every bucket must be a number of seconds".into()),
                    };
                    if !x.is_finite() || x <= 0.0 || buckets.last().is_some_and(|&l| x <= l) {
                        return Err("buckets must be positive, finite and strictly increasing".into());
                    }
                    buckets.push(x);
                }
                if !(1..=100).contains(&buckets.len()) {
                    return Err("expected from 1 to 100 buckets".into());
                }
                self.buckets = buckets;
            }
            _ => return Err(format!("unknown key '{key}'")),
        }
        Ok(())
    }
}

fn non_empty(s: &str) -> Result<&str, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s)
    }
}

/// The config files read when none is named: the system file, then the
/// user's, whose keys win.
fn default_config_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/patience/config.toml")];
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = env("XDG_CONFIG_HOME") {
        files.push(dir.join("patience/config.toml"));
    } else if let Some(home) = env("HOME") {
        files.push(home.join(".config/patience/config.toml"));
    }
    files
}

/// Reads the `[daemon]` table of `path` into `draft`. A missing file is
/// an error only when `required`. Errors name the file, the line and the key.
fn read_config(path: &Path, required: bool, draft: &mut Draft) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        daemon: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
    }
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read config file {shown}: {e}")),
    };
    let file: File = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(0);
        format!("{shown}:{line}: {}", e.message().trim())
    })?;
    for (key, value) in file.daemon.iter().flatten() {
        let line = line_of(&text, value.span().start);
        draft
            .apply(key, Raw::Toml(value.get_ref()), false)
            .map_err(|e| format!("{shown}:{line}: [daemon] {key}: {e}"))?;
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Resolves the settings: defaults, then the config file(s), then the
/// command line. For the socket, `$PATIENCE_SOCKET` sits between the
/// command line and the files, as for patience.
pub fn resolve(args: &Args) -> Result<Settings, String> {
    let mut draft = Draft {
        socket_cli: None,
        socket_file: None,
        socket_mode: 0o600,
        listen: SocketAddr::from(([127, 0, 0, 1], 9977)),
        state_file: None,
        max_series: 10_000,
        buckets: DEFAULT_BUCKETS.to_vec(),
        series_ttl: None,
    };
    if !args.no_config {
        let named = args.config.clone().or_else(|| {
            std::env::var_os("PATIENCE_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        match named {
            Some(path) => read_config(&path, true, &mut draft)?,
            None => {
                for path in default_config_files() {
                    read_config(&path, false, &mut draft)?;
                }
            }
        }
    }
    for (key, value) in &args.options {
        draft
            .apply(key, Raw::Text(value), true)
            .map_err(|e| format!("--{key} '{value}': {e}"))?;
    }
    let socket = draft
        .socket_cli
        .unwrap_or_else(|| metrics::socket_path(draft.socket_file.as_deref()));
    Ok(Settings {
        socket,
        socket_mode: draft.socket_mode,
        listen: draft.listen,
        state_file: draft.state_file,
        max_series: draft.max_series,
        buckets: draft.buckets,
        series_ttl: draft.series_ttl,
    })
}

/// What the threads share.
pub struct Shared {
    agg: Mutex<Aggregate>,
    /// Held while the state file is written.
    writing: Mutex<()>,
    start_time: f64,
    full_reported: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Aggregate> {
        // A panic elsewhere (impossible with panic=abort) must not take the
        // metrics down with it.
        self.agg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in the datagrams of `pending` (each decoded, with the time
    /// used for a run without `ts`) and empties it; when `wait` is
    /// false and the aggregate is locked (a snapshot or the state writer
    /// holds it for a moment), leaves them for next time and returns false,
    /// so that the intake thread goes back to the socket at once instead of
    /// letting the kernel's short queue overflow.
    pub fn record_all(&self, pending: &mut Vec<(Result<Event, Reject>, f64)>, wait: bool) -> bool {
        if pending.is_empty() {
            return true;
        }
        let mut agg = match self.agg.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if !wait => return false,
            Err(std::sync::TryLockError::WouldBlock) => self.lock(),
        };
        let max = agg.max_series;
        let mut dropped = false;
        for (decoded, now) in pending.drain(..) {
            dropped |= agg.record(decoded, now) == Fate::Dropped;
        }
        drop(agg);
        if dropped && !self.full_reported.swap(true, Ordering::Relaxed) {
            log(&format!(
                "--max-series {max} reached: new series are dropped (see patienced_series_dropped_total)"
            ));
        }
        true
    }

    /// What a scrape renders from, taken under the lock in a moment.
    pub fn snapshot(&self) -> aggregate::Snapshot {
        self.lock().snapshot()
    }

    /// Retires the commands not seen for `ttl`, and says so.
    fn retire(&self, ttl: Duration) {
        let n = self.lock().retire(unix_now() - ttl.as_secs_f64());
        if n > 0 {
            log(&format!(
                "--series-ttl: retired {n} command{} not heard from for {}",
                if n == 1 { "" } else { "s" },
                crate::duration::format(ttl)
            ));
        }
    }

    /// Removes command `name` (an admin request); false when there is none.
    pub fn remove(&self, name: &str) -> bool {
        self.lock().remove(name)
    }

    /// When the daemon started, in seconds since the epoch.
    pub fn start_time(&self) -> f64 {
        self.start_time
    }

    /// The state to write, if anything changed since the last call (or
    /// whether it did, when `force`).
    fn changed_state(&self, force: bool) -> Option<Vec<u8>> {
        let snap = {
            let mut agg = self.lock();
            if !agg.dirty && !force {
                return None;
            }
            agg.dirty = false;
            agg.snapshot()
        };
        Some(persist::serialize(&snap))
    }

    /// Writes the state file if anything changed, or in any case when
    /// `force`; on failure, logs and tries again next time. Says whether
    /// the file was written.
    fn flush(&self, path: &Path, force: bool) -> bool {
        // One writer at a time, so an older snapshot never lands after a
        // newer one.
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bytes) = self.changed_state(force) else {
            return false;
        };
        match persist::write(path, &bytes) {
            Ok(()) => true,
            Err(e) => {
                log(&format!("cannot write state file {}: {e}", path.display()));
                self.lock().dirty = true;
                false
            }
        }
    }
}

/// Runs patienced with `args` (without argv[0]) and returns its exit status.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            log(&format!("{e}\nTry 'patienced --help' for more information."));
            return EXIT_USAGE;
        }
    };
    if args.help || args.version {
        let text = if args.help {
            help()
        } else {
            format!("patienced {}\n", env!("CARGO_PKG_VERSION"))
        };
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return 0;
    }
    let settings = match resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            log(&e);
            return EXIT_USAGE;
        }
    };
    match serve(&settings) {
        Ok(()) => 0,
        Err(e) => {
            log(&e);
            EXIT_START
        }
    }
}

/// Starts every thread, waits for SIGTERM or SIGINT, then stops cleanly:
/// threads joined, state written, socket removed. SIGHUP writes the state.
fn serve(s: &Settings) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Handlers first, so that a signal during start-up still ends cleanly.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    crate::sys::raise_open_files_limit();
    crate::sys::return_large_frees_to_the_system();

    let mut agg = Aggregate::new(&s.buckets, s.max_series);
    if let Some(path) = &s.state_file {
        let stale = persist::remove_stale_temps(path);
        if stale > 0 {
            log(&format!(
                "removed {stale} temp file{} left beside {} by an earlier run",
                if stale == 1 { "" } else { "s" },
                path.display()
            ));
        }
        let loaded = persist::load(path, &mut agg)?;
        if let (Some((n, why)), Some((aside, _))) = (&loaded.bad, &loaded.set_aside) {
            log(&format!(
                "state file {}: left out {n} saved command{} that could not be read (first: {why}); the file as it was is kept at {}",
                path.display(),
                if *n == 1 { "" } else { "s" },
                aside.display()
            ));
        } else if let Some((aside, why)) = &loaded.set_aside {
            log(&format!(
                "state file {} is not valid ({why}); moved it to {} and started empty",
                path.display(),
                aside.display()
            ));
        }
        if loaded.commands > 0 {
            log(&format!(
                "loaded {} commands from {}",
                loaded.commands,
                path.display()
            ));
        }
        if loaded.over_limit > 0 {
            log(&format!(
                "left out {} saved commands over --max-series",
                loaded.over_limit
            ));
        }
        if let Some(ttl) = s.series_ttl {
            let n = agg.retire(unix_now() - ttl.as_secs_f64());
            if n > 0 {
                log(&format!(
                    "--series-ttl: left out {n} saved command{} not heard from for {}",
                    if n == 1 { "" } else { "s" },
                    crate::duration::format(ttl)
                ));
            }
        }
        if loaded.histograms_dropped {
            log("the buckets changed since the state was saved: saved histograms start again");
        }
        // Write it once now: a state file that cannot be written is better
        // found at start than ten seconds later, and every ten seconds after.
        persist::write(path, &persist::serialize(&agg.snapshot()))
            .map_err(|e| format!("cannot write state file {}: {e}", path.display()))?;
    }
    let shared = Arc::new(Shared {
        agg: Mutex::new(agg),
        writing: Mutex::new(()),
        start_time: unix_now(),
        full_reported: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));

    let socket = Arc::new(intake::bind(&s.socket, s.socket_mode)?);
    let http = match http::start(s.listen, shared.clone(), stop.clone()) {
        Ok(h) => h,
        Err(e) => {
            socket.remove();
            return Err(e);
        }
    };
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| format!("cannot start the {name} thread: {e}"))
    };
    let threads = (|| {
        let (sock, sh, st) = (socket.clone(), shared.clone(), stop.clone());
        let intake = spawn("intake", Box::new(move || sock.receive(&sh, &st)))?;
        let (path, ttl) = (s.state_file.clone(), s.series_ttl);
        let (sh, st) = (shared.clone(), stop.clone());
        let writer = Some(spawn(
            "state",
            Box::new(move || housekeeping(&sh, path.as_deref(), ttl, &st)),
        )?);
        Ok::<_, String>((intake, writer))
    })();
    let (intake, writer) = match threads {
        Ok(t) => t,
        Err(e) => {
            socket.remove();
            return Err(e);
        }
    };
    log(&format!(
        "listening on http://{}/metrics and {} (mode {:04o})",
        http.addr,
        s.socket.display(),
        s.socket_mode
    ));

    let mut stopped_by = 0;
    for sig in signals.forever() {
        if sig == SIGHUP {
            match &s.state_file {
                Some(path) if shared.flush(path, true) => log("SIGHUP: state written"),
                Some(_) => log("SIGHUP: state not written"),
                None => log("SIGHUP: no --state-file, nothing to write"),
            }
            continue;
        }
        stopped_by = sig;
        break;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = intake.join();
    http.join();
    if let Some(w) = writer {
        let _ = w.join();
    }
    if let Some(path) = &s.state_file {
        shared.flush(path, false);
    }
    socket.remove();
    log(&format!("stopped by {}", crate::signals::name(stopped_by)));
    Ok(())
}

/// Every `FLUSH_EVERY` until `stop` is set: drops the stale gauges of
/// services, retires the commands past `--series-ttl`, then writes the
/// state file.
fn housekeeping(shared: &Shared, path: Option<&Path>, ttl: Option<Duration>, stop: &AtomicBool) {
    let step = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        waited += step;
        if waited >= FLUSH_EVERY {
            waited = Duration::ZERO;
            shared
                .lock()
                .retire_services(unix_now() - aggregate::SERVICE_STALE_S);
            if let Some(ttl) = ttl {
                shared.retire(ttl);
            }
            if let Some(path) = path {
                shared.flush(path, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(a.iter().copied())
    }

    #[test]
    fn command_line() {
        let a = args(&["--socket", "/x.sock", "--listen=127.0.0.1:0", "--no-config"]).unwrap();
        assert_eq!(
            a.options,
            [("socket", "/x.sock".into()), ("listen", "127.0.0.1:0".into())]
        );
        let s = resolve(&a).unwrap();
        assert_eq!(s.socket, PathBuf::from("/x.sock"));
        assert_eq!(s.listen.port(), 0);
        assert_eq!((s.socket_mode, s.max_series), (0o600, 10_000));
        assert!(args(&["--nope"]).unwrap_err().contains("--nope"));
        assert!(args(&["stray"]).is_err());
        assert!(args(&["-h"]).unwrap().help);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (opt, bad) in [
            ("--socket-mode", "999"),
            ("--socket-mode", "rw"),
            ("--socket-mode", "01777"),
            ("--listen", "nowhere"),
            ("--max-series", "0"),
            ("--max-series", "-3"),
            ("--state-file", ""),
            ("--socket", ""),
            ("--series-ttl", "0"),
            ("--series-ttl", "soon"),
        ] {
            let a = args(&[opt, bad, "--no-config"]).unwrap();
            let e = resolve(&a).unwrap_err();
            assert!(e.starts_with(&format!("{opt} '{bad}'")), "{e}");
        }
        let a = args(&["--socket-mode", "660", "--no-config"]).unwrap();
        assert_eq!(resolve(&a).unwrap().socket_mode, 0o660);
    }

    #[test]
    fn config_file_daemon_table() {
        let dir = std::env::temp_dir().join(format!("patienced-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        let write = |text: &str| std::fs::write(&file, text).unwrap();
        let with = |extra: &[&str]| {
            let mut a = vec!["--config", file.to_str().unwrap()];
            a.extend_from_slice(extra);
            resolve(&args(&a).unwrap())
        };
        write(
            "[defaults]\nattempts = 5\n\n[daemon]\nsocket = \"/run/p.sock\"\nsocket-mode = \"0660\"\n\
             listen = \"127.0.0.1:9100\"\nstate-file = \"/var/lib/p.json\"\nmax-series = 500\nbuckets = [0.5, 1, 30]\n",
        );
        let s = with(&["--max-series", "7"]).unwrap();
        assert_eq!(s.socket_mode, 0o660);
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(s.state_file, Some(PathBuf::from("/var/lib/p.json")));
        assert_eq!(s.max_series, 7, "the command line wins");
        assert_eq!(s.buckets, [0.5, 1.0, 30.0]);
        assert_eq!(with(&["--socket", "/y"]).unwrap().socket, PathBuf::from("/y"));
        write("[daemon]\nsocket-mode = 0o640\n");
        assert_eq!(with(&[]).unwrap().socket_mode, 0o640);
        for (text, needle) in [
            ("[daemon]\n\nmax-series = \"lots\"\n", ":3: [daemon] max-series"),
            ("[daemon]\nbogus = 1\n", ":2: [daemon] bogus: unknown key"),
            ("[daemon]\nbuckets = [1, 0.5]\n", ":2: [daemon] buckets"),
            ("[daemon]\nbuckets = []\n", ":2: [daemon] buckets"),
            ("[daemon]\nsocket-mode = 660\n", ":2: [daemon] socket-mode"),
            (
                "[daemon]\nlisten = 9977\n",
                ":2: [daemon] listen: expected a string",
            ),
            ("[daemon\n", ":1:"),
        ] {
            write(text);
            let e = with(&[]).unwrap_err();
            assert!(e.contains(needle) && e.contains("c.toml"), "{text:?}: {e}");
        }
        let missing = dir.join("missing.toml");
        let e = resolve(&args(&["--config", missing.to_str().unwrap()]).unwrap()).unwrap_err();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        for (k, _, _) in KEYS {
            assert!(h.contains(&format!("--{k}")));
        }
    }
}
