//! `patience --textfile-dir DIR`: the run's metrics, the families patienced
//! serves, written to `DIR/NAME.prom` for node_exporter's textfile
//! collector, so that cron users who run node_exporter get the same alerts
//! without the daemon, and a run is counted even when no daemon is up.
//!
//! Counters must keep counting from run to run, so the command's state is
//! kept beside the file, hidden from the collector (`.NAME.prom.state`, the
//! state file format of patienced), under a lock, and the `.prom` file is
//! rendered from it. Both are written atomically (a unique temp file and a
//! rename), as the collector requires: it must never read half a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::aggregate::{Aggregate, DEFAULT_BUCKETS};
use super::{exposition, persist};
use crate::metrics;
use crate::outcome::Outcome;

/// `name` as a file name: what is not a letter, a digit, `.`, `_` or `-`
/// becomes `_` (two names may then share a file; each keeps its series,
/// as the state holds the real names).
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match stem.trim_start_matches('.') {
        "" => "_".to_string(),
        s => s.to_string(),
    }
}

/// Checks before the run that `dir` is a directory, so that a typo is
/// status 125 rather than a run whose metrics go nowhere.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("--textfile-dir {}: not a directory", dir.display())),
        Err(e) => Err(format!("--textfile-dir {}: {e}", dir.display())),
    }
}

/// Adds the finished run (its attempts, as far as `outcome` keeps them, and
/// itself) to `DIR/NAME.prom`; `exit_status` is what patience exits with.
/// The error is one line for stderr.
pub fn write(dir: &Path, outcome: &Outcome, exit_status: i32) -> Result<PathBuf, String> {
    let stem = file_stem(metrics::truncate_name(&outcome.name));
    let prom = dir.join(format!("{stem}.prom"));
    let state = dir.join(format!(".{stem}.prom.state"));
    let lock = dir.join(format!(".{stem}.prom.lock"));
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("--textfile-dir: cannot {what} {}: {e}", prom.display())
    };
    let lock_file =
        crate::sys::open_private(&lock, crate::sys::OpenMode::Lock).map_err(|e| fail("lock", &e))?;
    // Another run of the same name holds it for a moment at most.
    let until = Instant::now() + Duration::from_secs(2);
    while !crate::sys::try_lock_exclusive(&lock_file).map_err(|e| fail("lock", &e))? {
        if Instant::now() >= until {
            return Err(fail("lock", &"another patience holds the lock"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // One command, a few hundred series at most: the bound only sizes the
    // read of the state.
    let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 10_000);
    persist::load(&state, &mut agg)?;
    let now = super::unix_now();
    for a in &outcome.attempts {
        agg.record(metrics::decode(&metrics::encode_attempt(&outcome.name, a)), now);
    }
    agg.record(metrics::decode(&metrics::encode_run(outcome, exit_status)), now);
    let snap = agg.snapshot();
    persist::write(&state, &persist::serialize(&snap)).map_err(|e| fail("write the state of", &e))?;
    let mut text = Vec::new();
    exposition::render_families(&snap, None, &mut text);
    persist::write(&prom, &text).map_err(|e| fail("write", &e))?;
    crate::sys::unlock(&lock_file);
    Ok(prom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_file_names() {
        assert_eq!(file_stem("nightly-backup_2.x"), "nightly-backup_2.x");
        assert_eq!(file_stem("a/b c\n"), "a_b_c_");
        assert_eq!(file_stem("../../etc"), "_.._etc");
        assert_eq!(file_stem("..."), "_");
    }
}
