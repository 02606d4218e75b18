//! `patience --services FILE [SERVICE...]`: a stack of services under one
//! patience (patience-services(5), SERVICES.md).
//!
//! - [`file`]: the services file, validated before anything runs;
//! - [`graph`]: dependency conditions, cycles, start order, selection;
//! - [`shim`]: the line protocol between the supervisor and each service's
//!   shim, which is plain patience re-executed with the service's settings;
//! - [`logs`]: the shims' output, prefixed and written a whole line at once;
//! - [`control`]: the control socket and JSON-RPC framing;
//! - [`ctl`]: `patiencectl`, the control client;
//! - [`methods`]: what each control method does to the stack;
//! - [`metrics`]: the `service` datagrams to patienced;
//! - [`probe`]: readiness checks (command, TCP, HTTP; patterns are read in
//!   logs);
//! - [`health`]: health checks once an attempt is ready;
//! - [`notify`]: sd_notify, from the services and to patience's manager;
//! - [`slot`]: the stack's own slot of a key (`[supervisor] max-concurrent`);
//! - [`summary`]: the stack's `summary-json` document;
//! - [`supervisor`]: the event loop that owns all state.
//!
//! This module turns the file into a [`Plan`]: per service, its resolved
//! settings (through `config`, the same layers and validator as
//! patience.toml(5)) and the shim's command line; `--dry-run` prints it.

pub mod control;
pub mod ctl;
pub mod file;
pub mod graph;
pub mod health;
pub mod logs;
pub mod methods;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod shim;
pub mod slot;
pub mod summary;
pub mod supervisor;

use std::ffi::OsString;

use crate::child::Inherited;
use crate::cli::{Action, Invocation};
use crate::config::{self, Resolved, Source};
use crate::error::Error;
use crate::settings::{Settings, StdinMode, Verbosity};

use file::Stack;

/// Command-line options `--services` takes: they are the group's.
pub const GROUP_OPTIONS: &[&str] = &[
    "quiet",
    "verbose",
    "color",
    "no-metrics",
    "hold-output",
    "summary-json",
];

/// Options that are the stack's in `[supervisor]` but would be ambiguous on
/// the command line (the stack's slot or every service's?): refused there,
/// naming both tables.
const SLOT_OPTIONS: &[&str] = &["key", "max-concurrent", "slot-wait"];

/// A shim's arguments (after the binary) and its extra environment.
pub type ShimCommand = (Vec<OsString>, Vec<(OsString, OsString)>);

/// Everything the supervisor needs, resolved and validated.
pub struct Plan {
    pub stack: Stack,
    /// Per service, in file order.
    pub resolved: Vec<Resolved>,
    pub edges: graph::Edges,
    pub wanted: Vec<bool>,
    pub order: Vec<usize>,
    /// The group's settings (verbosity, colour, hold-output, summary-json).
    pub group: Settings,
    /// The stack's own slot, when `[supervisor]` sets `max-concurrent`.
    pub slot: Option<crate::state::Policy>,
    /// Per service: the shim's arguments (after the binary) and the
    /// environment it gets on top of the supervisor's.
    pub shims: Vec<ShimCommand>,
}

/// Runs `--services` and returns the exit status.
pub fn main(inv: &Invocation, inherited: &Inherited) -> Result<i32, Error> {
    let plan = plan(inv)?;
    if inv.action == Action::DryRun {
        let text = dry_run(&plan);
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        return Ok(0);
    }
    let summary = plan
        .group
        .summary_json
        .as_deref()
        .map(crate::report::JsonOut::open)
        .transpose()?;
    supervisor::run(plan, inherited, summary)
}

/// Validates the invocation and the file and resolves every service.
pub fn plan(inv: &Invocation) -> Result<Plan, Error> {
    let path = inv.services.as_ref().expect("called for --services");
    for (key, _) in &inv.assignments {
        if SLOT_OPTIONS.contains(key) {
            return Err(Error::Usage(format!(
                "--{key}: with --services, put `{key} = …` in [supervisor] of {} for the stack itself, or in [defaults] or a [service.NAME] table for its services",
                path.display()
            )));
        }
        if !GROUP_OPTIONS.contains(key) {
            return Err(Error::Usage(format!(
                "--{key} is a per-run option: with --services, put `{key} = …` in [defaults] or a [service.NAME] table of {}",
                path.display()
            )));
        }
    }
    if inv.profile.is_some() {
        return Err(Error::Usage(format!(
            "--profile: with --services, give a service `profile = \"NAME\"` in {}",
            path.display()
        )));
    }
    let mut names = Vec::new();
    for n in &inv.command {
        match n.to_str() {
            Some(s) => names.push(s.to_string()),
            None => return Err(Error::Usage(format!("service name {n:?} is not valid UTF-8"))),
        }
    }
    let stack = file::load(path)?;
    graph::check_cycles(&stack)?;
    let group_resolved = config::resolve_stacked(
        inv,
        std::slice::from_ref(&stack.group.layer),
        None,
        &[],
        &inv.assignments,
    )?;
    let in_supervisor = |key: &str| group_resolved.source(key) == stack.group.layer.source;
    let mut group = group_resolved.settings.clone();
    // A path in the file is relative to the file, as log-dir is.
    if in_supervisor("summary-json") {
        if let Some(p) = &group.summary_json {
            group.summary_json = Some(file::relative_to_file(&stack.path, p));
        }
    }
    let slot = slot::policy(&stack, &group, &in_supervisor)?;
    let mut resolved = Vec::new();
    for s in &stack.services {
        let profile = s.profile.clone().map(|p| {
            (
                p,
                Source::Table {
                    table: format!("[service.{}]", s.name),
                    file: stack.path.clone(),
                },
            )
        });
        let mut r = config::resolve_stacked(
            inv,
            std::slice::from_ref(&stack.defaults),
            profile,
            std::slice::from_ref(&s.layer),
            &[],
        )?;
        r.settings.command = s.command.clone();
        if r.settings.name.is_none() {
            r.settings.name = Some(match &stack.group.name {
                Some(g) => format!("{g}.{}", s.name),
                None => s.name.clone(),
            });
        }
        if !r.sources.contains_key("stdin") {
            r.settings.stdin = StdinMode::Null;
        }
        r.settings.init = true;
        r.settings.verbosity = group.verbosity;
        resolved.push(r);
    }
    let settings: Vec<Settings> = resolved.iter().map(|r| r.settings.clone()).collect();
    let edges = graph::conditions(&stack, &settings)?;
    let wanted = graph::select(&stack, &names)?;
    let order = graph::start_order(&edges, &wanted);
    let shims = stack
        .services
        .iter()
        .zip(&resolved)
        .map(|(s, r)| shim_command(s, r, &group))
        .collect();
    Ok(Plan {
        stack,
        resolved,
        edges,
        wanted,
        order,
        group,
        slot,
        shims,
    })
}

/// The patience command line that runs service `s` as a user could by
/// hand, and the environment it needs beyond the supervisor's.
fn shim_command(
    s: &file::Service,
    r: &Resolved,
    group: &Settings,
) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
    let mut args: Vec<String> = vec!["--no-config".into(), "--init".into()];
    match group.verbosity {
        Verbosity::Quiet => args.push("--quiet".into()),
        Verbosity::Verbose => args.push("--verbose".into()),
        Verbosity::Normal => {}
    }
    args.push(format!("--name={}", r.settings.run_name()));
    if !r.sources.contains_key("stdin") {
        args.push("--stdin=null".into());
    }
    // Explicit, so that the shim escalates the stop signal it is asked to
    // pass on after the service's own grace.
    args.push(format!(
        "--kill-after={}",
        crate::duration::format(r.settings.kill_after)
    ));
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let switch = |key: &str| crate::settings::find(key).is_some_and(|o| o.value.is_none());
    let last_switch = |key: &str| {
        r.applied
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.clone())
    };
    for (i, (key, value)) in r.applied.iter().enumerate() {
        if GROUP_OPTIONS.contains(key) && *key != "no-metrics" {
            continue;
        }
        match *key {
            "socket" => env.push(("PATIENCE_SOCKET".into(), value.clone().unwrap_or_default().into())),
            "state-dir" => env.push((
                "PATIENCE_STATE_DIR".into(),
                value.clone().unwrap_or_default().into(),
            )),
            // Not on the command line, where every user could read a
            // password in it.
            "state-url" => env.push((
                "PATIENCE_STATE_URL".into(),
                value.clone().unwrap_or_default().into(),
            )),
            "name" | "init" | "foreground" | "kill-after" => {}
            k if switch(k) => {
                let last = r.applied.iter().rposition(|(kk, _)| kk == key);
                if last == Some(i) && last_switch(k).as_deref() != Some("false") {
                    args.push(format!("--{k}"));
                }
            }
            k => args.push(format!("--{k}={}", value.clone().unwrap_or_default())),
        }
    }
    // The group's no-metrics (its [supervisor] key, or --no-metrics) holds
    // for every shim, whatever a service's own table says.
    if group.no_metrics && !args.iter().any(|a| a == "--no-metrics") {
        args.push("--no-metrics".into());
    }
    let mut argv: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    argv.push("--".into());
    argv.extend(s.command.iter().cloned());
    env.push(("PATIENCE_SERVICE".into(), s.name.clone().into()));
    for (k, v) in &s.env {
        env.push((k.into(), v.into()));
    }
    (argv, env)
}

/// One argument as a POSIX shell would need it written.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./=:,+-@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The `--dry-run` text of a stack.
pub fn dry_run(plan: &Plan) -> String {
    let st = &plan.stack;
    let name = |i: usize| st.services[i].name.as_str();
    let mut out = format!("services file: {}\n", st.path.display());
    if let Some(g) = &st.group.name {
        out.push_str(&format!("stack: {g}\n"));
    }
    let order: Vec<&str> = plan.order.iter().map(|&i| name(i)).collect();
    out.push_str(&format!("start order: {}\n", order.join(", ")));
    let idle: Vec<&str> = (0..st.services.len())
        .filter(|&i| !plan.wanted[i])
        .map(name)
        .collect();
    if !idle.is_empty() {
        out.push_str(&format!("not started: {}\n", idle.join(", ")));
    }
    out.push_str(&format!(
        "main: {}\nexit: {}\nshutdown: {}\n",
        st.group.main.as_deref().unwrap_or("none"),
        match st.group.exit {
            file::ExitRule::All => "all",
            file::ExitRule::Any => "any",
        },
        if st.group.parallel_shutdown {
            "parallel"
        } else {
            "ordered"
        }
    ));
    if let Some(p) = &plan.slot {
        out.push_str(&format!(
            "stack slot: key '{}', max-concurrent {}, slot-wait {}, refused-exit {}\n",
            p.key,
            p.limits.max_concurrent.unwrap_or(0),
            crate::duration::format(p.slot_wait),
            plan.group.refused_exit
        ));
    }
    if let Some(path) = &plan.group.summary_json {
        out.push_str(&format!("summary-json: {}\n", path.display()));
    }
    for &i in plan.order.iter().chain(
        (0..st.services.len())
            .filter(|i| !plan.wanted[*i])
            .collect::<Vec<_>>()
            .iter(),
    ) {
        let s = &st.services[i];
        out.push_str(&format!("\n[service.{}]\n", s.name));
        let deps: Vec<String> = plan.edges[i]
            .iter()
            .map(|(d, c)| {
                let short = s.deps.iter().any(|e| e.name == name(*d) && e.cond.is_none());
                let again = s.deps.iter().any(|e| e.name == name(*d) && e.restart);
                format!(
                    "{} {}{}{}",
                    name(*d),
                    c.word(),
                    if short { " (short form)" } else { "" },
                    if again { " (propagate restart)" } else { "" }
                )
            })
            .collect();
        out.push_str(&format!(
            "depends-on: {}\n",
            if deps.is_empty() {
                "none".into()
            } else {
                deps.join(", ")
            }
        ));
        out.push_str(&format!("autostart: {}\ncritical: {}\n", s.autostart, s.critical));
        let ready = match &s.ready {
            None => "none (ready = started)".to_string(),
            Some(file::Ready::Pattern(p)) => format!("pattern {:?}", p.source),
            Some(file::Ready::Command(c)) => {
                let c: Vec<String> = c.iter().map(|a| shell_quote(&a.to_string_lossy())).collect();
                format!("command {}", c.join(" "))
            }
            Some(file::Ready::Tcp(a)) => format!("tcp {a}"),
            Some(file::Ready::Http(u)) => format!("http {u}"),
            Some(file::Ready::Fd(n)) => format!("fd {n}"),
            Some(file::Ready::Notify) => "notify (NOTIFY_SOCKET of its own)".to_string(),
        };
        out.push_str(&format!("readiness: {ready}\n"));
        if let Some(h) = &s.health {
            let check = match &h.check {
                file::Check::Command(c) => {
                    let c: Vec<String> = c.iter().map(|a| shell_quote(&a.to_string_lossy())).collect();
                    format!("command {}", c.join(" "))
                }
                file::Check::Tcp(a) => format!("tcp {a}"),
                file::Check::Http(u) => format!("http {u}"),
            };
            let d = crate::duration::format;
            out.push_str(&format!(
                "health: {check} every {} within {}, {} failures in a row end the attempt, grace {}\n",
                d(h.interval),
                d(h.timeout),
                h.failures,
                d(h.grace)
            ));
        }
        if let Some(t) = s.ready_timeout {
            out.push_str(&format!("ready-timeout: {}\n", crate::duration::format(t)));
        }
        let (argv, env) = &plan.shims[i];
        let mut line: Vec<String> = env
            .iter()
            .filter(|(k, _)| k != "PATIENCE_SERVICE")
            .map(|(k, v)| {
                let mut v = v.to_string_lossy().into_owned();
                // What --dry-run prints never holds a password.
                if k == "PATIENCE_STATE_URL" {
                    v = crate::state::url::redact(&v);
                }
                format!("{}={}", k.to_string_lossy(), shell_quote(&v))
            })
            .collect();
        if s.clear_env {
            line.insert(0, "env -i".into());
        }
        if !line.is_empty() && !s.clear_env {
            line.insert(0, "env".into());
        }
        line.push("patience".into());
        line.extend(argv.iter().map(|a| shell_quote(&a.to_string_lossy())));
        if let Some(cwd) = &s.cwd {
            out.push_str(&format!("cwd: {}\n", cwd.display()));
        }
        out.push_str(&format!("command line: {}\n", line.join(" ")));
        for l in crate::report::dry_run(&plan.resolved[i]).lines() {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
