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
use std::sync::atomic::{AtomicBool, Ordering};
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
    write_whole(2, format!("[patience] {name}: {line}\n").as_bytes());
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

/// A service's ring buffer and the clients following its output.
pub struct Ring {
    lines: VecDeque<Arc<Line>>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    /// The attempt whose lines come now (the supervisor sets it).
    pub attempt: u64,
    followers: Vec<Follower>,
}

/// A client following the output: false once it has gone.
pub type Follower = Box<dyn FnMut(&Arc<Line>) -> bool + Send>;

pub type Shared = Arc<Mutex<Ring>>;

impl Ring {
    pub fn new(max_lines: usize, max_bytes: usize) -> Shared {
        Arc::new(Mutex::new(Ring {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
            attempt: 0,
            followers: Vec::new(),
        }))
    }

    fn push(&mut self, line: Line) {
        let line = Arc::new(line);
        // A follower gone (its client hung up) is dropped here.
        self.followers.retain_mut(|f| f(&line));
        self.bytes += line.bytes.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines || (self.bytes > self.max_bytes && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
    }

    /// The last `n` lines kept.
    pub fn last(&self, n: usize) -> Vec<Arc<Line>> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }

    pub fn follow(&mut self, follower: Follower) {
        self.followers.push(follower);
    }
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
    pub service: usize,
    pub ring: Shared,
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
        {
            let now = SystemTime::now();
            let mut ring = lock(&sink.ring);
            let attempt = ring.attempt;
            // Lines the ring would drop at once are not kept at all, unless
            // a client follows them.
            let skip = if ring.followers.is_empty() {
                lines.len().saturating_sub(ring.max_lines)
            } else {
                0
            };
            for l in &lines[skip..] {
                ring.push(Line {
                    service: sink.service,
                    time: now,
                    stream: fd,
                    attempt,
                    bytes: l.strip_suffix(b"\n").unwrap_or(l).to_vec(),
                });
            }
        }
        out.clear();
        for l in &lines {
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
        write_whole(fd, out);
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
