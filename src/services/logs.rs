//! The services' output on patience's own stdout and stderr: each line of
//! each service as `name | line`, written with one write(2) of prefix and
//! line under a lock per stream, so services never interleave mid-line.
//! Bytes pass unchanged (binary, invalid UTF-8); a partial line is written
//! after 64 KiB or 100 ms of silence, or at the end, as a line of its own
//! (a newline added); with `log = "raw"` bytes are written as they come.
//!
//! Each line also goes to the service's [`Ring`]: the last `log-lines`
//! lines (at most `log-bytes`) with time, stream and attempt, for
//! `patiencectl logs`, and to the clients following it.
//!
//! One reader thread per shim pipe (not the single polling thread of
//! SERVICES.md §1): simple, and idle threads cost a stack each. The reader
//! also matches `ready-pattern`, on the lines it already has, when armed.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::conditions::Pattern;

use super::file::LogMode;
use super::supervisor::Msg;

/// A line longer than this is written in pieces.
pub const LINE_MAX: usize = 64 * 1024;
/// The pipe buffer asked for each shim's stdout and stderr, and the most
/// one read takes.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Silence after which a partial line is written.
pub const PARTIAL_AFTER: Duration = Duration::from_millis(100);

static OUT: Mutex<()> = Mutex::new(());
static ERR: Mutex<()> = Mutex::new(());

/// Writes `bytes` to patience's `fd` (1 or 2) at once, whole.
pub fn write_whole(fd: i32, bytes: &[u8]) {
    let lock = if fd == 1 { &OUT } else { &ERR };
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    // A closed stdout drops the output; a full one slows the service
    // (nothing lost), as a pipe would.
    let _ = crate::sys::write_all(fd, bytes);
}

/// Says one of patience's own lines about service `name`.
pub fn say(name: &str, line: &str) {
    let text = format!("[patience] {name}: {line}\n");
    if let Some(held) = HELD.get() {
        held.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), text));
        return;
    }
    write_whole(2, text.as_bytes());
}

/// `hold-output`: patience's own lines, by service, kept for the end.
static HELD: std::sync::OnceLock<Mutex<Vec<(String, String)>>> = std::sync::OnceLock::new();

/// From now on patience's own lines are held (`hold-output`).
pub fn hold() {
    let _ = HELD.set(Mutex::new(Vec::new()));
}

/// The held lines of the services `names` (and of the supervisor itself).
pub fn held(names: &[&str]) -> Vec<String> {
    HELD.get()
        .map(|h| {
            h.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(n, _)| n == "patience" || names.contains(&n.as_str()))
                .map(|(_, t)| t.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// One line of a service's output as the ring buffer keeps it.
#[derive(Clone, Debug)]
pub struct Line {
    pub service: usize,
    pub time: SystemTime,
    /// 1 for stdout, 2 for stderr.
    pub stream: i32,
    pub attempt: u64,
    /// The bytes, without the prefix or the newline; invalid UTF-8 is only
    /// replaced where the line becomes JSON.
    pub bytes: Vec<u8>,
}

/// A service's ring buffer and the clients following its output. The
/// lines' bytes sit end to end in one buffer, so keeping a line costs a
/// copy and no allocation (a service writing a lot keeps its pace).
pub struct Ring {
    service: usize,
    bytes: VecDeque<u8>,
    meta: VecDeque<Meta>,
    max_lines: usize,
    max_bytes: usize,
    /// The attempt whose lines come now (the supervisor sets it).
    pub attempt: u64,
    followers: Vec<Follower>,
}

/// What the ring keeps of a line besides its bytes.
struct Meta {
    len: usize,
    time: SystemTime,
    stream: i32,
    attempt: u64,
}

/// A client following the output: false once it has gone.
pub type Follower = Box<dyn FnMut(&Arc<Line>) -> bool + Send>;

pub type Shared = Arc<Mutex<Ring>>;

impl Ring {
    pub fn new(service: usize, max_lines: usize, max_bytes: usize) -> Shared {
        Arc::new(Mutex::new(Ring {
            service,
            bytes: VecDeque::new(),
            meta: VecDeque::new(),
            max_lines,
            max_bytes,
            attempt: 0,
            followers: Vec::new(),
        }))
    }

    fn push(&mut self, time: SystemTime, stream: i32, text: &[u8]) {
        if !self.followers.is_empty() {
            let line = Arc::new(Line {
                service: self.service,
                time,
                stream,
                attempt: self.attempt,
                bytes: text.to_vec(),
            });
            // A follower gone (its client hung up) is dropped here.
            self.followers.retain_mut(|f| f(&line));
        }
        self.bytes.extend(text);
        self.meta.push_back(Meta {
            len: text.len(),
            time,
            stream,
            attempt: self.attempt,
        });
        while self.meta.len() > self.max_lines || (self.bytes.len() > self.max_bytes && self.meta.len() > 1) {
            if let Some(old) = self.meta.pop_front() {
                self.bytes.drain(..old.len);
            }
        }
    }

    /// The last `n` lines kept.
    pub fn last(&self, n: usize) -> Vec<Arc<Line>> {
        let skip = self.meta.len().saturating_sub(n);
        let mut at: usize = self.meta.iter().take(skip).map(|m| m.len).sum();
        let mut out = Vec::with_capacity(self.meta.len() - skip);
        for m in self.meta.iter().skip(skip) {
            out.push(Arc::new(Line {
                service: self.service,
                time: m.time,
                stream: m.stream,
                attempt: m.attempt,
                bytes: self.bytes.range(at..at + m.len).copied().collect(),
            }));
            at += m.len;
        }
        out
    }

    pub fn follow(&mut self, follower: Follower) {
        self.followers.push(follower);
    }
}

fn lock_file(f: &Mutex<LogFile>) -> std::sync::MutexGuard<'_, LogFile> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks a ring; a reader that panicked leaves it usable.
pub fn lock(ring: &Shared) -> std::sync::MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a reader matches for readiness.
pub struct Watch {
    pub pattern: Pattern,
    /// Set by the supervisor when an attempt starts; the first match after
    /// clears it and tells the supervisor once.
    pub armed: Arc<AtomicBool>,
    pub service: usize,
    pub tx: Sender<Msg>,
}

/// Where a reader's lines go besides patience's own stream.
pub struct Sink {
    pub ring: Shared,
    /// The service's `log-file`, shared by its two streams.
    pub file: Option<Arc<Mutex<LogFile>>>,
    /// Each line after its time, on patience's streams (`log-timestamps`).
    pub timestamps: bool,
    /// `log-overflow = "drop"`: the count of lines dropped.
    pub dropped: Option<Arc<AtomicU64>>,
    /// `hold-output`: nothing on patience's streams until the end.
    pub hold: bool,
}

/// A service's `log-file`: appended to, and rotated by size when it is a
/// regular file (`NAME.1` the newest of `log-keep` old ones); a FIFO or
/// `/dev/stdout` is only ever appended to, never renamed or seeked.
pub struct LogFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max: u64,
    keep: u32,
    regular: bool,
}

impl LogFile {
    pub fn open(path: &std::path::Path, max: u64, keep: u32) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            regular: meta.is_file(),
            size: meta.len(),
            file: Some(file),
            max,
            keep,
        })
    }

    /// Appends `bytes` (whole lines), rotating first if they would pass
    /// the size limit. A failing disk loses the copy, never the service.
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // As much as fits, cut after a newline; a line longer than the
            // limit goes whole into a file of its own.
            let room = self.max.saturating_sub(self.size) as usize;
            let take = if !self.regular || bytes.len() <= room {
                bytes.len()
            } else {
                match bytes[..room.min(bytes.len())].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size == 0 => crate::sys::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1),
                    None => 0,
                }
            };
            if take == 0 {
                self.rotate();
                continue;
            }
            if let Some(f) = &mut self.file {
                if std::io::Write::write_all(f, &bytes[..take]).is_ok() {
                    self.size += take as u64;
                }
            }
            bytes = &bytes[take..];
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }
}

/// `2026-12-02T13:51:24.123Z `: a time in UTC as RFC 3339, to the
/// millisecond, and a space.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z ",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Starts the thread that copies `pipe` to patience's `fd`; it ends at the
/// pipe's end of file, once everything written to it is out.
pub fn spawn_reader(
    pipe: OwnedFd,
    fd: i32,
    prefix: Vec<u8>,
    mode: LogMode,
    watch: Option<Watch>,
    sink: Sink,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("logs".into())
        .spawn(move || copy(pipe, fd, &prefix, mode, watch.as_ref(), &sink))
}

fn copy(pipe: OwnedFd, fd: i32, prefix: &[u8], mode: LogMode, watch: Option<&Watch>, sink: &Sink) {
    let mut file = std::fs::File::from(pipe);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; PIPE_SIZE];
    let mut out: Vec<u8> = Vec::new();
    let check = |line: &[u8]| {
        if let Some(w) = watch {
            if w.armed.load(Ordering::Acquire)
                && w.pattern.matches_line(line)
                && w.armed.swap(false, Ordering::AcqRel)
            {
                let _ = w.tx.send(Msg::PatternReady(w.service));
            }
        }
    };
    // The whole lines of one read go out in one write (and into the ring
    // under one lock): a write per line would cost more than the copy.
    let flush = |buf: &[u8], lines: &[std::ops::Range<usize>], out: &mut Vec<u8>| {
        if lines.is_empty() || mode == LogMode::Discard {
            return;
        }
        let lines: Vec<&[u8]> = lines.iter().map(|r| &buf[r.clone()]).collect();
        let now = SystemTime::now();
        let stamp = sink.timestamps.then(|| timestamp(now));
        {
            let mut ring = lock(&sink.ring);
            // Lines the ring would drop at once are not kept at all, unless
            // a client follows them.
            let skip = if ring.followers.is_empty() {
                lines.len().saturating_sub(ring.max_lines)
            } else {
                0
            };
            for l in &lines[skip..] {
                ring.push(now, fd, l.strip_suffix(b"\n").unwrap_or(l));
            }
        }
        if let Some(file) = &sink.file {
            // The copy: the lines as written, each with its time when
            // log-timestamps is on, no name (the file is the service's).
            out.clear();
            for l in &lines {
                if let Some(t) = &stamp {
                    out.extend_from_slice(t.as_bytes());
                }
                out.extend_from_slice(l);
                if !l.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            lock_file(file).write(out);
        }
        if sink.hold {
            return;
        }
        // log-overflow = "drop": pieces of at most PIPE_BUF bytes, each
        // written only when poll says it fits (POLLOUT on a pipe means
        // that much room), so that a reader that reads nothing never
        // blocks the copy; the lines of a piece that does not fit are
        // dropped and counted.
        let piece = if sink.dropped.is_some() { 4096 } else { usize::MAX };
        out.clear();
        let mut in_piece = 0u64;
        let send = |out: &mut Vec<u8>, n: u64| {
            match &sink.dropped {
                Some(dropped) if !crate::sys::writable_now(fd) => {
                    dropped.fetch_add(n, Ordering::Relaxed);
                }
                _ => write_whole(fd, out),
            }
            out.clear();
        };
        for l in &lines {
            if !out.is_empty() && out.len() + prefix.len() + l.len() + 32 > piece {
                send(out, in_piece);
                in_piece = 0;
            }
            in_piece += 1;
            if let Some(t) = &stamp {
                out.extend_from_slice(t.as_bytes());
            }
            if mode == LogMode::Prefix {
                out.extend_from_slice(prefix);
            }
            out.extend_from_slice(l);
            // Prefixed, a partial line is a line of its own, so that the
            // next service's line always starts at the start of a line.
            if mode == LogMode::Prefix && !l.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
        if !out.is_empty() {
            send(out, in_piece);
        }
    };
    let mut lines: Vec<std::ops::Range<usize>> = Vec::new();
    loop {
        if !pending.is_empty() {
            match crate::sys::readable_within(file.as_fd(), PARTIAL_AFTER) {
                Ok(true) => {}
                _ => {
                    check(&pending);
                    flush(&pending, std::slice::from_ref(&(0..pending.len())), &mut out);
                    pending.clear();
                    continue;
                }
            }
        }
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        lines.clear();
        while let Some(i) = crate::sys::memchr(b'\n', &pending[start..]) {
            check(&pending[start..start + i]);
            lines.push(start..start + i + 1);
            start += i + 1;
        }
        flush(&pending, &lines, &mut out);
        lines.clear();
        pending.drain(..start);
        if pending.len() >= LINE_MAX {
            check(&pending);
            flush(&pending, std::slice::from_ref(&(0..pending.len())), &mut out);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        check(&pending);
        flush(&pending, std::slice::from_ref(&(0..pending.len())), &mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_796_219_484_123);
        assert_eq!(timestamp(t), "2026-12-02T13:51:24.123Z ");
        assert_eq!(timestamp(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z ");
        let leap = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn the_ring_keeps_log_lines_and_log_bytes_and_always_the_newest_line() {
        let ring = Ring::new(0, 3, 10);
        let line = |t: &'static str| t;
        let texts = |r: &Shared| -> Vec<String> {
            lock(r)
                .last(100)
                .iter()
                .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
                .collect()
        };
        for t in ["a", "b", "c", "d"] {
            lock(&ring).push(SystemTime::now(), 1, line(t).as_bytes());
        }
        assert_eq!(texts(&ring), ["b", "c", "d"]);
        assert_eq!(lock(&ring).last(2).len(), 2);
        // 10 bytes at most: "c" + "d" + "123456789" would be 11.
        lock(&ring).push(SystemTime::now(), 1, b"123456789");
        assert_eq!(texts(&ring), ["d", "123456789"]);
        lock(&ring).push(SystemTime::now(), 1, b"a line longer than the limit");
        assert_eq!(texts(&ring), ["a line longer than the limit"]);
    }

    #[test]
    fn a_regular_log_file_rotates_by_size_and_keeps_log_keep() {
        let dir = std::env::temp_dir().join(format!("patience-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        let mut f = LogFile::open(&path, 10, 2).unwrap();
        for i in 0..3 {
            f.write(format!("line{i}\n").as_bytes());
        }
        // Several lines at once are cut at line ends too.
        f.write(b"line3\nline4\n");
        // 6 bytes a line, 10 at most: one line a file.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line4\n");
        assert_eq!(std::fs::read_to_string(dir.join("app.log.1")).unwrap(), "line3\n");
        assert_eq!(std::fs::read_to_string(dir.join("app.log.2")).unwrap(), "line2\n");
        assert!(!dir.join("app.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
