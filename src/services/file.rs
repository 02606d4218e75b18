//! The services file (patience-services(5)): `[supervisor]`, `[defaults]`
//! and one `[service.NAME]` table per service, read and validated before
//! anything runs. Every per-run key goes through `config::Layer`, so it is
//! converted and checked by the code that checks patience.toml(5); this
//! module only knows the keys that are not patience options (the command,
//! dependencies, readiness, the process keys) and the group's keys.
//! Every error is one line naming the file, the line and the key (125).

use std::borrow::Cow;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::conditions::Pattern;
use crate::config::{self, Doc, Layer, Source};
use crate::error::Error;

/// Per-run settings that belong to the whole stack, not to one service.
pub const GROUP_ONLY: &[&str] = &["hold-output", "quiet", "verbose", "color", "summary-json"];

/// Settings a service cannot have: its shim always does init's duty, in a
/// process group of its own.
const SHIM_FIXED: &[&str] = &["init", "foreground"];

/// Keys of SERVICES.md that this version does not implement yet: refused
/// with a clear message rather than accepted and ignored.
const NOT_YET: &[&str] = &[];

/// The keys of `[service.NAME]` besides the per-run settings.
pub const SERVICE_KEYS: &[&str] = &[
    "command",
    "cwd",
    "env",
    "env-file",
    "clear-env",
    "depends-on",
    "autostart",
    "critical",
    "profile",
    "ready-pattern",
    "ready-stream",
    "ready-command",
    "ready-tcp",
    "ready-http",
    "ready-fd",
    "ready-notify",
    "ready-timeout",
    "ready-interval",
    "ready-delay",
    "ready-probe-timeout",
    "health-command",
    "health-tcp",
    "health-http",
    "health-interval",
    "health-timeout",
    "health-failures",
    "health-grace",
    "log",
    "log-file",
    "log-max-size",
    "log-keep",
];

/// The readiness kinds, of which a service may have one.
const READY_KINDS: &[&str] = &[
    "ready-pattern",
    "ready-command",
    "ready-tcp",
    "ready-http",
    "ready-fd",
    "ready-notify",
];

/// The health check kinds, of which a service may have one.
const HEALTH_KINDS: &[&str] = &["health-command", "health-tcp", "health-http"];

/// The keys of `[supervisor]`.
pub const SUPERVISOR_KEYS: &[&str] = &[
    "name",
    "main",
    "exit",
    "shutdown",
    "shutdown-timeout",
    "log-prefix",
    "control-socket",
    "log-lines",
    "log-bytes",
    "log-timestamps",
    "log-dir",
    "log-overflow",
    "hold-output",
    "quiet",
    "verbose",
    "color",
    "no-metrics",
    "summary-json",
    // The stack's own slot (services::slot); also per-run keys of a service.
    "key",
    "max-concurrent",
    "slot-wait",
    "refused-exit",
    "state-dir",
    "state-url",
    "state-url-password-file",
];

/// A dependency condition (SERVICES.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Started,
    Ready,
    Succeeded,
    Ended,
}

impl Cond {
    fn parse(s: &str) -> Option<Cond> {
        Some(match s {
            "started" => Cond::Started,
            "ready" => Cond::Ready,
            "succeeded" => Cond::Succeeded,
            "ended" => Cond::Ended,
            _ => return None,
        })
    }

    pub fn word(self) -> &'static str {
        match self {
            Cond::Started => "started",
            Cond::Ready => "ready",
            Cond::Succeeded => "succeeded",
            Cond::Ended => "ended",
        }
    }
}

/// One edge of `depends-on`.
#[derive(Clone, Debug)]
pub struct Dep {
    pub name: String,
    /// `None`: the short form, resolved from the dependency's restart policy.
    pub cond: Option<Cond>,
    /// The line of the entry, for errors.
    pub line: usize,
    /// `propagate = "restart"`: the dependent is stopped when the
    /// dependency's attempt ends, and started again once the condition
    /// holds again.
    pub restart: bool,
}

/// How a service's readiness is checked.
#[derive(Clone, Debug)]
pub enum Ready {
    Pattern(Pattern),
    Command(Vec<OsString>),
    Tcp(String),
    Http(HttpUrl),
    /// s6's protocol: the service writes a newline on this descriptor.
    Fd(i32),
    /// sd_notify: `READY=1` on the service's own `NOTIFY_SOCKET`.
    Notify,
}

impl Ready {
    pub fn kind(&self) -> &'static str {
        match self {
            Ready::Pattern(_) => "pattern",
            Ready::Command(_) => "command",
            Ready::Tcp(_) => "tcp",
            Ready::Http(_) => "http",
            Ready::Fd(_) => "fd",
            Ready::Notify => "notify",
        }
    }
}

/// An `http://HOST[:PORT][/PATH]` address, checked when the file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// As written, brackets of an IPv6 address included (the Host header).
    pub host: String,
    pub port: u16,
    /// The request target: the path and query, `/` at least.
    pub path: String,
}

impl HttpUrl {
    /// Parses an http URL; https is refused, as there is no TLS here.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let bad = |why: &str| format!("invalid URL '{text}': {why} (expected http://HOST:PORT/PATH)");
        if text.len() >= 8 && text[..8].eq_ignore_ascii_case("https://") {
            return Err(format!(
                "invalid URL '{text}': https is not supported (no TLS); probe a plain http:// port"
            ));
        }
        let rest = match text.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &text[7..],
            _ => return Err(bad("not an http:// URL")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((inside, after)) = v6.split_once(']') else {
                return Err(bad("unclosed '['"));
            };
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("invalid IPv6 address"));
            }
            (format!("[{inside}]"), after.strip_prefix(':').map(str::to_string))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(bad(&format!("invalid port '{p}'"))),
            },
        };
        let target = target.split('#').next().unwrap_or("");
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control characters in the path"));
        }
        let path = match target {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(HttpUrl { host, port, path })
    }

    /// The host to connect to (without an IPv6 address's brackets).
    pub fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// One check, for readiness or health: a command (exit 0), a TCP
/// connection, an HTTP GET (2xx or 3xx).
#[derive(Clone, Debug)]
pub enum Check {
    Command(Vec<OsString>),
    Tcp(String),
    Http(HttpUrl),
}

/// A service's health check (SERVICES.md §4): from its attempt's
/// readiness on, after `grace`, every `interval`, each within `timeout`;
/// `failures` in a row end the attempt as unhealthy.
#[derive(Clone, Debug)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub grace: Duration,
}

/// Which of a service's streams `ready-pattern` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Both,
}

/// What becomes of a service's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    Prefix,
    Raw,
    Discard,
}

/// One `[service.NAME]`, validated; its settings are resolved later.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub line: usize,
    pub command: Vec<OsString>,
    pub layer: Layer,
    pub profile: Option<String>,
    pub cwd: Option<PathBuf>,
    /// `env-file` then `env`, in that order (the table wins).
    pub env: Vec<(String, String)>,
    pub clear_env: bool,
    pub deps: Vec<Dep>,
    pub autostart: bool,
    pub critical: bool,
    pub ready: Option<Ready>,
    pub ready_stream: Stream,
    pub ready_timeout: Option<Duration>,
    pub ready_interval: Duration,
    pub ready_delay: Duration,
    pub ready_probe_timeout: Duration,
    pub health: Option<Health>,
    pub log: LogMode,
    /// `log-file`: a copy of its output, rotated by size when a regular
    /// file (`log-max-size`, `log-keep`).
    pub log_file: Option<PathBuf>,
    pub log_max_size: u64,
    pub log_keep: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRule {
    All,
    Any,
}

/// `[supervisor]`.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: Option<String>,
    pub main: Option<String>,
    pub exit: ExitRule,
    pub parallel_shutdown: bool,
    pub shutdown_timeout: Option<Duration>,
    pub log_prefix: bool,
    /// `control-socket`: the control socket's path instead of the rule's.
    pub control_socket: Option<PathBuf>,
    /// The ring buffer of each service: at most this many lines and bytes.
    pub log_lines: usize,
    pub log_bytes: usize,
    /// Each line on patience's stdout and stderr after its time (UTC).
    pub log_timestamps: bool,
    /// `log-dir`: every service's `log-file` is `DIR/NAME.log` unless set.
    pub log_dir: Option<PathBuf>,
    /// `log-overflow = "drop"`: lines a slow reader has no room for are
    /// dropped (and counted), instead of slowing the services.
    pub log_drop: bool,
    /// Its per-run keys (quiet, verbose, color, …) as a settings layer.
    pub layer: Layer,
}

/// The whole file.
#[derive(Clone, Debug)]
pub struct Stack {
    pub path: PathBuf,
    pub group: Group,
    pub defaults: Layer,
    pub services: Vec<Service>,
}

impl Stack {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }
}

/// Reads and validates the services file at `path`.
pub fn load(path: &Path) -> Result<Stack, Error> {
    let text = config::read_file(path, true)?.unwrap_or_default();
    parse(path, &text)
}

/// Validates a service name: `[a-z0-9][a-z0-9._-]*`, at most 48 bytes.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// Parses and validates the text of a services file.
pub fn parse(path: &Path, text: &str) -> Result<Stack, Error> {
    let doc = Doc { path, text };
    let root = DeTable::parse(text).map_err(|e| doc.syntax(&e))?;
    let file_source = |table: &str| Source::Table {
        table: table.to_string(),
        file: path.to_path_buf(),
    };
    let mut stack = Stack {
        path: path.to_path_buf(),
        group: Group {
            name: None,
            main: None,
            exit: ExitRule::All,
            parallel_shutdown: false,
            shutdown_timeout: None,
            log_prefix: true,
            control_socket: None,
            log_lines: 1000,
            log_bytes: 1 << 20,
            log_timestamps: false,
            log_dir: None,
            log_drop: false,
            layer: Layer::new(file_source("[supervisor]")),
        },
        defaults: Layer::new(file_source("[defaults]")),
        services: Vec::new(),
    };
    let mut main_span = None;
    for (key, value) in config::in_file_order(root.get_ref()) {
        let name: &str = key.get_ref();
        match name {
            "supervisor" => main_span = supervisor(&doc, key, value, &mut stack.group)?,
            "defaults" => {
                let t = table(&doc, key, value, "[defaults]")?;
                for (k, v) in config::in_file_order(t) {
                    per_run(&doc, k, v, "[defaults]", &mut stack.defaults)?;
                }
            }
            "service" => {
                let t = table(&doc, key, value, "[service]")?;
                for (k, v) in config::in_file_order(t) {
                    stack.services.push(service(&doc, k, v)?);
                }
            }
            _ => {
                let mut msg =
                    format!("unknown table '{name}' (expected [supervisor], [defaults], [service.NAME])");
                if let Some(near) = config::suggest(name, ["supervisor", "defaults", "service"].into_iter()) {
                    msg.push_str(&format!("; did you mean '{near}'?"));
                }
                return Err(doc.error(key.span(), msg));
            }
        }
    }
    if stack.services.is_empty() {
        return Err(Error::Config(format!(
            "{}: no service: add a [service.NAME] table with a command",
            path.display()
        )));
    }
    if let (Some(main), Some(span)) = (&stack.group.main, main_span) {
        if stack.index(main).is_none() {
            return Err(doc.error(
                span,
                format!("key 'main' in [supervisor]: '{main}' is not a service of this file"),
            ));
        }
    }
    let mut inherit = None;
    for s in &stack.services {
        if s.layer.value("stdin") == Some("inherit") {
            if let Some(first) = inherit {
                return Err(Error::Config(format!(
                    "{}:{}: key 'stdin' in [service.{}]: only one service may have stdin = \"inherit\" ({first} has it already)",
                    path.display(),
                    s.line,
                    s.name
                )));
            }
            inherit = Some(s.name.clone());
        }
        for d in &s.deps {
            if stack.index(&d.name).is_none() {
                let mut msg = format!(
                    "{}:{}: key 'depends-on' in [service.{}]: unknown service '{}'",
                    path.display(),
                    d.line,
                    s.name,
                    d.name
                );
                if let Some(near) = config::suggest(&d.name, stack.services.iter().map(|s| s.name.as_str())) {
                    msg.push_str(&format!("; did you mean '{near}'?"));
                }
                return Err(Error::Config(msg));
            }
            if d.name == s.name {
                return Err(Error::Config(format!(
                    "{}:{}: key 'depends-on' in [service.{}]: a service cannot depend on itself",
                    path.display(),
                    d.line,
                    s.name
                )));
            }
        }
    }
    Ok(stack)
}

type Key<'a> = Spanned<Cow<'a, str>>;
type Value<'a> = Spanned<DeValue<'a>>;

fn table<'t, 'i>(
    doc: &Doc<'_>,
    key: &Key<'i>,
    value: &'t Value<'i>,
    name: &str,
) -> Result<&'t DeTable<'i>, Error> {
    match value.get_ref() {
        DeValue::Table(t) => Ok(t),
        other => Err(doc.error(
            key.span(),
            format!("{name} must be a table, not {}", config::type_name(other)),
        )),
    }
}

/// A per-run setting in `[defaults]` or a service table.
fn per_run(
    doc: &Doc<'_>,
    key: &Key<'_>,
    value: &Value<'_>,
    table: &str,
    layer: &mut Layer,
) -> Result<(), Error> {
    let name: &str = key.get_ref();
    if GROUP_ONLY.contains(&name) {
        return Err(doc.error(
            key.span(),
            format!("key '{name}' in {table} is for the whole stack: put it under [supervisor]"),
        ));
    }
    if SHIM_FIXED.contains(&name) {
        return Err(doc.error(
            key.span(),
            format!("key '{name}' in {table}: every service runs in its own process group with init's duty; it cannot be set"),
        ));
    }
    if name == "propagate" {
        return Err(doc.error(
            key.span(),
            format!("key 'propagate' in {table} belongs on a dependency: depends-on = {{ db = {{ when = \"ready\", propagate = \"restart\" }} }}"),
        ));
    }
    if NOT_YET.contains(&name) {
        return Err(doc.error(
            key.span(),
            format!("key '{name}' in {table} is not supported by this version of patience"),
        ));
    }
    if config::config_key(name).is_none() {
        let known = SERVICE_KEYS
            .iter()
            .copied()
            .chain(crate::settings::OPTIONS.iter().map(|o| o.long))
            .chain(crate::settings::CONFIG_ONLY.iter().map(|o| o.long));
        let mut msg = if SUPERVISOR_KEYS.contains(&name) {
            format!("key '{name}' in {table} is a [supervisor] key")
        } else {
            format!("unknown key '{name}' in {table}")
        };
        if !SUPERVISOR_KEYS.contains(&name) {
            if let Some(near) = config::suggest(name, known) {
                msg.push_str(&format!("; did you mean '{near}'?"));
            }
        }
        return Err(doc.error(key.span(), msg));
    }
    layer.add(doc, key, value, table)
}

fn string(doc: &Doc<'_>, name: &str, table: &str, v: &Value<'_>) -> Result<String, Error> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        other => Err(doc.error(
            v.span(),
            format!(
                "key '{name}' in {table}: expected a string, found {}",
                config::type_name(other)
            ),
        )),
    }
}

/// A size such as `512`, `64KiB`, `1MiB` (also k, M, G, KB, MB, GB, as
/// powers of 1024: a buffer is counted in bytes of memory).
fn size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn boolean(doc: &Doc<'_>, name: &str, table: &str, v: &Value<'_>) -> Result<bool, Error> {
    match v.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        other => Err(doc.error(
            v.span(),
            format!(
                "key '{name}' in {table}: expected true or false, found {}",
                config::type_name(other)
            ),
        )),
    }
}

fn duration(doc: &Doc<'_>, name: &str, table: &str, v: &Value<'_>) -> Result<Duration, Error> {
    let text = match config::scalar_text(v.get_ref()) {
        Some(Ok(t)) => t,
        _ => {
            return Err(doc.error(
                v.span(),
                format!("key '{name}' in {table}: expected a duration such as \"5s\""),
            ))
        }
    };
    crate::duration::parse(&text).map_err(|e| doc.error(v.span(), format!("key '{name}' in {table}: {e}")))
}

/// An argv: a non-empty array of strings, the first not empty.
fn argv(doc: &Doc<'_>, name: &str, table: &str, v: &Value<'_>) -> Result<Vec<OsString>, Error> {
    let bad = |span: Range<usize>, what: &str| doc.error(span, format!("key '{name}' in {table}: {what}"));
    let DeValue::Array(items) = v.get_ref() else {
        return Err(bad(
            v.span(),
            "expected an array of strings such as [\"server\", \"--port\", \"8080\"] (an argv, never a shell line)",
        ));
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) => out.push(OsString::from(s.as_ref())),
            other => {
                return Err(bad(
                    item.span(),
                    &format!("expected a string, found {}", config::type_name(other)),
                ))
            }
        }
    }
    match out.first() {
        None => Err(bad(v.span(), "the command is empty")),
        Some(first) if first.is_empty() => Err(bad(v.span(), "the program name is empty")),
        Some(_) => Ok(out),
    }
}

fn supervisor(
    doc: &Doc<'_>,
    key: &Key<'_>,
    value: &Value<'_>,
    g: &mut Group,
) -> Result<Option<Range<usize>>, Error> {
    let t = table(doc, key, value, "[supervisor]")?;
    let tn = "[supervisor]";
    let mut main_span = None;
    for (k, v) in config::in_file_order(t) {
        let name: &str = k.get_ref();
        let bad = |msg: String| doc.error(v.span(), format!("key '{name}' in {tn}: {msg}"));
        match name {
            "name" => {
                let n = string(doc, name, tn, v)?;
                if !valid_name(&n) {
                    return Err(bad(format!(
                        "invalid name '{n}' (expected [a-z0-9][a-z0-9._-]*, at most 48 bytes)"
                    )));
                }
                g.name = Some(n);
            }
            "main" => {
                g.main = Some(string(doc, name, tn, v)?);
                main_span = Some(v.span());
            }
            "exit" => {
                g.exit = match string(doc, name, tn, v)?.as_str() {
                    "all" => ExitRule::All,
                    "any" => ExitRule::Any,
                    other => return Err(bad(format!("unknown exit rule '{other}' (pick from: all, any)"))),
                }
            }
            "shutdown" => {
                g.parallel_shutdown = match string(doc, name, tn, v)?.as_str() {
                    "ordered" => false,
                    "parallel" => true,
                    other => {
                        return Err(bad(format!(
                            "unknown shutdown '{other}' (pick from: ordered, parallel)"
                        )))
                    }
                }
            }
            "shutdown-timeout" => {
                let d = duration(doc, name, tn, v)?;
                g.shutdown_timeout = (!d.is_zero()).then_some(d);
            }
            "log-prefix" => g.log_prefix = boolean(doc, name, tn, v)?,
            "control-socket" => {
                let p = string(doc, name, tn, v)?;
                if p.is_empty() || p.len() >= 108 {
                    return Err(bad(format!(
                        "'{p}' cannot be a socket path (1 to 107 bytes, the sun_path limit)"
                    )));
                }
                g.control_socket = Some(PathBuf::from(p));
            }
            "log-timestamps" => g.log_timestamps = boolean(doc, name, tn, v)?,
            "log-dir" => {
                let p = string(doc, name, tn, v)?;
                if p.is_empty() {
                    return Err(bad("the path must not be empty".into()));
                }
                g.log_dir = Some(relative_to_file(doc.path, Path::new(&p)));
            }
            "log-overflow" => {
                g.log_drop = match string(doc, name, tn, v)?.as_str() {
                    "block" => false,
                    "drop" => true,
                    other => {
                        return Err(bad(format!(
                            "unknown overflow '{other}' (pick from: block, drop)"
                        )))
                    }
                }
            }
            "log-lines" => {
                g.log_lines = integer(v)
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| bad("expected a number of lines from 1 to 1000000".into()))?
                    as usize;
            }
            "log-bytes" => {
                g.log_bytes = byte_size(v)
                    .filter(|n| (1..=1 << 30).contains(n))
                    .ok_or_else(|| {
                        bad("expected a size from 1 byte to 1 GiB, such as 1048576 or \"1MiB\"".into())
                    })? as usize;
            }
            _ if SUPERVISOR_KEYS.contains(&name) => g.layer.add(doc, k, v, tn)?,
            _ => {
                let mut msg = if config::config_key(name).is_some() || SERVICE_KEYS.contains(&name) {
                    format!("key '{name}' in {tn} is a per-service key: put it under [defaults] or [service.NAME]")
                } else {
                    format!("unknown key '{name}' in {tn}")
                };
                if config::config_key(name).is_none() && !SERVICE_KEYS.contains(&name) {
                    if let Some(near) = config::suggest(name, SUPERVISOR_KEYS.iter().copied()) {
                        msg.push_str(&format!("; did you mean '{near}'?"));
                    }
                }
                return Err(doc.error(k.span(), msg));
            }
        }
    }
    Ok(main_span)
}

fn service(doc: &Doc<'_>, key: &Key<'_>, value: &Value<'_>) -> Result<Service, Error> {
    let sname: &str = key.get_ref();
    let line = doc.line(key.span());
    if !valid_name(sname) {
        return Err(doc.error(
            key.span(),
            format!("invalid service name '{sname}' (expected [a-z0-9][a-z0-9._-]*, at most 48 bytes)"),
        ));
    }
    let tn = format!("[service.{sname}]");
    let t = table(doc, key, value, &tn)?;
    let tn = tn.as_str();
    let mut s = Service {
        name: sname.to_string(),
        line,
        command: Vec::new(),
        layer: Layer::new(Source::Table {
            table: tn.to_string(),
            file: doc.path.to_path_buf(),
        }),
        profile: None,
        cwd: None,
        env: Vec::new(),
        clear_env: false,
        deps: Vec::new(),
        autostart: true,
        critical: true,
        ready: None,
        ready_stream: Stream::Both,
        ready_timeout: None,
        ready_interval: Duration::from_secs(1),
        ready_delay: Duration::ZERO,
        ready_probe_timeout: Duration::from_secs(5),
        health: None,
        log: LogMode::Prefix,
        log_file: None,
        log_max_size: 10 << 20,
        log_keep: 5,
    };
    let mut env_table = Vec::new();
    let mut ready_key: Option<String> = None;
    let mut health_key: Option<String> = None;
    let mut health_check = None;
    let mut health = Health {
        check: Check::Tcp(String::new()),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        failures: 3,
        grace: Duration::ZERO,
    };
    // The first health timing key, for the error when there is no check.
    let mut health_timing: Option<(String, Range<usize>)> = None;
    for (k, v) in config::in_file_order(t) {
        let name: &str = k.get_ref();
        let bad = |span: Range<usize>, msg: String| doc.error(span, format!("key '{name}' in {tn}: {msg}"));
        if READY_KINDS.contains(&name) {
            if let Some(first) = &ready_key {
                return Err(bad(
                    k.span(),
                    format!("two readiness kinds on one service ({first} and {name}); keep one"),
                ));
            }
            ready_key = Some(name.to_string());
        }
        if HEALTH_KINDS.contains(&name) {
            if let Some(first) = &health_key {
                return Err(bad(
                    k.span(),
                    format!("two health checks on one service ({first} and {name}); keep one"),
                ));
            }
            health_key = Some(name.to_string());
        }
        match name {
            "command" => s.command = argv(doc, name, tn, v)?,
            "log-file" => {
                let p = string(doc, name, tn, v)?;
                if p.is_empty() {
                    return Err(bad(v.span(), "the path must not be empty".into()));
                }
                s.log_file = Some(relative_to_file(doc.path, Path::new(&p)));
            }
            "log-max-size" => {
                s.log_max_size = byte_size(v).filter(|&n| n >= 1).ok_or_else(|| {
                    bad(
                        v.span(),
                        "expected a size such as 10485760 or \"10MiB\" (at least 1 byte)".into(),
                    )
                })?;
            }
            "log-keep" => {
                s.log_keep = integer(v)
                    .filter(|n| (0..=1000).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        bad(
                            v.span(),
                            "expected a number of rotated files from 0 to 1000".into(),
                        )
                    })?;
            }
            "cwd" => {
                let p = string(doc, name, tn, v)?;
                if p.is_empty() {
                    return Err(bad(v.span(), "the path must not be empty".into()));
                }
                s.cwd = Some(relative_to_file(doc.path, Path::new(&p)));
            }
            "env" => {
                let DeValue::Table(vars) = v.get_ref() else {
                    return Err(bad(
                        v.span(),
                        "expected a table such as { RUST_LOG = \"info\" }".into(),
                    ));
                };
                for (vk, vv) in config::in_file_order(vars) {
                    let var: &str = vk.get_ref();
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        return Err(bad(vk.span(), format!("invalid variable name '{var}'")));
                    }
                    let text = match config::scalar_text(vv.get_ref()) {
                        Some(Ok(t)) => t,
                        _ => match vv.get_ref() {
                            DeValue::Boolean(b) => b.to_string(),
                            other => {
                                return Err(bad(
                                    vv.span(),
                                    format!(
                                        "expected a string for {var}, found {}",
                                        config::type_name(other)
                                    ),
                                ))
                            }
                        },
                    };
                    env_table.push((var.to_string(), text));
                }
            }
            "env-file" => {
                let paths: Vec<String> = match v.get_ref() {
                    DeValue::String(p) => vec![p.to_string()],
                    DeValue::Array(items) => {
                        let mut out = Vec::new();
                        for item in items.iter() {
                            out.push(string(doc, name, tn, item)?);
                        }
                        out
                    }
                    other => {
                        return Err(bad(
                            v.span(),
                            format!(
                                "expected a path or an array of paths, found {}",
                                config::type_name(other)
                            ),
                        ))
                    }
                };
                for p in paths {
                    // systemd's `-`: a file that does not exist is skipped.
                    let (optional, p) = match p.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, p.as_str()),
                    };
                    if p.is_empty() {
                        return Err(bad(v.span(), "the path must not be empty".into()));
                    }
                    let path = relative_to_file(doc.path, Path::new(p));
                    let vars = read_env_file(&path, optional).map_err(|e| bad(v.span(), e))?;
                    s.env.extend(vars);
                }
            }
            "clear-env" => s.clear_env = boolean(doc, name, tn, v)?,
            "depends-on" => s.deps = deps(doc, tn, v)?,
            "autostart" => s.autostart = boolean(doc, name, tn, v)?,
            "critical" => s.critical = boolean(doc, name, tn, v)?,
            "profile" => {
                let p = string(doc, name, tn, v)?;
                if p.is_empty() {
                    return Err(bad(v.span(), "the profile name is empty".into()));
                }
                s.profile = Some(p);
            }
            "ready-pattern" => {
                let p = string(doc, name, tn, v)?;
                s.ready = Some(Ready::Pattern(Pattern::new(&p).map_err(|e| bad(v.span(), e))?));
            }
            "ready-stream" => {
                s.ready_stream = match string(doc, name, tn, v)?.as_str() {
                    "stdout" => Stream::Stdout,
                    "stderr" => Stream::Stderr,
                    "both" => Stream::Both,
                    other => {
                        return Err(bad(
                            v.span(),
                            format!("unknown stream '{other}' (pick from: stdout, stderr, both)"),
                        ))
                    }
                }
            }
            "ready-command" => s.ready = Some(Ready::Command(argv(doc, name, tn, v)?)),
            "ready-tcp" => s.ready = Some(Ready::Tcp(tcp_address(doc, name, tn, v)?)),
            "ready-http" => s.ready = Some(Ready::Http(http_url(doc, name, tn, v)?)),
            "ready-fd" => {
                match integer(v) {
                    Some(n @ 3..=1023) => s.ready = Some(Ready::Fd(n as i32)),
                    _ => return Err(bad(
                        v.span(),
                        "expected a descriptor number from 3 to 1023 (0, 1 and 2 are the standard streams)"
                            .into(),
                    )),
                }
            }
            "ready-notify" => {
                if boolean(doc, name, tn, v)? {
                    s.ready = Some(Ready::Notify);
                } else {
                    ready_key = None;
                }
            }
            "health-command" => health_check = Some(Check::Command(argv(doc, name, tn, v)?)),
            "health-tcp" => health_check = Some(Check::Tcp(tcp_address(doc, name, tn, v)?)),
            "health-http" => health_check = Some(Check::Http(http_url(doc, name, tn, v)?)),
            "health-interval" | "health-timeout" | "health-grace" => {
                let d = duration(doc, name, tn, v)?;
                if d.is_zero() && name != "health-grace" {
                    return Err(bad(v.span(), "must be longer than 0".into()));
                }
                match name {
                    "health-interval" => health.interval = d,
                    "health-timeout" => health.timeout = d,
                    _ => health.grace = d,
                }
                health_timing.get_or_insert((name.to_string(), k.span()));
            }
            "health-failures" => {
                match integer(v).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if n >= 1 => health.failures = n,
                    _ => {
                        return Err(bad(
                            v.span(),
                            "expected a whole number of checks, at least 1".into(),
                        ))
                    }
                }
                health_timing.get_or_insert((name.to_string(), k.span()));
            }
            "ready-timeout" => {
                let d = duration(doc, name, tn, v)?;
                s.ready_timeout = (!d.is_zero()).then_some(d);
            }
            "ready-interval" | "ready-probe-timeout" => {
                let d = duration(doc, name, tn, v)?;
                if d.is_zero() {
                    return Err(bad(v.span(), "must be longer than 0".into()));
                }
                if name == "ready-interval" {
                    s.ready_interval = d;
                } else {
                    s.ready_probe_timeout = d;
                }
            }
            "ready-delay" => s.ready_delay = duration(doc, name, tn, v)?,
            "log" => {
                s.log = match string(doc, name, tn, v)?.as_str() {
                    "prefix" => LogMode::Prefix,
                    "raw" => LogMode::Raw,
                    "discard" => LogMode::Discard,
                    other => {
                        return Err(bad(
                            v.span(),
                            format!("unknown log mode '{other}' (pick from: prefix, raw, discard)"),
                        ))
                    }
                }
            }
            _ => per_run(doc, k, v, tn, &mut s.layer)?,
        }
    }
    if s.command.is_empty() {
        return Err(doc.error(
            key.span(),
            format!("{tn} has no command (command = [\"program\", \"arg\"] is required)"),
        ));
    }
    if s.ready.is_none() && s.ready_timeout.is_some() {
        return Err(Error::Config(format!(
            "{}:{line}: key 'ready-timeout' in {tn}: no readiness check to time (add one of {})",
            doc.path.display(),
            READY_KINDS.join(", ")
        )));
    }
    match (health_check, health_timing) {
        (Some(check), _) => {
            health.check = check;
            s.health = Some(health);
        }
        (None, Some((key, span))) => {
            return Err(doc.error(
                span,
                format!(
                    "key '{key}' in {tn}: no health check to time (add one of {})",
                    HEALTH_KINDS.join(", ")
                ),
            ))
        }
        (None, None) => {}
    }
    s.env.extend(env_table);
    Ok(s)
}

/// A size in bytes: an integer, or a string such as `"10MiB"`.
fn byte_size(v: &Value<'_>) -> Option<u64> {
    match v.get_ref() {
        DeValue::String(t) => size(t),
        _ => integer(v).and_then(|n| u64::try_from(n).ok()),
    }
}

/// A TOML integer's value, None for anything else.
fn integer(v: &Value<'_>) -> Option<i64> {
    match v.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// A `HOST:PORT` to connect to.
fn tcp_address(doc: &Doc<'_>, name: &str, tn: &str, v: &Value<'_>) -> Result<String, Error> {
    let addr = string(doc, name, tn, v)?;
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(addr),
        _ => Err(doc.error(
            v.span(),
            format!(
                "key '{name}' in {tn}: invalid address '{addr}' (expected HOST:PORT such as 127.0.0.1:8080)"
            ),
        )),
    }
}

fn http_url(doc: &Doc<'_>, name: &str, tn: &str, v: &Value<'_>) -> Result<HttpUrl, Error> {
    let text = string(doc, name, tn, v)?;
    HttpUrl::parse(&text).map_err(|e| doc.error(v.span(), format!("key '{name}' in {tn}: {e}")))
}

fn deps(doc: &Doc<'_>, tn: &str, v: &Value<'_>) -> Result<Vec<Dep>, Error> {
    let bad = |span: Range<usize>, msg: String| doc.error(span, format!("key 'depends-on' in {tn}: {msg}"));
    let cond = |span: Range<usize>, text: &str| {
        Cond::parse(text).ok_or_else(|| {
            bad(
                span,
                format!("unknown condition '{text}' (pick from: started, ready, succeeded, ended)"),
            )
        })
    };
    let mut out = Vec::new();
    match v.get_ref() {
        DeValue::Array(items) => {
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(n) => out.push(Dep {
                        name: n.to_string(),
                        cond: None,
                        line: doc.line(item.span()),
                        restart: false,
                    }),
                    other => {
                        return Err(bad(
                            item.span(),
                            format!("expected a service name, found {}", config::type_name(other)),
                        ))
                    }
                }
            }
        }
        DeValue::Table(t) => {
            for (k, c) in config::in_file_order(t) {
                let name: &str = k.get_ref();
                let mut restart = false;
                let c_cond = match c.get_ref() {
                    DeValue::String(text) => cond(c.span(), text)?,
                    DeValue::Table(edge) => {
                        let mut when = None;
                        let mut propagate_span = None;
                        for (ek, ev) in config::in_file_order(edge) {
                            match &**ek.get_ref() {
                                "when" => match ev.get_ref() {
                                    DeValue::String(text) => when = Some(cond(ev.span(), text)?),
                                    _ => {
                                        return Err(bad(
                                            ev.span(),
                                            "'when' must be a condition string".into(),
                                        ))
                                    }
                                },
                                "propagate" => {
                                    restart = match ev.get_ref() {
                                        DeValue::String(t) if t == "restart" => true,
                                        DeValue::String(t) if t == "none" => false,
                                        _ => {
                                            return Err(bad(
                                                ev.span(),
                                                "'propagate' must be \"restart\" or \"none\"".into(),
                                            ))
                                        }
                                    };
                                    propagate_span = Some(ev.span());
                                }
                                other => {
                                    return Err(bad(
                                        ek.span(),
                                        format!("unknown key '{other}' (expected when, propagate)"),
                                    ))
                                }
                            }
                        }
                        let when =
                            when.ok_or_else(|| bad(c.span(), format!("{name}: 'when' is required")))?;
                        if let (true, Some(span)) = (restart, propagate_span) {
                            if !matches!(when, Cond::Started | Cond::Ready) {
                                return Err(bad(
                                    span,
                                    format!(
                                        "{name}: propagate = \"restart\" needs when = \"started\" or \"ready\" (a run that {} does not come back)",
                                        when.word()
                                    ),
                                ));
                            }
                        }
                        when
                    }
                    other => {
                        return Err(bad(
                            c.span(),
                            format!(
                                "expected a condition for {name}, found {}",
                                config::type_name(other)
                            ),
                        ))
                    }
                };
                out.push(Dep {
                    name: name.to_string(),
                    cond: Some(c_cond),
                    line: doc.line(k.span()),
                    restart,
                });
            }
        }
        other => {
            return Err(bad(
                v.span(),
                format!(
                    "expected an array of names or a table of conditions, found {}",
                    config::type_name(other)
                ),
            ))
        }
    }
    Ok(out)
}

/// A relative path of the services file, taken from the file's directory
/// (as compose takes `env_file`), so a stack runs the same from anywhere.
pub fn relative_to_file(file: &Path, p: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads an env file as systemd's EnvironmentFile= does: `KEY=VALUE`
/// lines, `#` and `;` comments, a trailing backslash joining the next
/// line, an optional `export `, one pair of quotes around the value
/// stripped, no expansion. A missing `optional` file is empty. Errors name
/// the file and the line.
pub fn read_env_file(path: &Path, optional: bool) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8(b).map_err(|_| format!("env file {shown} is not UTF-8 text"))?,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read env file {shown}: {e}")),
    };
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, first)) = lines.next() {
        let mut line = first.to_string();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, more)) => line.push_str(more),
                None => break,
            }
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{shown}:{}: expected KEY=VALUE, found '{line}'", n + 1));
        };
        let k = k.trim_end();
        let valid = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "{shown}:{}: invalid variable name '{k}' (letters, digits and _, not first a digit)",
                n + 1
            ));
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/s.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn names() {
        assert!(valid_name("db") && valid_name("a.b-c_1"));
        assert!(!valid_name("Db") && !valid_name("-a") && !valid_name("") && !valid_name(&"a".repeat(49)));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = err("[service.a]\ncommand = [\"x\"]\nattempts = \"many\"\n");
        assert!(e.starts_with("/s.toml:3:") && e.contains("attempts"), "{e}");
        let e = err("[service.a]\ncommand = [\"x\"]\nnope = 1\n");
        assert!(e.starts_with("/s.toml:3:") && e.contains("'nope'"), "{e}");
        let e = err("[service.a]\ncommand = [\"x\"]\ndepends-on = [\"b\"]\n");
        assert!(
            e.starts_with("/s.toml:3:") && e.contains("unknown service 'b'"),
            "{e}"
        );
        let e = err("[service.a]\ncommand = [\"x\"]\nquiet = true\n");
        assert!(e.contains("[supervisor]"), "{e}");
        let e = err("[service.a]\ncommand = [\"x\"]\nready-tcp = \"h:1\"\nready-pattern = \"x\"\n");
        assert!(e.contains("two readiness kinds"), "{e}");
        let e = err("[supervisor]\nmain = \"b\"\n[service.a]\ncommand = [\"x\"]\n");
        assert!(e.starts_with("/s.toml:2:") && e.contains("main"), "{e}");
    }

    #[test]
    fn http_urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/healthz?full=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/healthz?full=1")
        );
        let u = HttpUrl::parse("HTTP://[::1]").unwrap();
        assert_eq!((u.connect_host(), u.port, u.path.as_str()), ("::1", 80, "/"));
        assert_eq!(u.to_string(), "http://[::1]:80/");
        assert_eq!(HttpUrl::parse("http://h?x").unwrap().path, "/?x");
        for bad in [
            "https://h/",
            "h:80",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpUrl::parse("https://h/").unwrap_err().contains("no TLS"));
    }

    #[test]
    fn health_and_readiness_keys() {
        let ok = |t: &str| {
            parse(
                Path::new("/s.toml"),
                &format!("[service.a]\ncommand = [\"x\"]\n{t}"),
            )
            .unwrap()
        };
        let s = ok("health-http = \"http://h:1/\"\nhealth-failures = 2\n");
        let h = s.services[0].health.as_ref().unwrap();
        assert_eq!(
            (h.failures, h.interval, h.timeout),
            (2, Duration::from_secs(10), Duration::from_secs(5))
        );
        assert!(matches!(
            ok("ready-fd = 3\n").services[0].ready,
            Some(Ready::Fd(3))
        ));
        assert!(matches!(
            ok("ready-notify = true\n").services[0].ready,
            Some(Ready::Notify)
        ));
        assert!(matches!(
            ok("ready-fd = 3\n").services[0].ready,
            Some(Ready::Fd(3))
        ));
        assert!(matches!(
            ok("ready-notify = true\n").services[0].ready,
            Some(Ready::Notify)
        ));
        let e = err("[service.a]\ncommand = [\"x\"]\nready-fd = 1\n");
        assert!(e.contains("key 'ready-fd'"), "{e}");
        let e = err("[service.a]\ncommand = [\"x\"]\nready-fd = 3\nready-notify = true\n");
        assert!(e.contains("two readiness kinds"), "{e}");
        let e = err("[service.a]\ncommand = [\"x\"]\nhealth-interval = \"1s\"\n");
        assert!(
            e.starts_with("/s.toml:3:") && e.contains("no health check"),
            "{e}"
        );
        let e = err("[service.a]\ncommand = [\"x\"]\nhealth-tcp = \"h:1\"\nhealth-command = [\"x\"]\n");
        assert!(
            e.starts_with("/s.toml:4:") && e.contains("two health checks"),
            "{e}"
        );
        let e = err("[service.a]\ncommand = [\"x\"]\nready-http = \"ftp://h/\"\n");
        assert!(
            e.starts_with("/s.toml:3:") && e.contains("key 'ready-http'"),
            "{e}"
        );
    }

    #[test]
    fn env_files() {
        let dir = std::env::temp_dir().join(format!("patience-envfile-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# c\n; c\nexport A=1\nB = \"two words\"\nC='x'\n\nD=$HOME\nexported=y\nE=a\\\nb\n",
        )
        .unwrap();
        let vars = read_env_file(&dir, false);
        let _ = std::fs::remove_file(&dir);
        let vars = vars.unwrap();
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "x"),
            ("D", "$HOME"),
            ("exported", "y"),
            ("E", "ab"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(vars, want);
    }
}
