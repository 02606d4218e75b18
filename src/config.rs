//! Resolving the settings of a run from every source, lowest first: built-in
//! defaults, the system file, the user file (or the one `--config` file),
//! the chosen `[profile.NAME]` tables, the environment, the command line.
//! Each setting remembers where it came from, for `--dry-run`.
//!
//! Every source is turned into the (long name, text value) pairs the command
//! line produces and goes through `Settings::apply`, so files and the command
//! line share one validator and the attempt loop never sees TOML. The
//! `[daemon]` table is validated here too and handed to patienced as a plain
//! [`DaemonConfig`].
//!
//! Tests point the system file elsewhere with the environment variable
//! `PATIENCE_SYSTEM_CONFIG` (see [`SYSTEM_FILE_VAR`]), so that no test reads
//! or writes the real `/etc`. It is meant for tests only.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::cli::Invocation;
use crate::error::Error;
use crate::settings::{Opt, Settings, CONFIG_ONLY, OPTIONS};

/// The system-wide file, read before the user's.
pub const SYSTEM_FILE: &str = "/etc/patience/config.toml";

/// Replaces [`SYSTEM_FILE`] when set and not empty. For the test suite only,
/// which must not depend on (or write to) the machine's `/etc`.
pub const SYSTEM_FILE_VAR: &str = "PATIENCE_SYSTEM_CONFIG";

/// Files larger than this are refused: a config file is a few lines, and a
/// path pointing at a log or a device should fail fast, not eat memory.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// The keys of `[daemon]`.
pub const DAEMON_KEYS: &[&str] = &[
    "socket",
    "socket-mode",
    "listen",
    "state-file",
    "max-series",
    "buckets",
];

/// Command-line options that are not settings, so no file can set them.
const COMMAND_LINE_ONLY: &[&str] = &["config", "no-config", "profile", "dry-run", "help", "version"];

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    /// `[defaults]` of this file.
    File(PathBuf),
    /// `[profile.NAME]` of this file.
    Profile {
        name: String,
        file: PathBuf,
    },
    /// This environment variable.
    Env(&'static str),
    CommandLine,
    /// A table of a services file (`[defaults]`, `[service.NAME]`).
    Table {
        table: String,
        file: PathBuf,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Profile { name, file } => write!(f, "profile {name} in {}", file.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::CommandLine => f.write_str("command line"),
            Source::Table { table, file } => write!(f, "{table} in {}", file.display()),
        }
    }
}

/// A config file patience looked for, and whether it was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUse {
    pub path: PathBuf,
    pub found: bool,
}

/// The settings of a run and the source of each one that was set.
#[derive(Debug)]
pub struct Resolved {
    pub settings: Settings,
    /// Long option name → where its value came from; absent means default.
    pub sources: BTreeMap<&'static str, Source>,
    /// The files looked for, in the order read; empty with `--no-config`.
    pub files: Vec<FileUse>,
    /// The profile in use and who chose it.
    pub profile: Option<(String, Source)>,
    /// The assignments that made the settings, in the order applied (one
    /// per value): an equivalent command line for `patience --services`.
    pub applied: Vec<(&'static str, Option<String>)>,
}

impl Resolved {
    /// Where option `long` got its value.
    pub fn source(&self, long: &str) -> Source {
        self.sources.get(long).cloned().unwrap_or(Source::Default)
    }
}

/// The `[daemon]` table, validated. `None` means "not in the file": the
/// daemon applies its own default or command-line value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonConfig {
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket, at most 0o777.
    pub socket_mode: Option<u32>,
    /// `ADDR:PORT` (an IP address or a host name; not resolved here).
    pub listen: Option<String>,
    pub state_file: Option<PathBuf>,
    /// At least 1.
    pub max_series: Option<usize>,
    /// Histogram upper bounds in seconds: finite, positive, increasing.
    pub buckets: Option<Vec<f64>>,
}

/// One parsed and validated config file.
#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
    defaults: Vec<Entry>,
    profiles: BTreeMap<String, Vec<Entry>>,
    daemon: DaemonConfig,
}

/// One key of a settings table, its value(s) already converted to text.
#[derive(Clone, Debug)]
struct Entry {
    key: &'static str,
    /// Applied in turn: one for a scalar, one per element of an array given
    /// to a repeatable option, none for `key = []`.
    values: Vec<(String, Where)>,
}

/// Where a value was written, to name it in an error.
#[derive(Clone, Debug)]
enum Where {
    /// `FILE:LINE: key 'K' in [TABLE]`.
    File(String),
    Env(&'static str),
    CommandLine,
}

/// One source's say on one key, in the order sources are applied.
#[derive(Debug)]
struct Assignment {
    key: &'static str,
    values: Vec<(Option<String>, Where)>,
    /// Rank of the source: a higher layer's list replaces a lower one's.
    layer: usize,
    source: Source,
}

/// Builds the run's settings from the invocation, the files and the
/// process environment.
pub fn resolve(inv: &Invocation) -> Result<Resolved, Error> {
    resolve_with(inv, &|name| std::env::var_os(name))
}

/// `resolve` with the environment given as a lookup function.
fn resolve_with(inv: &Invocation, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Resolved, Error> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let (files, uses) = config_files(inv, env)?;
    let profile = match (&inv.profile, var("PATIENCE_PROFILE")) {
        (Some(name), _) => Some((name.clone(), Source::CommandLine)),
        // --no-config reads no file, so a profile from the environment has
        // nothing to select: ignore it rather than fail every run.
        (None, Some(_)) if inv.no_config => None,
        (None, Some(name)) => match name.into_string() {
            Ok(name) => Some((name, Source::Env("PATIENCE_PROFILE"))),
            Err(raw) => {
                return Err(Error::Config(format!(
                    "PATIENCE_PROFILE={raw:?}: not valid UTF-8"
                )))
            }
        },
        (None, None) => None,
    };
    let mut resolved = build(&files, &uses, profile, env, &inv.assignments)?;
    resolved.settings.command = inv.command.clone();
    resolved.files = uses;
    Ok(resolved)
}

/// Reads and validates the config files the invocation names: the one
/// `--config` (or `PATIENCE_CONFIG`) file, else the system and user files
/// that exist; none with `--no-config`.
fn config_files(
    inv: &Invocation,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<(Vec<ConfigFile>, Vec<FileUse>), Error> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let wanted: Vec<(PathBuf, bool)> = if inv.no_config {
        Vec::new()
    } else if let Some(path) = &inv.config {
        vec![(path.clone(), true)]
    } else if let Some(path) = var("PATIENCE_CONFIG") {
        vec![(PathBuf::from(path), true)]
    } else {
        let system = var(SYSTEM_FILE_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| SYSTEM_FILE.into());
        let mut v = vec![(system, false)];
        v.extend(user_file(env).map(|p| (p, false)));
        v
    };
    let mut files = Vec::new();
    let mut uses = Vec::new();
    for (path, required) in wanted {
        let text = read_file(&path, required)?;
        uses.push(FileUse {
            path: path.clone(),
            found: text.is_some(),
        });
        if let Some(text) = text {
            files.push(parse_file(&path, &text)?);
        }
    }
    Ok((files, uses))
}

/// The user's file: `$XDG_CONFIG_HOME/patience/config.toml`, else
/// `~/.config/patience/config.toml`; none without a usable HOME (cron and
/// containers often have none, which is normal).
fn user_file(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    // The XDG spec says relative values are invalid and must be ignored.
    let xdg = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let dir = match xdg {
        Some(dir) => dir,
        None => PathBuf::from(env("HOME").filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(dir.join("patience").join("config.toml"))
}

/// Merges the layers in order: every file's `[defaults]`, then the profile
/// from every file that has it, the environment, the command line.
fn build(
    files: &[ConfigFile],
    uses: &[FileUse],
    profile: Option<(String, Source)>,
    env: &dyn Fn(&str) -> Option<OsString>,
    cli: &[(&'static str, Option<String>)],
) -> Result<Resolved, Error> {
    build_stacked(files, uses, profile, env, cli, &[], &[])
}

/// `build` with the layers of a services file: `before` over the config
/// files' `[defaults]` and under the profile, `after` over the profile.
fn build_stacked(
    files: &[ConfigFile],
    uses: &[FileUse],
    profile: Option<(String, Source)>,
    env: &dyn Fn(&str) -> Option<OsString>,
    cli: &[(&'static str, Option<String>)],
    before: &[Layer],
    after: &[Layer],
) -> Result<Resolved, Error> {
    let mut layers: Vec<Assignment> = Vec::new();
    let mut layer = 0;
    let from_file = |entries: &[Entry], layer: usize, source: &Source, out: &mut Vec<Assignment>| {
        for e in entries {
            out.push(Assignment {
                key: e.key,
                values: e
                    .values
                    .iter()
                    .map(|(v, w)| (Some(v.clone()), w.clone()))
                    .collect(),
                layer,
                source: source.clone(),
            });
        }
    };
    for f in files {
        layer += 1;
        from_file(&f.defaults, layer, &Source::File(f.path.clone()), &mut layers);
    }
    for l in before {
        layer += 1;
        from_file(&l.entries, layer, &l.source, &mut layers);
    }
    if let Some((name, chosen_by)) = &profile {
        let mut found = false;
        for f in files {
            if let Some(entries) = f.profiles.get(name) {
                found = true;
                layer += 1;
                let source = Source::Profile {
                    name: name.clone(),
                    file: f.path.clone(),
                };
                from_file(entries, layer, &source, &mut layers);
            }
        }
        if !found {
            return Err(unknown_profile(name, chosen_by, files, uses));
        }
    }
    for l in after {
        layer += 1;
        from_file(&l.entries, layer, &l.source, &mut layers);
    }
    layer += 1;
    // NO_COLOR (no-color.org): present and not empty means no colour.
    if env("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        layers.push(Assignment {
            key: "color",
            values: vec![(Some("never".into()), Where::Env("NO_COLOR"))],
            layer,
            source: Source::Env("NO_COLOR"),
        });
    }
    if let Some(url) = env("PATIENCE_STATE_URL").filter(|v| !v.is_empty()) {
        layers.push(Assignment {
            key: "state-url",
            values: vec![(
                Some(url.to_string_lossy().into_owned()),
                Where::Env("PATIENCE_STATE_URL"),
            )],
            layer,
            source: Source::Env("PATIENCE_STATE_URL"),
        });
    }
    layer += 1;
    // Every user can read a command line (ps, /proc/PID/cmdline): a
    // password has no place there.
    for (key, value) in cli {
        if *key == "state-url" {
            let text = value.as_deref().unwrap_or("");
            if crate::state::url::StateUrl::parse(text.trim()).is_ok_and(|u| u.has_password()) {
                return Err(Error::Usage(format!(
                    "--state-url '{}': a password on the command line is visible to every user (ps); put it in the file named by state-url-password-file, or give the URL in PATIENCE_STATE_URL or a config file",
                    crate::state::url::redact(text)
                )));
            }
        }
    }
    for (key, value) in cli {
        layers.push(Assignment {
            key,
            values: vec![(value.clone(), Where::CommandLine)],
            layer,
            source: Source::CommandLine,
        });
    }
    let (mut settings, mut sources) = merge(&layers)?;
    let repeat = |key: &str| config_key(key).is_some_and(|o| o.repeat);
    let applied = effective(&layers, &repeat)
        .into_iter()
        .flat_map(|a| a.values.iter().map(|(v, _)| (a.key, v.clone())))
        .collect();
    // Paths from the environment are taken as they are, even when they are
    // not UTF-8; no command-line option sets them, so nothing comes after.
    for (var, key) in [("PATIENCE_SOCKET", "socket"), ("PATIENCE_STATE_DIR", "state-dir")] {
        if let Some(path) = env(var).filter(|v| !v.is_empty()) {
            let path = Some(PathBuf::from(path));
            match key {
                "socket" => settings.socket = path,
                _ => settings.state_dir = path,
            }
            sources.insert(key, Source::Env(var));
        }
    }
    Ok(Resolved {
        settings,
        sources,
        files: Vec::new(),
        profile,
        applied,
    })
}

/// Options that set the same field: applying one (to a true value) makes the
/// others' sources stale.
const SAME_FIELD: &[&[&str]] = &[&["attempts", "forever"], &["quiet", "verbose"]];

/// The assignments that count, in order. For a repeatable option only the
/// highest layer that mentions it counts: a profile's `retry-pattern` list
/// replaces the one in `[defaults]`, and the command line's replaces both
/// (`key = []` in a higher layer empties the list).
fn effective<'a>(layers: &'a [Assignment], repeat: &dyn Fn(&str) -> bool) -> Vec<&'a Assignment> {
    let mut top: BTreeMap<&str, usize> = BTreeMap::new();
    for a in layers.iter().filter(|a| repeat(a.key)) {
        let t = top.entry(a.key).or_default();
        *t = (*t).max(a.layer);
    }
    layers
        .iter()
        .filter(|a| !repeat(a.key) || top.get(a.key) == Some(&a.layer))
        .collect()
}

/// Applies the assignments that count, in order, recording each source.
fn merge(layers: &[Assignment]) -> Result<(Settings, BTreeMap<&'static str, Source>), Error> {
    let repeat = |key: &str| config_key(key).is_some_and(|o| o.repeat);
    let mut settings = Settings::default();
    let mut sources = BTreeMap::new();
    for a in effective(layers, &repeat) {
        for (value, at) in &a.values {
            settings
                .apply(a.key, value.as_deref())
                .map_err(|e| value_error(a.key, value, at, &e))?;
            if value.as_deref() != Some("false") {
                for group in SAME_FIELD.iter().filter(|g| g.contains(&a.key)) {
                    for other in group.iter().filter(|o| **o != a.key) {
                        sources.remove(other);
                    }
                }
            }
        }
        sources.insert(a.key, a.source.clone());
    }
    check_delay_list(layers, &settings)?;
    Ok((settings, sources))
}

/// A delay list (`-d 1s,5s,30s`) gives every delay itself, so a growth
/// strategy chosen on top of it (command line or file) would disagree about
/// each one: an error naming both. The default `exponential`, which nobody
/// chose, gives way to the list without a word, and so does `fixed`.
fn check_delay_list(layers: &[Assignment], settings: &Settings) -> Result<(), Error> {
    let b = &settings.backoff;
    if b.list.is_empty() || b.strategy == crate::backoff::Strategy::Fixed {
        return Ok(());
    }
    let last = |key: &str| {
        layers
            .iter()
            .rev()
            .find(|a| a.key == key)
            .and_then(|a| a.values.last())
    };
    let Some((Some(backoff), backoff_at)) = last("backoff") else {
        return Ok(());
    };
    let (delay, delay_at) = match last("delay") {
        Some((Some(v), at)) => (v.as_str(), at),
        _ => return Ok(()),
    };
    let name = |key: &str, value: &str, at: &Where| match at {
        Where::File(prefix) => format!("{key} '{value}' ({prefix})"),
        Where::Env(var) => format!("{key} '{value}' (environment {var})"),
        Where::CommandLine => format!("--{key} '{value}'"),
    };
    let msg = format!(
        "{} cannot be used with {}: a delay list gives every delay itself; use --backoff fixed or leave --backoff out",
        name("delay", delay, delay_at),
        name("backoff", backoff, backoff_at),
    );
    Err(match (delay_at, backoff_at) {
        (Where::CommandLine, _) | (_, Where::CommandLine) => Error::Usage(msg),
        _ => Error::Config(msg),
    })
}

/// The error for a value `Settings::apply` refused, naming where it was set.
fn value_error(key: &str, value: &Option<String>, at: &Where, e: &str) -> Error {
    match (at, value) {
        (Where::File(prefix), _) => Error::Config(format!("{prefix}: {e}")),
        (Where::Env(var), _) => Error::Config(format!("environment {var}: {e}")),
        // The URL's own message names it, with the password masked.
        (Where::CommandLine, Some(_)) if key == "state-url" => Error::Usage(format!("--{key}: {e}")),
        (Where::CommandLine, Some(v)) => Error::Usage(format!("--{key} '{v}': {e}")),
        (Where::CommandLine, None) => Error::Usage(format!("--{key}: {e}")),
    }
}

fn unknown_profile(name: &str, chosen_by: &Source, files: &[ConfigFile], uses: &[FileUse]) -> Error {
    let by = match chosen_by {
        Source::Env(var) => format!(" (from {var})"),
        _ => String::new(),
    };
    if files.is_empty() {
        let looked: Vec<_> = uses.iter().map(|u| u.path.display().to_string()).collect();
        return Error::Config(format!(
            "unknown profile '{name}'{by}: no config file found (looked for {})",
            looked.join(", ")
        ));
    }
    let known: Vec<&str> = files
        .iter()
        .flat_map(|f| f.profiles.keys().map(String::as_str))
        .collect();
    let read: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
    let mut msg = format!(
        "unknown profile '{name}'{by}: no [profile.{name}] in {}",
        read.join(", ")
    );
    if let Some(near) = suggest(name, known.iter().copied()) {
        msg.push_str(&format!("; did you mean '{near}'?"));
    }
    if known.is_empty() {
        msg.push_str(" (it defines no profiles)");
    } else {
        let mut known = known;
        known.sort_unstable();
        known.dedup();
        msg.push_str(&format!(" (profiles: {})", known.join(", ")));
    }
    Error::Config(msg)
}

/// Resolves the settings from one config file's `text` alone, as
/// `--config PATH` with `profile` (`-p`) would, without reading the disk,
/// the environment or a command line. For the fuzz targets and tests.
pub fn resolve_text(path: &Path, text: &str, profile: Option<&str>) -> Result<Resolved, Error> {
    let file = parse_file(path, text)?;
    let uses = [FileUse {
        path: path.to_path_buf(),
        found: true,
    }];
    let profile = profile.map(|p| (p.to_string(), Source::CommandLine));
    let mut resolved = build(std::slice::from_ref(&file), &uses, profile, &|_| None, &[])?;
    resolved.files = uses.into();
    Ok(resolved)
}

/// A table of per-run settings in a file that is not a config file (the
/// services file's `[defaults]`, a `[service.NAME]`): each key converted and
/// validated exactly as a config file's `[defaults]`, then applied as one
/// more layer by [`resolve_stacked`].
#[derive(Clone, Debug)]
pub struct Layer {
    pub source: Source,
    entries: Vec<Entry>,
}

impl Layer {
    pub fn new(source: Source) -> Layer {
        Layer {
            source,
            entries: Vec::new(),
        }
    }

    /// The keys set in this layer, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.key)
    }

    /// The last text value given to `key` in this layer.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .and_then(|e| e.values.last())
            .map(|(v, _)| v.as_str())
    }

    /// Adds setting `key = value` of `table` in `doc`, validated as in a
    /// config file. The caller has checked that `key` is a setting.
    pub(crate) fn add(
        &mut self,
        doc: &Doc<'_>,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
        table: &str,
    ) -> Result<(), Error> {
        let name: &str = key.get_ref();
        let opt = config_key(name).ok_or_else(|| doc.error(key.span(), unknown_setting(name, table)))?;
        let at = |span: Range<usize>| {
            Where::File(format!(
                "{}:{}: key '{name}' in {table}",
                doc.path.display(),
                doc.line(span)
            ))
        };
        let values: Vec<(String, Where)> = convert(opt, value)
            .map_err(|(span, msg)| doc.error(span, format!("key '{name}' in {table}: {msg}")))?
            .into_iter()
            .map(|(text, span)| (text, at(span)))
            .collect();
        let mut scratch = Settings::default();
        for (text, at) in &values {
            scratch
                .apply(opt.long, Some(text))
                .map_err(|err| value_error(opt.long, &Some(text.clone()), at, &err))?;
        }
        self.entries.push(Entry {
            key: opt.long,
            values,
        });
        Ok(())
    }
}

/// Resolves one service's settings: the config files the invocation names
/// (none with `--no-config`), then `before` (the services file's
/// `[defaults]`), the config files' `[profile.NAME]` for `profile`, then
/// `after` (the service's own table). No environment layer and no command
/// line but `cli` (the group's options of `--services`).
pub fn resolve_stacked(
    inv: &Invocation,
    before: &[Layer],
    profile: Option<(String, Source)>,
    after: &[Layer],
    cli: &[(&'static str, Option<String>)],
) -> Result<Resolved, Error> {
    let (files, uses) = config_files(inv, &|name| std::env::var_os(name))?;
    let mut resolved = build_stacked(&files, &uses, profile, &|_| None, cli, before, after)?;
    resolved.files = uses;
    Ok(resolved)
}

/// Reads the `[daemon]` table of the file at `path` (for patienced). The
/// whole file is validated, as patience does; a missing file is an error.
pub fn load_daemon(path: &Path) -> Result<DaemonConfig, Error> {
    let text = read_file(path, true)?.unwrap_or_default();
    Ok(parse_file(path, &text)?.daemon)
}

/// Reads a config file. A missing default file (`required` false) is
/// `None`; a missing `--config` file, an unreadable file, a directory or
/// FIFO in a default place, an oversized or non-UTF-8 file are errors.
pub(crate) fn read_file(path: &Path, required: bool) -> Result<Option<String>, Error> {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e)
            if !required
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Error::Config(format!("cannot read config file {shown}: {e}"))),
    };
    // A default path that is a FIFO would block every run; an explicit one
    // may be (`--config <(generate)`).
    let meta = file
        .metadata()
        .map_err(|e| Error::Config(format!("cannot read config file {shown}: {e}")))?;
    if meta.is_dir() || (!required && !meta.is_file()) {
        return Err(Error::Config(format!(
            "config file {shown} is not a regular file"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Config(format!("cannot read config file {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(Error::Config(format!(
            "config file {shown} is larger than {} KiB; is it really a config file?",
            MAX_FILE_SIZE / 1024
        )));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            let bad = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Error::Config(format!(
                "{shown}:{line}: not valid UTF-8 (TOML files are UTF-8)"
            )))
        }
    }
}

/// A file's text with its name, to turn spans into `FILE:LINE:` errors.
pub(crate) struct Doc<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Doc<'_> {
    /// The 1-based line and column (in characters) of byte offset `at`.
    fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let before = self.text.get(..at).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    pub(crate) fn line(&self, span: Range<usize>) -> usize {
        self.line_col(span.start).0
    }

    /// An error at `span`: `FILE:LINE: msg`.
    pub(crate) fn error(&self, span: Range<usize>, msg: impl std::fmt::Display) -> Error {
        Error::Config(format!("{}:{}: {msg}", self.path.display(), self.line(span)))
    }

    /// A TOML syntax error, with the line it is on and a caret under the spot.
    pub(crate) fn syntax(&self, e: &toml::de::Error) -> Error {
        let Some(span) = e.span() else {
            return Error::Config(format!("{}: syntax error: {}", self.path.display(), e.message()));
        };
        let (line, col) = self.line_col(span.start);
        let content = self.text.lines().nth(line - 1).unwrap_or("");
        // Keep tabs so the caret lines up under the same text.
        let pad: String = content
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        Error::Config(format!(
            "{}:{line}:{col}: syntax error: {}\n{line:>5} | {content}\n      | {pad}^",
            self.path.display(),
            e.message().trim_end()
        ))
    }
}

/// A table's entries in the order they appear in the file (the map itself
/// is sorted by name), so that later keys win as on the command line.
pub(crate) fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Spanned<DeValue<'i>>)> {
    let mut v: Vec<_> = table.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// A value's TOML type, for "expected …, found …".
pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Parses and validates a whole file: syntax, tables, keys, types and
/// values (every profile, not only the one in use, so a mistake shows up at
/// once rather than the day the profile is chosen).
fn parse_file(path: &Path, text: &str) -> Result<ConfigFile, Error> {
    let doc = Doc { path, text };
    let root = DeTable::parse(text).map_err(|e| doc.syntax(&e))?;
    let mut file = ConfigFile {
        path: path.to_path_buf(),
        defaults: Vec::new(),
        profiles: BTreeMap::new(),
        daemon: DaemonConfig::default(),
    };
    for (key, value) in in_file_order(root.get_ref()) {
        let name: &str = key.get_ref();
        match name {
            "defaults" => file.defaults = settings_table(&doc, key.span(), value, "[defaults]")?,
            "profile" => {
                let DeValue::Table(profiles) = value.get_ref() else {
                    return Err(doc.error(
                        key.span(),
                        "'profile' must hold tables such as [profile.quick], not a value",
                    ));
                };
                for (pkey, pvalue) in in_file_order(profiles) {
                    let pname: &str = pkey.get_ref();
                    let table = format!("[profile.{pname}]");
                    let entries = settings_table(&doc, pkey.span(), pvalue, &table)?;
                    file.profiles.insert(pname.to_string(), entries);
                }
            }
            "daemon" => file.daemon = daemon_table(&doc, key.span(), value)?,
            _ if config_key(name).is_some() => {
                return Err(doc.error(
                    key.span(),
                    format!("key '{name}' outside any table; put settings under [defaults]"),
                ))
            }
            _ => {
                let mut msg =
                    format!("unknown table '{name}' (expected [defaults], [profile.NAME], [daemon])");
                if let Some(near) = suggest(name, ["defaults", "profile", "daemon"].into_iter()) {
                    msg.push_str(&format!("; did you mean '{near}'?"));
                }
                return Err(doc.error(key.span(), msg));
            }
        }
    }
    Ok(file)
}

/// A key a settings table may hold: an option's long name or a config-only key.
pub(crate) fn config_key(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().chain(CONFIG_ONLY).find(|o| o.long == name)
}

/// What a settings table key's value must look like.
enum Kind {
    /// A switch: `true` or `false`.
    Switch,
    /// A count (`N`): an integer.
    Integer,
    /// A factor or fraction: an integer or a float.
    Number,
    /// Anything else: a string or a number, or an array of integers joined
    /// with commas (a code set: `[0, 2]` is `"0,2"`).
    Text,
    /// A repeatable option: a scalar, or an array applied element by element.
    List,
}

fn kind(opt: &Opt) -> Kind {
    match opt.value {
        None => Kind::Switch,
        Some(_) if opt.repeat => Kind::List,
        Some("N") => Kind::Integer,
        Some("F") | Some("FRACTION") => Kind::Number,
        Some(_) => Kind::Text,
    }
}

/// A scalar's text as `Settings::apply` takes it, or None if not a scalar.
pub(crate) fn scalar_text(v: &DeValue<'_>) -> Option<Result<String, String>> {
    match v {
        DeValue::String(s) => Some(Ok(s.to_string())),
        DeValue::Integer(i) => Some(
            i64::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| format!("integer {i} is out of range")),
        ),
        // Display of a finite f64 never uses an exponent: 1e3 → "1000".
        DeValue::Float(f) => Some(match f.as_str().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x.to_string()),
            _ => Err(format!("number {f} is out of range")),
        }),
        _ => None,
    }
}

/// Converts and validates one settings table (`[defaults]` or a profile).
fn settings_table(
    doc: &Doc<'_>,
    key_span: Range<usize>,
    value: &Spanned<DeValue<'_>>,
    table: &str,
) -> Result<Vec<Entry>, Error> {
    let DeValue::Table(t) = value.get_ref() else {
        return Err(doc.error(
            key_span,
            format!("{table} must be a table, not {}", type_name(value.get_ref())),
        ));
    };
    let mut entries = Vec::new();
    for (key, value) in in_file_order(t) {
        let name: &str = key.get_ref();
        let Some(opt) = config_key(name) else {
            return Err(doc.error(key.span(), unknown_setting(name, table)));
        };
        let at = |span: Range<usize>| {
            Where::File(format!(
                "{}:{}: key '{name}' in {table}",
                doc.path.display(),
                doc.line(span)
            ))
        };
        let values = convert(opt, value)
            .map_err(|(span, msg)| doc.error(span, format!("key '{name}' in {table}: {msg}")))?
            .into_iter()
            .map(|(text, span)| (text, at(span)))
            .collect();
        entries.push(Entry {
            key: opt.long,
            values,
        });
    }
    // Values are checked now, on a scratch copy, so that an error in any
    // table (even an unused profile) is reported with its line.
    let mut scratch = Settings::default();
    for e in &entries {
        for (text, at) in &e.values {
            scratch
                .apply(e.key, Some(text))
                .map_err(|err| value_error(e.key, &Some(text.clone()), at, &err))?;
        }
    }
    Ok(entries)
}

/// A message about the text at a span of the file.
type Spot = (Range<usize>, String);

/// Converts one settings value to the text(s) `Settings::apply` takes, each
/// with the span it came from; or the span and message of a type error.
fn convert(opt: &Opt, value: &Spanned<DeValue<'_>>) -> Result<Vec<(String, Range<usize>)>, Spot> {
    let wrong = |span: Range<usize>, expected: &str, found: &DeValue<'_>| {
        (span, format!("expected {expected}, found {}", type_name(found)))
    };
    // The text of a scalar the match below has already checked.
    let text = |item: &Spanned<DeValue<'_>>| match scalar_text(item.get_ref()) {
        Some(Ok(t)) => Ok((t, item.span())),
        Some(Err(e)) => Err((item.span(), e)),
        None => Err(wrong(item.span(), "a string or a number", item.get_ref())),
    };
    let v = value.get_ref();
    let span = value.span();
    Ok(match (kind(opt), v) {
        (Kind::Switch, DeValue::Boolean(b)) => vec![(b.to_string(), span)],
        (Kind::Switch, _) => return Err(wrong(span, "true or false", v)),
        (Kind::Integer, DeValue::Integer(_)) | (Kind::Number, DeValue::Integer(_) | DeValue::Float(_)) => {
            vec![text(value)?]
        }
        (Kind::Integer, _) => return Err(wrong(span, "an integer", v)),
        (Kind::Number, _) => return Err(wrong(span, "a number", v)),
        (Kind::Text | Kind::List, DeValue::String(_) | DeValue::Integer(_) | DeValue::Float(_)) => {
            vec![text(value)?]
        }
        // `delay = ["1s", "5s", 30]`: the list `-d 1s,5s,30` gives.
        (Kind::Text, DeValue::Array(items)) if opt.long == "delay" => {
            let mut delays = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(d) if d.contains(',') => {
                        return Err((item.span(), "one duration per element of this array".into()))
                    }
                    DeValue::String(_) | DeValue::Integer(_) | DeValue::Float(_) => {
                        delays.push(text(item)?.0)
                    }
                    other => return Err(wrong(item.span(), "a duration in this array", other)),
                }
            }
            vec![(delays.join(","), span)]
        }
        (Kind::Text, DeValue::Array(items)) => {
            let mut codes = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Integer(_) => codes.push(text(item)?.0),
                    other => {
                        return Err(wrong(
                            item.span(),
                            "an integer in this array (a code set such as [0, 2])",
                            other,
                        ))
                    }
                }
            }
            vec![(codes.join(","), span)]
        }
        (Kind::Text, _) => return Err(wrong(span, "a string or a number", v)),
        (Kind::List, DeValue::Array(items)) => {
            let mut out = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(_) | DeValue::Integer(_) | DeValue::Float(_) => out.push(text(item)?),
                    other => return Err(wrong(item.span(), "a string in this array", other)),
                }
            }
            out
        }
        (Kind::List, _) => return Err(wrong(span, "a string or an array of strings", v)),
    })
}

/// The message for a key a settings table does not know.
fn unknown_setting(name: &str, table: &str) -> String {
    if COMMAND_LINE_ONLY.contains(&name) {
        return format!("'{name}' cannot be set in a config file (it is a command-line option only)");
    }
    if DAEMON_KEYS.contains(&name) {
        return format!("key '{name}' is a patienced setting: put it under [daemon], not {table}");
    }
    let mut msg = format!("unknown key '{name}' in {table}");
    let names = OPTIONS.iter().chain(CONFIG_ONLY).map(|o| o.long);
    if let Some(near) = suggest(name, names) {
        msg.push_str(&format!("; did you mean '{near}'?"));
    }
    msg
}

/// Parses and validates the `[daemon]` table.
fn daemon_table(
    doc: &Doc<'_>,
    key_span: Range<usize>,
    value: &Spanned<DeValue<'_>>,
) -> Result<DaemonConfig, Error> {
    let DeValue::Table(t) = value.get_ref() else {
        return Err(doc.error(
            key_span,
            format!("[daemon] must be a table, not {}", type_name(value.get_ref())),
        ));
    };
    let mut d = DaemonConfig::default();
    for (key, value) in in_file_order(t) {
        let name: &str = key.get_ref();
        let v = value.get_ref();
        let span = value.span();
        let bad = |span: Range<usize>, e: &str| doc.error(span, format!("key '{name}' in [daemon]: {e}"));
        let wrong = |expected: &str| {
            bad(
                span.clone(),
                &format!("expected {expected}, found {}", type_name(v)),
            )
        };
        let path = || match v {
            DeValue::String(s) if !s.is_empty() => Ok(PathBuf::from(s.as_ref())),
            DeValue::String(_) => Err(bad(span.clone(), "the path must not be empty")),
            _ => Err(wrong("a path string")),
        };
        match name {
            "socket" => d.socket = Some(path()?),
            "state-file" => d.state_file = Some(path()?),
            "socket-mode" => d.socket_mode = Some(socket_mode(v).map_err(|e| bad(span.clone(), &e))?),
            "listen" => match v {
                DeValue::String(s) => {
                    check_listen(s).map_err(|e| bad(span.clone(), &e))?;
                    d.listen = Some(s.to_string());
                }
                _ => return Err(wrong("a string such as \"127.0.0.1:9977\"")),
            },
            "max-series" => match v {
                DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) if n >= 1 => d.max_series = Some(n as usize),
                    _ => {
                        return Err(bad(
                            span,
                            &format!("invalid number of series {i} (expected at least 1)"),
                        ))
                    }
                },
                _ => return Err(wrong("an integer")),
            },
            "buckets" => {
                let DeValue::Array(items) = v else {
                    return Err(wrong("an array of numbers of seconds such as [0.1, 1, 10]"));
                };
                let mut bounds: Vec<f64> = Vec::new();
                for item in items.iter() {
                    let x = match item.get_ref() {
                        DeValue::Integer(_) | DeValue::Float(_) => scalar_text(item.get_ref())
                            .and_then(|t| t.ok())
                            .and_then(|t| t.parse::<f64>().ok()),
                        other => {
                            let e = format!("expected a number of seconds, found {}", type_name(other));
                            return Err(bad(item.span(), &e));
                        }
                    };
                    match x {
                        Some(x) if x.is_finite() && x > 0.0 => {
                            if bounds.last().is_some_and(|&last| x <= last) {
                                return Err(bad(item.span(), "bucket bounds must be in increasing order"));
                            }
                            bounds.push(x);
                        }
                        _ => return Err(bad(item.span(), "bucket bounds must be finite numbers above 0")),
                    }
                }
                if bounds.is_empty() {
                    return Err(bad(span, "at least one bucket bound is needed"));
                }
                d.buckets = Some(bounds);
            }
            _ => {
                let msg = if config_key(name).is_some() {
                    format!("key '{name}' is a patience setting: put it under [defaults], not [daemon]")
                } else {
                    let mut m = format!("unknown key '{name}' in [daemon]");
                    if let Some(near) = suggest(name, DAEMON_KEYS.iter().copied()) {
                        m.push_str(&format!("; did you mean '{near}'?"));
                    }
                    m
                };
                return Err(doc.error(key.span(), msg));
            }
        }
    }
    Ok(d)
}

/// `socket-mode`: `0o660` or the string `"0660"`/`"660"`. A decimal integer
/// above 7 is refused: `660` in TOML is six hundred sixty, not rw-rw----.
fn socket_mode(v: &DeValue<'_>) -> Result<u32, String> {
    let mode = match v {
        DeValue::Integer(i) if i.radix() == 10 && i.as_str().trim_start_matches('+').len() > 1 => {
            return Err(format!(
                "'{i}' is a decimal number; write the mode in octal: 0o{i} or \"{i}\""
            ))
        }
        DeValue::Integer(i) => u32::from_str_radix(i.as_str(), i.radix()).ok(),
        DeValue::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty() {
                None
            } else {
                u32::from_str_radix(digits, 8).ok()
            }
        }
        other => {
            return Err(format!(
                "expected an octal mode such as 0o660, found {}",
                type_name(other)
            ))
        }
    };
    match mode {
        Some(m) if m <= 0o777 => Ok(m),
        _ => Err("invalid mode (expected permission bits from 0o000 to 0o777, such as 0o660)".into()),
    }
}

/// `listen`: `ADDR:PORT` with an IP address or a host name (not resolved
/// here, so that reading the file never waits for DNS).
fn check_listen(s: &str) -> Result<(), String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let hint = "(expected ADDR:PORT such as 127.0.0.1:9977 or [::1]:9977)";
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(|c: char| c.is_whitespace() || c == ':' || c == '/')
                && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!("invalid listen address '{s}' {hint}")),
    }
}

/// The candidate nearest to `name`, if near enough to be a likely typo.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions (optimal string alignment), so
/// that `delya` is one step from `delay`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Color, Verbosity};
    use std::time::Duration;

    fn file(path: &str, text: &str) -> ConfigFile {
        parse_file(Path::new(path), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn file_err(text: &str) -> String {
        parse_file(Path::new("/c.toml"), text).unwrap_err().to_string()
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn cli(args: &[(&'static str, Option<&str>)]) -> Vec<(&'static str, Option<String>)> {
        args.iter().map(|(k, v)| (*k, v.map(String::from))).collect()
    }

    fn profile(name: &str) -> Option<(String, Source)> {
        Some((name.to_string(), Source::CommandLine))
    }

    const SYSTEM: &str = "[defaults]\nattempts = 4\ntimeout = \"10s\"\ndelay = \"2s\"\n\
                          [profile.quick]\ndelay = \"100ms\"\n";
    const USER: &str = "[defaults]\nattempts = 7\nbackoff = \"fixed\"\n\
                        [profile.quick]\nattempts = 2\n";

    #[test]
    fn user_file_over_system_file_over_defaults() {
        let files = [file("/etc/p.toml", SYSTEM), file("/home/u/p.toml", USER)];
        let r = build(&files, &[], None, &no_env, &[]).unwrap();
        assert_eq!(r.settings.attempts, 7);
        assert_eq!(r.source("attempts"), Source::File("/home/u/p.toml".into()));
        assert_eq!(r.settings.timeout, Some(Duration::from_secs(10)));
        assert_eq!(r.source("timeout"), Source::File("/etc/p.toml".into()));
        assert_eq!(r.settings.kill_after, Duration::from_secs(5));
        assert_eq!(r.source("kill-after"), Source::Default);
    }

    #[test]
    fn profiles_of_every_file_over_every_defaults() {
        let files = [file("/etc/p.toml", SYSTEM), file("/home/u/p.toml", USER)];
        let r = build(&files, &[], profile("quick"), &no_env, &[]).unwrap();
        // The system file's profile beats the user file's [defaults]: the
        // profile was asked for by name.
        assert_eq!(r.settings.backoff.base, Duration::from_millis(100));
        let quick_in = |f: &str| Source::Profile {
            name: "quick".into(),
            file: f.into(),
        };
        assert_eq!(r.source("delay"), quick_in("/etc/p.toml"));
        assert_eq!(r.settings.attempts, 2);
        assert_eq!(r.source("attempts"), quick_in("/home/u/p.toml"));
        assert_eq!(
            r.source("attempts").to_string(),
            "profile quick in /home/u/p.toml"
        );
        assert_eq!(r.source("backoff"), Source::File("/home/u/p.toml".into()));
    }

    #[test]
    fn environment_over_files_and_command_line_over_all() {
        let files = [file(
            "/u.toml",
            "[defaults]\ncolor = \"always\"\nsocket = \"/f.sock\"\n",
        )];
        let env = |k: &str| match k {
            "NO_COLOR" => Some(OsString::from("1")),
            "PATIENCE_SOCKET" => Some(OsString::from("/env.sock")),
            _ => None,
        };
        let r = build(&files, &[], None, &env, &[]).unwrap();
        assert_eq!(r.settings.color, Color::Never);
        assert_eq!(r.source("color"), Source::Env("NO_COLOR"));
        assert_eq!(r.settings.socket, Some(PathBuf::from("/env.sock")));
        assert_eq!(r.source("socket").to_string(), "env PATIENCE_SOCKET");
        let r = build(&files, &[], None, &env, &cli(&[("color", Some("always"))])).unwrap();
        assert_eq!(r.settings.color, Color::Always);
        assert_eq!(r.source("color"), Source::CommandLine);
        // An empty NO_COLOR is no NO_COLOR (no-color.org).
        let empty = |k: &str| (k == "NO_COLOR").then(OsString::new);
        let r = build(&files, &[], None, &empty, &[]).unwrap();
        assert_eq!(r.settings.color, Color::Always);
    }

    #[test]
    fn later_keys_in_a_table_win_in_file_order() {
        // The map sorts keys by name; "verbose" sorts after "quiet" but is
        // written first, so quiet must win.
        let r = build(
            &[file("/u.toml", "[defaults]\nverbose = true\nquiet = true\n")],
            &[],
            None,
            &no_env,
            &[],
        )
        .unwrap();
        assert_eq!(r.settings.verbosity, Verbosity::Quiet);
    }

    #[test]
    fn one_source_per_field_for_options_sharing_it() {
        let files = [file("/u.toml", "[defaults]\nforever = true\n")];
        let r = build(&files, &[], None, &no_env, &cli(&[("attempts", Some("5"))])).unwrap();
        assert_eq!(r.settings.attempts, 5);
        assert_eq!(r.source("attempts"), Source::CommandLine);
        assert!(!r.sources.contains_key("forever"));
        let r = build(&files, &[], None, &no_env, &[]).unwrap();
        assert_eq!(r.settings.attempts, 0);
        assert_eq!(r.source("forever"), Source::File("/u.toml".into()));
    }

    #[test]
    fn a_higher_layer_replaces_a_repeatable_list() {
        let a = |key, layer, n: usize| Assignment {
            key,
            values: (0..n)
                .map(|i| (Some(i.to_string()), Where::CommandLine))
                .collect(),
            layer,
            source: Source::Default,
        };
        let layers = [
            a("pat", 1, 2),
            a("delay", 1, 1),
            a("pat", 2, 0),
            a("delay", 3, 1),
            a("pat", 2, 1),
        ];
        let repeat = |k: &str| k == "pat";
        let kept: Vec<_> = effective(&layers, &repeat)
            .iter()
            .map(|a| (a.key, a.layer))
            .collect();
        // Layer 2 mentions "pat" (once with an empty array): layer 1's list
        // is dropped; non-repeatable keys all apply, later ones winning.
        assert_eq!(kept, [("delay", 1), ("pat", 2), ("delay", 3), ("pat", 2)]);
    }

    #[test]
    fn arrays_for_repeatable_options_apply_element_by_element() {
        let opt = Opt {
            long: "retry-pattern",
            short: None,
            value: Some("REGEX"),
            repeat: true,
            help: "",
        };
        let text = "x = [\n  \"a\",\n  \"b\",\n]\ny = \"one\"\nz = []\nw = [[\"no\"]]\n";
        let root = DeTable::parse(text).unwrap();
        let get = |k: &str| convert(&opt, root.get_ref().get(k).unwrap());
        let doc = Doc {
            path: Path::new("/c"),
            text,
        };
        let x = get("x").unwrap();
        assert_eq!(x.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            x.iter().map(|(_, s)| doc.line(s.clone())).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(get("y").unwrap()[0].0, "one");
        assert!(get("z").unwrap().is_empty());
        let (span, msg) = get("w").unwrap_err();
        assert_eq!(doc.line(span), 7);
        assert!(msg.contains("found an array"), "{msg}");
    }

    #[test]
    fn a_delay_list_from_a_string_or_an_array_and_never_under_a_chosen_backoff() {
        let secs = |v: &[u64]| v.iter().map(|&s| Duration::from_secs(s)).collect::<Vec<_>>();
        for text in [
            "[defaults]\ndelay = \"1s,5s,30s\"\n",
            "[defaults]\ndelay = [\"1s\", \"5s\", 30]\n",
            "[defaults]\ndelay = [1, 5.0, \"30s\"]\nbackoff = \"fixed\"\n",
        ] {
            let r = build(&[file("/c.toml", text)], &[], None, &no_env, &[]).unwrap();
            assert_eq!(r.settings.backoff.list, secs(&[1, 5, 30]), "{text}");
        }
        // A single element is a plain delay; a comma inside one is refused.
        let r = build(
            &[file("/c.toml", "[defaults]\ndelay = [\"2s\"]\n")],
            &[],
            None,
            &no_env,
            &[],
        )
        .unwrap();
        assert_eq!(
            (r.settings.backoff.base, r.settings.backoff.list.len()),
            (Duration::from_secs(2), 0)
        );
        let e = file_err("[defaults]\ndelay = [\"1s,2s\"]\n");
        assert!(
            e.contains("/c.toml:2") && e.contains("one duration per element"),
            "{e}"
        );
        let e = file_err("[defaults]\ndelay = [\"1s\", true]\n");
        assert!(e.contains("a duration in this array"), "{e}");
        let e = file_err("[defaults]\ndelay = \"1s,,2s\"\n");
        assert!(e.contains("/c.toml:2") && e.contains("'1s,,2s'"), "{e}");

        // A backoff someone chose, from either place, is an error naming both.
        let list_file = file("/c.toml", "[defaults]\ndelay = [\"1s\", \"5s\"]\n");
        let chosen = file("/b.toml", "[defaults]\nbackoff = \"linear\"\n");
        let cases: [(&[ConfigFile], Vec<_>); 3] = [
            (&[], cli(&[("delay", Some("1s,5s")), ("backoff", Some("jitter"))])),
            (
                std::slice::from_ref(&list_file),
                cli(&[("backoff", Some("exponential"))]),
            ),
            (std::slice::from_ref(&chosen), cli(&[("delay", Some("1s,5s"))])),
        ];
        for (files, args) in &cases {
            let e = build(files, &[], None, &no_env, args).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Usage(_)), "{msg}");
            assert!(
                msg.contains("delay '1s,5s'") && msg.contains("backoff '"),
                "{msg}"
            );
        }
        let both = [list_file, chosen];
        let e = build(&both, &[], None, &no_env, &[]).unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("/b.toml:2") && m.contains("/c.toml:2")),
            "{e}"
        );
        // The default exponential, and fixed, give way to the list.
        for args in [
            cli(&[("delay", Some("1s,5s"))]),
            cli(&[("backoff", Some("fixed")), ("delay", Some("1s,5s"))]),
        ] {
            let r = build(&[], &[], None, &no_env, &args).unwrap();
            assert_eq!(r.settings.backoff.list, secs(&[1, 5]));
        }
        // A single delay on the command line replaces a list from a file.
        let r = build(
            &both[..1],
            &[],
            None,
            &no_env,
            &cli(&[("delay", Some("3s")), ("backoff", Some("linear"))]),
        )
        .unwrap();
        assert!(r.settings.backoff.list.is_empty());
    }

    #[test]
    fn natural_toml_types_become_option_text() {
        let opt = |value, repeat| Opt {
            long: "x",
            short: None,
            value,
            repeat,
            help: "",
        };
        let text =
            "i = 0x1f\nf = 1e3\ng = 0.25\nb = false\ncodes = [0, 2]\nmixed = [0, \"2\"]\ns = \"30s\"\n";
        let root = DeTable::parse(text).unwrap();
        let conv = |o: &Opt, k: &str| {
            convert(o, root.get_ref().get(k).unwrap())
                .map(|v| v.into_iter().map(|(t, _)| t).collect::<Vec<_>>().join("|"))
                .map_err(|(_, m)| m)
        };
        let n = opt(Some("N"), false);
        let f = opt(Some("F"), false);
        let t = opt(Some("CODES"), false);
        let sw = opt(None, false);
        assert_eq!(conv(&n, "i").unwrap(), "31");
        assert!(conv(&n, "g")
            .unwrap_err()
            .contains("expected an integer, found a float"));
        assert!(conv(&n, "s").unwrap_err().contains("found a string"));
        assert_eq!(conv(&f, "f").unwrap(), "1000");
        assert_eq!(conv(&f, "g").unwrap(), "0.25");
        assert_eq!(conv(&sw, "b").unwrap(), "false");
        assert!(conv(&sw, "s").unwrap_err().contains("true or false"));
        assert_eq!(conv(&t, "codes").unwrap(), "0,2");
        assert_eq!(conv(&t, "s").unwrap(), "30s");
        assert_eq!(conv(&t, "i").unwrap(), "31");
        assert!(conv(&t, "mixed").unwrap_err().contains("code set"));
        assert!(conv(&t, "b").unwrap_err().contains("found a boolean"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = file_err("# c\n[defaults]\natempts = 5\n");
        assert!(
            e.starts_with("/c.toml:3: unknown key 'atempts' in [defaults]; did you mean 'attempts'?"),
            "{e}"
        );
        let e = file_err("[profile.quick]\n\ntimeout = true\n");
        assert!(
            e.starts_with("/c.toml:3: key 'timeout' in [profile.quick]: expected"),
            "{e}"
        );
        // A bad value in a profile nobody chose is still reported.
        let e = file_err("[profile.slow]\nbackoff = \"slowly\"\n");
        assert!(
            e.starts_with("/c.toml:2: key 'backoff' in [profile.slow]: unknown backoff"),
            "{e}"
        );
        let e = file_err("[defaults]\nattempts = 5\n[defualts]\n");
        assert!(
            e.starts_with("/c.toml:3: unknown table 'defualts'") && e.contains("'defaults'"),
            "{e}"
        );
        let e = file_err("timeout = \"5s\"\n");
        assert!(e.contains("/c.toml:1: key 'timeout' outside any table"), "{e}");
        let e = file_err("[defaults]\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.contains("[daemon]"), "{e}");
        let e = file_err("[daemon]\nattempts = 1\n");
        assert!(e.contains("[defaults]"), "{e}");
        let e = file_err("[defaults]\nprofile = \"q\"\n");
        assert!(e.contains("command-line option only"), "{e}");
    }

    #[test]
    fn syntax_errors_show_the_line() {
        let e = file_err("[defaults]\n\tattempts = = 5\n");
        assert!(e.starts_with("/c.toml:2:13: syntax error:"), "{e}");
        assert!(
            e.contains("    2 | \tattempts = = 5\n      | \t           ^"),
            "{e}"
        );
        let e = file_err("[defaults]\na = 1\na = 2\n");
        assert!(e.starts_with("/c.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_profiles_list_the_known_ones() {
        let files = [file("/etc/p.toml", SYSTEM), file("/u.toml", "[profile.slow]\n")];
        let e = build(&files, &[], profile("qiuck"), &no_env, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown profile 'qiuck'"), "{e}");
        assert!(
            e.contains("did you mean 'quick'") && e.contains("profiles: quick, slow"),
            "{e}"
        );
        let by_env = Some(("x".to_string(), Source::Env("PATIENCE_PROFILE")));
        let uses = [FileUse {
            path: "/nowhere.toml".into(),
            found: false,
        }];
        let e = build(&[], &uses, by_env, &no_env, &[]).unwrap_err().to_string();
        assert!(
            e.contains("(from PATIENCE_PROFILE)") && e.contains("/nowhere.toml"),
            "{e}"
        );
    }

    #[test]
    fn daemon_table() {
        let d = file(
            "/c.toml",
            "[daemon]\nsocket = \"/run/p.sock\"\nsocket-mode = 0o660\nlisten = \"[::1]:9977\"\n\
             state-file = \"/var/lib/p.json\"\nmax-series = 500\nbuckets = [0.1, 1, 10]\n",
        )
        .daemon;
        assert_eq!(
            d,
            DaemonConfig {
                socket: Some("/run/p.sock".into()),
                socket_mode: Some(0o660),
                listen: Some("[::1]:9977".into()),
                state_file: Some("/var/lib/p.json".into()),
                max_series: Some(500),
                buckets: Some(vec![0.1, 1.0, 10.0]),
            }
        );
        assert_eq!(
            file("/c.toml", "[daemon]\nsocket-mode = \"0640\"\n")
                .daemon
                .socket_mode,
            Some(0o640)
        );
        assert_eq!(
            file("/c.toml", "[daemon]\nlisten = \"localhost:80\"\n")
                .daemon
                .listen
                .as_deref(),
            Some("localhost:80")
        );
        for (bad, what) in [
            ("socket-mode = 660", "octal"),
            ("socket-mode = 0o1777", "0o777"),
            ("socket-mode = \"rw\"", "invalid mode"),
            ("listen = \"127.0.0.1\"", "ADDR:PORT"),
            ("listen = 9977", "found an integer"),
            ("max-series = 0", "at least 1"),
            ("buckets = [1, 1]", "increasing"),
            ("buckets = [-1]", "above 0"),
            ("buckets = []", "at least one"),
            ("buckets = [\"1s\"]", "found a string"),
            ("socket = \"\"", "empty"),
            ("max_series = 5", "did you mean 'max-series'"),
        ] {
            let e = file_err(&format!("[daemon]\n{bad}\n"));
            assert!(e.starts_with("/c.toml:2:") && e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn the_user_file_without_home_or_with_xdg() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(user_file(&env(&[])), None);
        assert_eq!(user_file(&env(&[("HOME", "")])), None);
        assert_eq!(
            user_file(&env(&[("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/patience/config.toml"))
        );
        assert_eq!(
            user_file(&env(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/x")])),
            Some(PathBuf::from("/x/patience/config.toml"))
        );
        // A relative XDG_CONFIG_HOME is invalid and ignored (XDG spec).
        assert_eq!(
            user_file(&env(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "rel")])),
            Some(PathBuf::from("/h/.config/patience/config.toml"))
        );
    }

    #[test]
    fn suggestions_are_for_near_names_only() {
        assert_eq!(distance("delya", "delay"), 1);
        assert_eq!(distance("max_delay", "max-delay"), 1);
        assert_eq!(distance("", "abc"), 3);
        let names = || OPTIONS.iter().map(|o| o.long);
        assert_eq!(suggest("timout", names()), Some("timeout"));
        assert_eq!(suggest("Attempts", names()), Some("attempts"));
        assert_eq!(suggest("retries", names()), None);
        assert_eq!(suggest("zz", names()), None);
    }
}
