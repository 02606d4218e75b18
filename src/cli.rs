//! The command line: a lexopt loop that turns argv into an `Invocation`
//! (what to do, the options given as name/value pairs, and the command),
//! plus the `--help` text. Validation of values happens in
//! `settings::apply`, shared with the config files.
//!
//! Options end at the first operand, as with `timeout`, `nice` and `env`:
//! `patience -a 5 cmd -a 1` gives `-a 1` to `cmd`.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::error::Error;
use crate::settings::{self, OPTIONS};

/// What patience was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Run,
    /// Print the resolved settings and schedule; run nothing.
    DryRun,
    Help,
    Version,
    /// `--state KEY`: print the shared state of KEY as JSON.
    ShowState(String),
    /// `--reset-state KEY`: clear the shared state of KEY.
    ResetState(String),
}

/// The command line, parsed but not yet validated into settings.
#[derive(Debug)]
pub struct Invocation {
    pub action: Action,
    /// Settings options in the order given: (long name, value or None for a
    /// switch). Later ones win, as usual.
    pub assignments: Vec<(&'static str, Option<String>)>,
    /// `--config PATH`: read only this file.
    pub config: Option<PathBuf>,
    /// `--no-config`: read no file at all.
    pub no_config: bool,
    /// `-p/--profile NAME`: the `[profile.NAME]` table to layer over `[defaults]`.
    pub profile: Option<String>,
    /// `--services FILE`: run the stack of FILE; the operands are service
    /// names, not a command (patience-services(5)).
    pub services: Option<PathBuf>,
    pub command: Vec<OsString>,
}

/// Parses patience's arguments (without argv[0]).
pub fn parse<I>(args: I) -> Result<Invocation, Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut parser = lexopt::Parser::from_args(args);
    let mut action = Action::Run;
    let mut assignments = Vec::new();
    let mut config = None;
    let mut no_config = false;
    let mut profile = None;
    let mut services = None;
    let mut command = Vec::new();
    while let Some(arg) = parser.next()? {
        let opt =
            match arg {
                Short('h') | Long("help") => {
                    action = Action::Help;
                    continue;
                }
                Short('V') | Long("version") => {
                    action = Action::Version;
                    continue;
                }
                Long("state") | Long("reset-state") => {
                    let show = arg == Long("state");
                    let key = parser.value()?.into_string().map_err(|raw| {
                        Error::Usage(format!("--state: the key {raw:?} is not valid UTF-8"))
                    })?;
                    let key = crate::state::parse_key(&key).map_err(Error::Usage)?;
                    action = if show {
                        Action::ShowState(key)
                    } else {
                        Action::ResetState(key)
                    };
                    continue;
                }
                Long("dry-run") => {
                    if action == Action::Run {
                        action = Action::DryRun;
                    }
                    continue;
                }
                Long("config") => {
                    let path = PathBuf::from(parser.value()?);
                    if path.as_os_str().is_empty() {
                        return Err(Error::Usage("--config: the path is empty".into()));
                    }
                    config = Some(path);
                    continue;
                }
                Long("no-config") => {
                    no_config = true;
                    continue;
                }
                Long("services") => {
                    let path = PathBuf::from(parser.value()?);
                    if path.as_os_str().is_empty() {
                        return Err(Error::Usage("--services: the path is empty".into()));
                    }
                    services = Some(path);
                    continue;
                }
                Short('p') | Long("profile") => {
                    let name = parser.value()?.into_string().map_err(|raw| {
                        Error::Usage(format!("--profile: the name {raw:?} is not valid UTF-8"))
                    })?;
                    if name.is_empty() {
                        return Err(Error::Usage("--profile: the name is empty".into()));
                    }
                    profile = Some(name);
                    continue;
                }
                Value(first) => {
                    command.push(first);
                    command.extend(parser.raw_args()?);
                    break;
                }
                Short(c) => OPTIONS.iter().find(|o| o.short == Some(c)),
                Long(name) => settings::find(name),
            };
        let Some(opt) = opt else {
            return Err(arg.unexpected().into());
        };
        let value = match opt.value {
            None => None,
            Some(_) => {
                let raw = parser.value()?;
                let text = raw.into_string().map_err(|raw| {
                    Error::Usage(format!("--{}: the value {raw:?} is not valid UTF-8", opt.long))
                })?;
                Some(text)
            }
        };
        assignments.push((opt.long, value));
    }
    let inv = Invocation {
        action,
        assignments,
        config,
        no_config,
        profile,
        services,
        command,
    };
    if inv.action == Action::Help || inv.action == Action::Version {
        return Ok(inv);
    }
    if inv.no_config && inv.config.is_some() {
        return Err(Error::Usage("--config and --no-config exclude each other".into()));
    }
    if inv.no_config && inv.profile.is_some() {
        return Err(Error::Usage(
            "--profile needs a config file, but --no-config reads none".into(),
        ));
    }
    match inv.command.first() {
        // The operands of --services are service names, none meaning all.
        _ if inv.services.is_some() => {}
        // The state actions read the config (for its state-dir) but run nothing.
        _ if matches!(inv.action, Action::ShowState(_) | Action::ResetState(_)) => {}
        None => return Err(Error::Usage("no command given".into())),
        Some(c) if c.is_empty() => return Err(Error::Usage("the command is an empty string".into())),
        Some(_) => {}
    }
    Ok(inv)
}

/// The `--help` text, built from the same table the parser uses so the two
/// cannot drift apart.
pub fn help() -> String {
    let mut out = String::from(
        "Usage: patience [OPTIONS] [--] COMMAND [ARG...]\n\
         Run COMMAND, and run it again when it fails.\n\nOptions:\n",
    );
    let mut line = |short: Option<char>, long: &str, value: Option<&str>, help: &str| {
        let short = short.map(|c| format!("-{c}, ")).unwrap_or_else(|| "    ".into());
        let value = value.map(|v| format!(" {v}")).unwrap_or_default();
        let left = format!("  {short}--{long}{value}");
        out.push_str(&format!("{left:<30} {help}\n"));
    };
    for o in OPTIONS {
        line(o.short, o.long, o.value, o.help);
    }
    line(
        Some('p'),
        "profile",
        Some("NAME"),
        "layer [profile.NAME] of the config file over [defaults]",
    );
    line(
        None,
        "config",
        Some("PATH"),
        "read only this config file (see patience.toml(5))",
    );
    line(None, "no-config", None, "read no config file");
    line(
        None,
        "services",
        Some("FILE"),
        "run the stack of services in FILE; operands name services (patience-services(5))",
    );
    line(
        None,
        "dry-run",
        None,
        "print the resolved settings and delays; run nothing",
    );
    line(
        None,
        "state",
        Some("KEY"),
        "print the shared state of KEY as JSON; run nothing",
    );
    line(
        None,
        "reset-state",
        Some("KEY"),
        "clear the shared state of KEY; run nothing",
    );
    line(Some('h'), "help", None, "print this help");
    line(Some('V'), "version", None, "print the version");
    out.push_str(
        "\nDurations: 250ms, 1.5s, 1m30s, 2h, 1d; a bare number is seconds.\n\
         \nExit status: 0 success; the last attempt's code when the run failed; 1 failed on\n\
         an output pattern although it exited 0; 124 timed out; 125 patience's own\n\
         error; 126 not executable; 127 not found; 128+N killed by signal N; 75\n\
         refused before running (--refused-exit). After a SIGTERM, SIGINT or SIGQUIT\n\
         passed on to a running attempt: that attempt's own status.\n\
         \nSee patience(1) for the full manual.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Invocation {
        parse(args.iter().copied()).unwrap()
    }

    #[test]
    fn options_stop_at_the_command() {
        let inv = parse_ok(&["-a", "5", "cmd", "-a", "1", "--timeout", "3"]);
        assert_eq!(inv.assignments, [("attempts", Some("5".to_string()))]);
        assert_eq!(inv.command, ["cmd", "-a", "1", "--timeout", "3"]);
    }

    #[test]
    fn double_dash_and_joined_forms() {
        let inv = parse_ok(&["--timeout=2s", "-k1", "-vq", "--", "-weird"]);
        assert_eq!(
            inv.assignments,
            [
                ("timeout", Some("2s".to_string())),
                ("kill-after", Some("1".to_string())),
                ("verbose", None),
                ("quiet", None)
            ]
        );
        assert_eq!(inv.command, ["-weird"]);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err().to_string();
        assert!(err(&["--nope", "x"]).contains("--nope"));
        assert!(err(&["--timeout"]).contains("--timeout"));
        assert!(err(&[]).contains("no command"));
        assert!(err(&[""]).contains("empty"));
    }

    #[test]
    fn config_options_are_not_settings() {
        let inv = parse_ok(&["-p", "quick", "--config", "/x.toml", "-a", "2", "cmd"]);
        assert_eq!(inv.profile.as_deref(), Some("quick"));
        assert_eq!(inv.config, Some(PathBuf::from("/x.toml")));
        assert!(!inv.no_config);
        assert_eq!(inv.assignments, [("attempts", Some("2".to_string()))]);
        assert!(parse_ok(&["--no-config", "cmd"]).no_config);
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err().to_string();
        assert!(err(&["--config", "/x", "--no-config", "cmd"]).contains("exclude"));
        assert!(err(&["--no-config", "--profile=q", "cmd"]).contains("--profile"));
        assert!(err(&["--config=", "cmd"]).contains("--config"));
        assert!(err(&["--profile", "", "cmd"]).contains("--profile"));
    }

    #[test]
    fn help_and_version_need_no_command() {
        assert_eq!(parse_ok(&["--help"]).action, Action::Help);
        assert_eq!(parse_ok(&["-V"]).action, Action::Version);
    }

    #[test]
    fn state_actions_need_no_command() {
        assert_eq!(parse_ok(&["--state", "k"]).action, Action::ShowState("k".into()));
        assert_eq!(
            parse_ok(&["--reset-state=k"]).action,
            Action::ResetState("k".into())
        );
        assert!(parse(["--state"]).is_err());
        assert!(parse(["--state", ""]).is_err());
    }

    #[test]
    fn help_lists_every_option() {
        let h = help();
        for o in OPTIONS {
            assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
        }
        for long in ["--config", "--no-config", "--profile", "--dry-run"] {
            assert!(h.contains(long), "{long}");
        }
    }
}
