//! patience from start to exit status: parse, resolve, run, report. The
//! binary's `main` only prepares the process and calls `main` here.

use std::io::Write;

use crate::child::Inherited;
use crate::cli::{self, Action};
use crate::config;
use crate::error::{Error, EXIT_INTERNAL};
use crate::executor;
use crate::metrics;
use crate::report::{self, Reporter};

/// Runs patience with `args` (without argv[0]) and returns the exit status.
pub fn main(args: Vec<std::ffi::OsString>, inherited: Inherited) -> i32 {
    // patiencectl is this binary by another name (a symlink), and
    // `patience --ctl` the same for images that copy one file.
    let called = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&called).file_name() == Some("patiencectl".as_ref()) {
        return crate::services::ctl::main(args);
    }
    if args.first().is_some_and(|a| a == "--ctl") {
        return crate::services::ctl::main(args.into_iter().skip(1).collect());
    }
    crate::services::shim::adopt();
    match run(args, inherited) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "patience: {e}");
            EXIT_INTERNAL
        }
    }
}

fn run(args: Vec<std::ffi::OsString>, inherited: Inherited) -> Result<i32, Error> {
    let inv = cli::parse(args)?;
    if inv.services.is_some() && matches!(inv.action, Action::Run | Action::DryRun) {
        return crate::services::main(&inv, &inherited);
    }
    match &inv.action {
        Action::Help => return Ok(print(&cli::help())),
        Action::Version => return Ok(print(&format!("patience {}\n", env!("CARGO_PKG_VERSION")))),
        Action::DryRun | Action::Run | Action::ShowState(_) | Action::ResetState(_) => {}
    }
    let resolved = config::resolve(&inv)?;
    // The state actions need the settings for the store only.
    let place = crate::state::StoreAt {
        state_dir: resolved.settings.state_dir.as_deref(),
        state_url: resolved.settings.state_url.as_ref(),
        password_file: resolved.settings.state_url_password_file.as_deref(),
    };
    match &inv.action {
        Action::ShowState(key) => return Ok(print(&crate::state::show_in(key, &place)?)),
        Action::ResetState(key) => {
            crate::state::reset_in(key, &place)?;
            return Ok(0);
        }
        _ => {}
    }
    if inv.action == Action::DryRun {
        return Ok(print(&report::dry_run(&resolved)));
    }
    let settings = &resolved.settings;
    let json = settings
        .summary_json
        .as_deref()
        .map(report::JsonOut::open)
        .transpose()?;
    if let Some(dir) = &settings.textfile_dir {
        crate::daemon::textfile::check_dir(dir).map_err(Error::Internal)?;
    }
    let mut reporter = Reporter::new(settings);
    let outcome = executor::run(settings, &inherited, &mut reporter)?;
    reporter.finished(&outcome, settings.summary);
    if let Some(json) = json {
        json.write(&outcome, settings);
    }
    let status = report::exit_status(&outcome, settings.refused_exit);
    metrics::Sender::for_settings(settings).run(&outcome, status);
    if let Some(dir) = &settings.textfile_dir {
        // Like the daemon's datagrams, it never changes the exit status.
        if let Err(e) = crate::daemon::textfile::write(dir, &outcome, status) {
            let _ = writeln!(std::io::stderr().lock(), "patience: {e}");
        }
    }
    Ok(status)
}

/// Prints `text` on stdout. A closed stdout (`patience --help | head -1`)
/// is not an error worth a message, and never a panic.
fn print(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    0
}
