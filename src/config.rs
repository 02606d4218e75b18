//! Resolving the settings of a run from every source, lowest first: built-in
//! defaults, then the command line. Each setting remembers where it came
//! from, for `--dry-run`.

use std::collections::BTreeMap;

use crate::cli::Invocation;
use crate::error::Error;
use crate::settings::Settings;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    CommandLine,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::CommandLine => f.write_str("command line"),
        }
    }
}

/// The settings of a run and the source of each one that was set.
#[derive(Debug)]
pub struct Resolved {
    pub settings: Settings,
    /// Long option name → where its value came from; absent means default.
    pub sources: BTreeMap<&'static str, Source>,
}

impl Resolved {
    /// Where option `long` got its value.
    pub fn source(&self, long: &str) -> Source {
        self.sources.get(long).cloned().unwrap_or(Source::Default)
    }
}

/// Builds the run's settings from the invocation.
pub fn resolve(inv: &Invocation) -> Result<Resolved, Error> {
    let mut settings = Settings {
        command: inv.command.clone(),
        ..Settings::default()
    };
    let mut sources = BTreeMap::new();
    for (long, value) in &inv.assignments {
        settings.apply(long, value.as_deref()).map_err(|e| match value {
            Some(v) => Error::Usage(format!("--{long} '{v}': {e}")),
            None => Error::Usage(format!("--{long}: {e}")),
        })?;
        sources.insert(*long, Source::CommandLine);
    }
    Ok(Resolved { settings, sources })
}
