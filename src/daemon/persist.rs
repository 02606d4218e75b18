//! `--state-file`: the counters, histograms and last-run timestamps saved as
//! JSON so they survive a restart. Written atomically (a unique temp file
//! created `O_EXCL|O_NOFOLLOW` beside the file, or beside its target when it
//! is a symlink; fsync, rename, fsync of the directory), so a crash leaves
//! the old file or the new one, never half of one. Read only from a regular
//! file, with a size limit. A file that cannot be understood is renamed
//! aside and reported, never fatal; a command that cannot be, left out.
//!
//! The daemon's own counters (`patienced_*`) describe one process and start
//! again from zero, as Prometheus expects of a restarted target.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, Command, Histogram, LastRun, Runs, Snapshot, MAX_RUNNING};
use crate::metrics::{ExitLabel, Status};

const FILE_VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    v: u64,
    buckets: Vec<f64>,
    commands: Vec<Saved>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    name: String,
    #[serde(default)]
    runs: BTreeMap<String, SavedRuns>,
    #[serde(default)]
    attempts: BTreeMap<String, u64>,
    #[serde(default)]
    run_duration: Option<SavedHistogram>,
    #[serde(default)]
    attempt_duration: Option<SavedHistogram>,
    #[serde(default)]
    last_run: Option<SavedLastRun>,
    /// Runs in progress: [pid, start].
    #[serde(default)]
    running: Vec<(u64, f64)>,
    /// When a datagram last came for it (0: not saved, an older file).
    #[serde(default)]
    seen: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedLastRun {
    ts: f64,
    exit_code: i32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRuns {
    count: u64,
    /// null for a counter born at zero.
    last: Option<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedHistogram {
    counts: Vec<u64>,
    #[serde(with = "sum")]
    sum: f64,
}

/// A histogram's sum, which can overflow to +Inf: JSON has no infinity
/// (serde_json would write `null`), so it is written `"+Inf"`, as in the
/// exposition, and both that and `null` read back as +Inf.
mod sum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_str("+Inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Sum {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Sum::deserialize(d)? {
            Sum::Number(x) => Ok(x),
            Sum::Text(t) if t == "+Inf" => Ok(f64::INFINITY),
            Sum::Null(()) => Ok(f64::INFINITY),
            Sum::Text(t) => Err(serde::de::Error::custom(format!("bad sum {t:?}"))),
        }
    }
}

/// The file as read: each command is checked on its own, so one that
/// cannot be read never takes the others with it.
#[derive(Deserialize)]
struct FileIn {
    v: u64,
    buckets: Vec<f64>,
    commands: Vec<serde_json::Value>,
}

/// What loading found, for the start-up log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub commands: usize,
    /// Commands left out because of `--max-series`.
    pub over_limit: usize,
    /// Histograms left out because the buckets changed since they were saved.
    pub histograms_dropped: bool,
    /// Where a file that could not be read as state was moved.
    pub set_aside: Option<(PathBuf, String)>,
    /// Saved commands that could not be read, and why the first one not;
    /// the file was copied to `set_aside`'s path, the rest loaded.
    pub bad: Option<(usize, String)>,
}

/// The state as JSON bytes, from a snapshot (so without the lock).
pub fn serialize(agg: &Snapshot) -> Vec<u8> {
    let commands = agg
        .commands
        .iter()
        .map(|(name, c)| Saved {
            name: name.to_string(),
            runs: Status::ALL
                .iter()
                .filter_map(|s| {
                    c.runs[s.index()].map(|r| {
                        (
                            s.as_str().to_string(),
                            SavedRuns {
                                count: r.count,
                                last: r.last,
                            },
                        )
                    })
                })
                .collect(),
            attempts: c.attempts.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
            run_duration: c.run_duration.as_ref().map(save_histogram),
            attempt_duration: c.attempt_duration.as_ref().map(save_histogram),
            last_run: c.last_run.map(|l| SavedLastRun {
                ts: l.ts,
                exit_code: l.exit_code,
            }),
            running: c.running.clone(),
            seen: c.seen,
        })
        .collect();
    let file = File {
        v: FILE_VERSION,
        buckets: agg.buckets.to_vec(),
        commands,
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

fn save_histogram(h: &Histogram) -> SavedHistogram {
    SavedHistogram {
        counts: h.counts.to_vec(),
        sum: h.sum,
    }
}

/// What `path` names once symbolic links are followed, even to a file that
/// does not exist yet: a symlinked state file stays a symlink, and its
/// target is what is written.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The start of the names of `target`'s temp files: `.NAME.tmp-`.
fn temp_prefix(target: &Path) -> std::io::Result<String> {
    let name = target.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
    Ok(format!(".{}.tmp-", name.to_string_lossy()))
}

/// Creates a new temp file beside `target`, named `.NAME.tmp-PID-N-NANOS`:
/// `O_EXCL|O_NOFOLLOW`, so that nothing planted at a name (a file, a
/// symlink) is ever opened, and unique, so that two writers never share one.
fn create_temp(target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = temp_prefix(target)?;
    let dir = dir_of(target);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!("{prefix}{}-{n}-{nanos:08x}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::ErrorKind::AlreadyExists.into())
}

/// Writes `bytes` to `path` (to its target, when it is a symlink)
/// atomically: a temp file beside it, fsync, rename, fsync of the
/// directory. On failure the old file is intact and the temp file removed.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = resolve(path)?;
    let (tmp, mut f) = create_temp(&target)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        // The rename itself reaches the disk with the directory.
        std::fs::File::open(dir_of(&target))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temp files a crashed patienced left beside the state file:
/// ours by name, regular files of our user, not of a process still alive.
/// Returns how many.
pub fn remove_stale_temps(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let (Ok(target), mut removed) = (resolve(path), 0) else {
        return 0;
    };
    let Ok(prefix) = temp_prefix(&target) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir_of(&target)) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| p as u32 != std::process::id() && crate::sys::process_alive(p));
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == crate::sys::geteuid());
        if !alive && ours && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Reads the state file: only a regular file (a FIFO would block the start
/// for ever, a device never end), of at most `limit` bytes. None when there
/// is none.
fn read_limited(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let shown = path.display();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {shown}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read state file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "state file {shown} is not a regular file (a FIFO, a device or a directory): give --state-file a file"
        ));
    }
    if meta.len() > limit {
        return Err(format!(
            "state file {shown} is {} bytes, more than the {limit} allowed for --max-series; refusing to read it",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read state file {shown}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("state file {shown} grew past {limit} bytes while read"));
    }
    Ok(Some(bytes))
}

/// The largest state file read: generous for `max_series` (a saved series
/// takes some 100 bytes; a 256-byte name escaped at worst 1.5 KiB).
pub fn read_limit(max_series: usize) -> u64 {
    (max_series as u64).saturating_mul(4096).saturating_add(1 << 20)
}

/// Where a state file that could not be read in full is kept.
fn aside_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{secs}"));
    PathBuf::from(aside)
}

/// Loads the state at `path` into `agg` (which is empty). A missing file
/// is a first start; an unreadable one is an error; one that is not valid
/// state is moved to `PATH.corrupt-SECONDS` and reported in `Loaded`; one
/// with some commands that cannot be read is copied there, and the others
/// are loaded.
pub fn load(path: &Path, agg: &mut Aggregate) -> Result<Loaded, String> {
    let Some(bytes) = read_limited(path, read_limit(agg.max_series))? else {
        return Ok(Loaded::default());
    };
    match parse(&bytes, &agg.buckets) {
        Ok(parsed) => {
            let mut loaded = Loaded {
                histograms_dropped: parsed.histograms_dropped,
                ..Loaded::default()
            };
            let now = super::unix_now();
            for (name, mut c) in parsed.commands {
                // Saved by a version that did not keep it: seen now, so
                // that --series-ttl counts from this start.
                if c.seen == 0.0 {
                    c.seen = now;
                }
                if agg.restore(name, c) {
                    loaded.commands += 1;
                } else {
                    loaded.over_limit += 1;
                }
            }
            if let Some((n, why)) = parsed.bad {
                let aside = aside_path(&resolve(path).unwrap_or_else(|_| path.to_path_buf()));
                std::fs::write(&aside, &bytes).map_err(|e| {
                    format!(
                        "state file {}: {n} saved commands are not valid ({why}) and a copy cannot be kept: {e}",
                        path.display()
                    )
                })?;
                loaded.set_aside = Some((aside, why.clone()));
                loaded.bad = Some((n, why));
            }
            Ok(loaded)
        }
        Err(why) => {
            // The file itself, not a symlink to it.
            let target = resolve(path).unwrap_or_else(|_| path.to_path_buf());
            let aside = aside_path(&target);
            std::fs::rename(&target, &aside).map_err(|e| {
                format!(
                    "state file {} is not valid ({why}) and cannot be moved aside: {e}",
                    path.display()
                )
            })?;
            Ok(Loaded {
                set_aside: Some((aside, why)),
                ..Loaded::default()
            })
        }
    }
}

/// What a state file held.
pub(super) struct Parsed {
    pub commands: Vec<(String, Command)>,
    /// Histograms were left out: saved with other buckets.
    histograms_dropped: bool,
    /// Commands left out, and why the first one was.
    bad: Option<(usize, String)>,
}

/// Checks a state file: the whole (JSON, version, buckets), then each
/// command on its own.
pub(super) fn parse(bytes: &[u8], buckets: &[f64]) -> Result<Parsed, String> {
    let file: FileIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.v != FILE_VERSION {
        return Err(format!("unknown version {}", file.v));
    }
    let same_buckets = file.buckets == buckets;
    let mut seen = std::collections::HashSet::new();
    let mut out = Parsed {
        commands: Vec::with_capacity(file.commands.len()),
        histograms_dropped: false,
        bad: None,
    };
    for value in file.commands {
        let result = serde_json::from_value::<Saved>(value)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.name.is_empty()
                    || s.name.len() > crate::metrics::MAX_NAME
                    || !seen.insert(s.name.clone())
                {
                    return Err(format!("empty, long or repeated command name {:?}", s.name));
                }
                let name = s.name.clone();
                let (c, dropped) = command(s, file.buckets.len(), same_buckets)?;
                out.histograms_dropped |= dropped;
                Ok((name, c))
            });
        match result {
            Ok(c) => out.commands.push(c),
            Err(why) => {
                let bad = out.bad.get_or_insert((0, why));
                bad.0 += 1;
            }
        }
    }
    Ok(out)
}

/// One saved command, checked; also says whether its histograms were left
/// out because they were saved with other buckets (`saved_buckets` of them).
fn command(s: Saved, saved_buckets: usize, same_buckets: bool) -> Result<(Command, bool), String> {
    let ok_ts = |x: f64| x.is_finite() && (0.0..=crate::metrics::MAX_TS).contains(&x);
    let mut c = Command::default();
    for (status, r) in s.runs {
        let st = Status::parse(&status).ok_or_else(|| format!("unknown status {status:?}"))?;
        if !r.last.is_none_or(ok_ts) {
            return Err(format!("bad timestamp for {:?}", s.name));
        }
        c.runs[st.index()] = Some(Runs {
            count: r.count,
            last: r.last,
        });
    }
    for (label, n) in s.attempts {
        let l = ExitLabel::parse(&label).ok_or_else(|| format!("unknown exit code label {label:?}"))?;
        c.attempts.push((l, n));
    }
    c.attempts.sort_by_key(|&(l, _)| l);
    c.attempts.dedup_by_key(|&mut (l, _)| l);
    let mut dropped = false;
    let mut histogram = |h: Option<SavedHistogram>| -> Result<Option<Histogram>, String> {
        let Some(h) = h else { return Ok(None) };
        // +Inf is what a sum that overflowed became; NaN or below zero
        // cannot come from durations.
        if h.counts.len() != saved_buckets + 1 || h.sum.is_nan() || h.sum < 0.0 {
            return Err(format!("bad histogram for {:?}", s.name));
        }
        if !same_buckets {
            dropped = true;
            return Ok(None);
        }
        let count = h
            .counts
            .iter()
            .try_fold(0u64, |a, &n| a.checked_add(n))
            .ok_or("histogram overflow")?;
        Ok(Some(Histogram {
            counts: h.counts.into_boxed_slice(),
            sum: h.sum,
            count,
        }))
    };
    c.run_duration = histogram(s.run_duration)?;
    c.attempt_duration = histogram(s.attempt_duration)?;
    if let Some(l) = s.last_run {
        if !ok_ts(l.ts) {
            return Err(format!("bad timestamp for {:?}", s.name));
        }
        c.last_run = Some(LastRun {
            ts: l.ts,
            exit_code: l.exit_code,
        });
    }
    if s.running.len() > MAX_RUNNING || !s.running.iter().all(|r| ok_ts(r.1)) || !ok_ts(s.seen) {
        return Err(format!("bad runs in progress for {:?}", s.name));
    }
    c.running = s.running;
    c.seen = s.seen;
    Ok((c, dropped))
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::DEFAULT_BUCKETS;
    use super::*;
    use crate::metrics::decode;

    fn sample() -> Aggregate {
        let mut agg = Aggregate::new(&DEFAULT_BUCKETS, 100);
        for d in [
            r#"{"v":1,"event":"run","name":"a\"b","status":"failed","duration_s":2.5,"ts":7}"#,
            r#"{"v":1,"event":"attempt","name":"a\"b","exit_code":3,"duration_s":1}"#,
            r#"{"v":1,"event":"attempt","name":"c","signal":"SIGKILL","duration_s":1}"#,
            r#"{"v":1,"event":"attempt","name":"c","timed_out":true,"duration_s":1}"#,
        ] {
            agg.record(decode(d.as_bytes()), 0.0);
        }
        agg
    }

    #[test]
    fn round_trip() {
        let agg = sample();
        let mut back = Aggregate::new(&DEFAULT_BUCKETS, 100);
        let parsed = parse(&serialize(&agg.snapshot()), &DEFAULT_BUCKETS).unwrap();
        assert!(!parsed.histograms_dropped && parsed.bad.is_none());
        for (n, c) in parsed.commands {
            assert!(back.restore(n, c));
        }
        assert_eq!(back.commands, agg.commands);
        assert_eq!(back.series(), agg.series());
    }

    #[test]
    fn services_are_not_saved_and_the_rest_of_their_command_is() {
        let mut agg = sample();
        for d in [
            r#"{"v":1,"event":"service","name":"a\"b","state":"ready","ready_s":1,"health_failures":2}"#,
            r#"{"v":1,"event":"service","name":"s","state":"failed"}"#,
        ] {
            agg.record(decode(d.as_bytes()), 0.0);
        }
        let mut back = Aggregate::new(&DEFAULT_BUCKETS, 100);
        let parsed = parse(&serialize(&agg.snapshot()), &DEFAULT_BUCKETS).unwrap();
        assert!(parsed.bad.is_none());
        for (n, c) in parsed.commands {
            assert!(back.restore(n, c));
        }
        for c in agg.commands.values_mut() {
            std::sync::Arc::make_mut(c).service = None;
        }
        agg.commands.retain(|_, c| c.series() > 0);
        back.commands.retain(|_, c| c.series() > 0);
        assert_eq!(back.commands, agg.commands);
        assert_eq!(back.series(), agg.series() - 5 - 5);
    }

    #[test]
    fn other_buckets_keep_counters_only() {
        let parsed = parse(&serialize(&sample().snapshot()), &[1.0, 2.0]).unwrap();
        let commands = parsed.commands;
        assert!(parsed.histograms_dropped);
        assert!(commands
            .iter()
            .all(|(_, c)| c.run_duration.is_none() && c.attempt_duration.is_none()));
        assert_eq!(commands[0].1.runs[Status::Failed.index()].unwrap().count, 1);
    }

    #[test]
    fn bad_files_are_refused_and_bad_commands_left_out_alone() {
        let good = String::from_utf8(serialize(&sample().snapshot())).unwrap();
        let bad_files = [
            String::new(),
            "{}".into(),
            "\0\0\0".into(),
            good[..good.len() / 2].to_string(),
            good.replace("\"v\":1", "\"v\":2"),
        ];
        for b in bad_files {
            assert_ne!(b, good);
            assert!(parse(b.as_bytes(), &DEFAULT_BUCKETS).is_err(), "{b}");
        }
        // Each breaks command "a\"b" or "c" only: the other is loaded.
        let bad_commands = [
            good.replace("\"failed\":{\"count\":1", "\"meh\":{\"count\":1"),
            good.replace("\"SIGKILL\"", "\"SIG kill\""),
            good.replace("\"last\":7.0", "\"last\":-7.0"),
            good.replace("\"last\":7.0", "\"last\":1e308"),
            good.replace("\"sum\":2.5", "\"sum\":-1"),
            good.replace("\"name\":\"c\"", "\"name\":\"a\\\"b\""),
            good.replacen("\"counts\":[0,", "\"counts\":[", 1),
        ];
        for b in bad_commands {
            assert_ne!(b, good);
            let p = parse(b.as_bytes(), &DEFAULT_BUCKETS).unwrap_or_else(|e| panic!("{e}: {b}"));
            assert_eq!(p.commands.len(), 1, "{b}");
            assert_eq!(p.bad.as_ref().map(|b| b.0), Some(1), "{b}");
        }
    }

    #[test]
    fn temp_files_are_unique_and_never_reuse_a_name() {
        let dir = std::env::temp_dir().join(format!("patienced-tmp-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("state.json");
        let (a, _fa) = create_temp(&target).unwrap();
        let (b, _fb) = create_temp(&target).unwrap();
        assert_ne!(a, b);
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".state.json.tmp-"));
        assert_eq!(remove_stale_temps(&target), 2, "our own pid's are stale at start");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_time_signal_labels_and_infinite_sums_round_trip() {
        let mut agg = sample();
        agg.record(
            decode(br#"{"v":1,"event":"attempt","name":"rt","signal":40,"duration_s":1}"#),
            0.0,
        );
        agg.record(
            decode(br#"{"v":1,"event":"attempt","name":"rt","signal":"SIGRTMIN+3","duration_s":1}"#),
            0.0,
        );
        let mut c = (*agg.commands["c"]).clone();
        c.attempt_duration.as_mut().unwrap().sum = f64::INFINITY;
        c.attempts
            .push((ExitLabel::parse("SIGFROMELSEWHERE").unwrap(), 2));
        agg.restore("c".into(), c);
        let text = serialize(&agg.snapshot());
        assert!(String::from_utf8_lossy(&text).contains("\"sum\":\"+Inf\""));
        let p = parse(&text, &DEFAULT_BUCKETS).unwrap();
        assert!(p.bad.is_none(), "{:?}", p.bad);
        let mut back = Aggregate::new(&DEFAULT_BUCKETS, 100);
        for (n, c) in p.commands {
            assert!(back.restore(n, c));
        }
        assert_eq!(back.commands, agg.commands);
        // A sum saved as null by an older build reads as +Inf too.
        let old = String::from_utf8(text).unwrap().replace("\"+Inf\"", "null");
        let p = parse(old.as_bytes(), &DEFAULT_BUCKETS).unwrap();
        let c = &p.commands.iter().find(|(n, _)| n == "c").unwrap().1;
        assert_eq!(c.attempt_duration.as_ref().unwrap().sum, f64::INFINITY);
    }
}
