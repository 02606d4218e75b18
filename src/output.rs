//! The child's stdin, stdout and stderr: what each attempt is given, and,
//! when something must read the output, the capture path that forwards it,
//! matches it line by line and holds it.
//!
//! Without patterns or held output (`--output live`, the default) the child
//! inherits patience's descriptors: zero copy, nothing in between. Otherwise
//! each stream that must be read goes through a pipe and a reader thread,
//! one per stream so a slow consumer of one never delays the other:
//! - with `--output live`, every chunk is written to patience's own stdout
//!   or stderr as soon as it is read, byte for byte;
//! - patterns see the output one line at a time, a line cut at
//!   [`MATCH_LINE_MAX`] for matching only, so memory stays flat whatever the
//!   output (a 2 GB line without a newline included);
//! - `--output failure` holds the attempt's stdout and stderr, `--output
//!   final` its stdout only (its stderr stays live, so no attempt's error
//!   message is lost), in memory up to [`HOLD_MEM_MAX`] per stream, then in
//!   an unlinked temporary file.
//!
//! When patience's stdout or stderr is a closed pipe (`patience … | head -1`)
//! the reader stops forwarding that stream and closes its end of the pipe,
//! so the child gets SIGPIPE/EPIPE as it would without patience. After the
//! attempt's process has exited, the readers get [`DRAIN_GRACE`] to reach
//! end of file; a grandchild still holding the pipes then loses its end of
//! them, and patience moves on.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::conditions::{Matches, PatternSet};
use crate::settings::{OutputMode, Settings, StdinMode};
use crate::sys;

/// A line longer than this is matched on its first `MATCH_LINE_MAX` bytes.
pub const MATCH_LINE_MAX: usize = 64 * 1024;
/// Held output beyond this (per stream) goes to a temporary file.
pub const HOLD_MEM_MAX: usize = 1024 * 1024;
/// How long the readers may go on after the attempt's process exited.
pub const DRAIN_GRACE: Duration = Duration::from_millis(100);
/// Once told to stop, a reader still takes what is already in the pipe, up
/// to this much (more than a pipe can hold, less than a runaway writer).
const DRAIN_MAX: usize = 4 * 1024 * 1024;
/// The read size and the capture pipes' buffer size.
const CHUNK: usize = 128 * 1024;

/// Where temporary files go: `$TMPDIR`, else /tmp.
/// A child's stdin that reads end of file at once: /dev/null, else (an
/// empty chroot has no /dev) the read end of a pipe whose write end is
/// closed, which reads the same.
pub fn null_input() -> io::Result<Stdio> {
    match File::open("/dev/null") {
        Ok(f) => Ok(Stdio::from(f)),
        Err(_) => Ok(Stdio::from(sys::pipe()?.0)),
    }
}

fn temp_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// How each stream of every attempt is set up: made once per run.
pub struct Plan {
    mode: OutputMode,
    stdin: StdinMode,
    /// `--stdin replay`: the bytes, in an unlinked temporary file.
    replay: Option<File>,
    patterns: Option<Arc<PatternSet>>,
    /// Per stream (stdout, stderr): read it through a pipe, and match it.
    capture: [bool; 2],
    matched: [bool; 2],
}

impl Plan {
    /// The plan for a run with these settings. With `--stdin replay` this
    /// reads patience's stdin to its end, into a temporary file.
    pub fn new(s: &Settings) -> io::Result<Plan> {
        let c = &s.conditions;
        let patterns = PatternSet::new(c).map(Arc::new);
        let matched = [
            patterns.is_some() && c.match_stream.reads_stdout(),
            patterns.is_some() && c.match_stream.reads_stderr(),
        ];
        let replay = match s.stdin {
            StdinMode::Replay => {
                let mut file = sys::temp_file(&temp_dir())?;
                io::copy(&mut io::stdin().lock(), &mut file)?;
                Some(file)
            }
            _ => None,
        };
        Ok(Plan {
            mode: s.output,
            stdin: s.stdin,
            replay,
            patterns,
            capture: [holds(s.output, 0) || matched[0], holds(s.output, 1) || matched[1]],
            matched,
        })
    }

    /// The plan that changes nothing: the child inherits all three streams.
    pub fn inherit() -> Plan {
        Plan {
            mode: OutputMode::Live,
            stdin: StdinMode::Inherit,
            replay: None,
            patterns: None,
            capture: [false; 2],
            matched: [false; 2],
        }
    }

    /// Sets up one attempt's streams: the child's ends to give `Command`,
    /// and the readers of the captured streams, already running (they see
    /// end of file as soon as the child's ends are closed, should the child
    /// fail to start). Call just before spawning.
    pub fn prepare(&self) -> io::Result<(ChildStdio, Capture)> {
        let stdin = match self.stdin {
            StdinMode::Inherit => None,
            StdinMode::Null => Some(null_input()?),
            StdinMode::Replay => Some(Stdio::from(self.replay_copy()?)),
        };
        let mut child = ChildStdio {
            stdin,
            stdout: None,
            stderr: None,
        };
        let mut capture = Capture {
            readers: Vec::new(),
            stop: None,
            done: None,
        };
        if !self.capture.iter().any(|&c| c) {
            return Ok((child, capture));
        }
        let (stop_read, stop_write) = sys::pipe()?;
        let stop_read = Arc::new(stop_read);
        let (done_tx, done_rx) = mpsc::channel();
        capture.stop = Some(stop_write);
        capture.done = Some(done_rx);
        for (i, dest) in [(0, 1), (1, 2)] {
            if !self.capture[i] {
                continue;
            }
            let (read, write) = sys::pipe()?;
            sys::set_pipe_size(read.as_fd(), CHUNK);
            sys::set_nonblocking(read.as_fd())?;
            let reader = Reader {
                src: File::from(read),
                stop: stop_read.clone(),
                dest,
                forward: !holds(self.mode, i),
                matcher: match (&self.patterns, self.matched[i]) {
                    (Some(p), true) => Some(LineMatcher::new(p.clone())),
                    _ => None,
                },
                spool: holds(self.mode, i).then(Spool::default),
            };
            let tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(if dest == 1 { "stdout" } else { "stderr" }.into())
                .spawn(move || {
                    let out = reader.run();
                    let _ = tx.send(());
                    out
                })?;
            capture.readers.push(handle);
            let end = Stdio::from(write);
            if dest == 1 {
                child.stdout = Some(end);
            } else {
                child.stderr = Some(end);
            }
        }
        Ok((child, capture))
    }

    /// A fresh descriptor on the replay file, read from the start: a new
    /// open of /proc/self/fd/N has its own offset, so nothing an earlier
    /// attempt (or its leftovers) did can move it. Without /proc, a
    /// duplicate rewound to the start.
    fn replay_copy(&self) -> io::Result<File> {
        let file = self
            .replay
            .as_ref()
            .ok_or_else(|| io::Error::other("no replay file"))?;
        use std::os::fd::AsRawFd;
        if let Ok(f) = File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(f);
        }
        let mut dup = file.try_clone()?;
        dup.seek(SeekFrom::Start(0))?;
        Ok(dup)
    }
}

/// Whether `--output` holds stream `i` (0 stdout, 1 stderr) to the end of
/// the run rather than forwarding it live. `final` is for `x=$(patience
/// --output final -- …)`: a clean stdout, while every attempt's stderr is
/// shown as it comes (as recur's `-O` and Debian's `retry` do).
fn holds(mode: OutputMode, i: usize) -> bool {
    match mode {
        OutputMode::Live => false,
        OutputMode::Final => i == 0,
        OutputMode::Failure => true,
    }
}

/// The child's ends of its streams; `None` means inherited from patience.
pub struct ChildStdio {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
}

impl ChildStdio {
    /// Hands the streams to `cmd` (which must then be dropped right after
    /// spawning, so the readers see end of file when the child is done).
    pub fn apply(self, cmd: &mut std::process::Command) {
        if let Some(s) = self.stdin {
            cmd.stdin(s);
        }
        if let Some(s) = self.stdout {
            cmd.stdout(s);
        }
        if let Some(s) = self.stderr {
            cmd.stderr(s);
        }
    }
}

/// The running readers of one attempt's captured streams.
pub struct Capture {
    readers: Vec<JoinHandle<ReaderOut>>,
    /// Dropping it tells the readers to stop waiting for end of file.
    stop: Option<OwnedFd>,
    done: Option<Receiver<()>>,
}

impl Capture {
    /// After the attempt's process has exited: lets the readers reach end
    /// of file for at most `grace`, then stops them (they still take what
    /// is already in the pipes) and collects what they saw.
    pub fn finish(mut self, grace: Duration) -> Captured {
        let mut out = Captured::default();
        if self.readers.is_empty() {
            return out;
        }
        let deadline = Instant::now() + grace;
        if let Some(done) = &self.done {
            let mut pending = self.readers.len();
            while pending > 0 {
                match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(()) => pending -= 1,
                    Err(_) => break,
                }
            }
        }
        self.stop = None;
        let mut held = Held::default();
        let mut any_held = false;
        for handle in self.readers.drain(..) {
            let Ok(r) = handle.join() else { continue };
            out.matches.merge(&r.matches);
            out.reader_gone |= r.reader_gone;
            if let Some(spool) = r.spool {
                any_held = true;
                if r.dest == 1 {
                    held.stdout = spool;
                } else {
                    held.stderr = spool;
                }
            }
        }
        if any_held {
            out.held = Some(Arc::new(held));
        }
        out
    }
}

impl Drop for Capture {
    /// A capture dropped without `finish` (the child could not start) stops
    /// and joins its readers, so no thread outlives the attempt.
    fn drop(&mut self) {
        self.stop = None;
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

/// What the capture path learnt from one attempt.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// Which patterns matched, over the streams they read.
    pub matches: Matches,
    /// The attempt's held output, with `--output final` (stdout) or
    /// `failure` (both).
    pub held: Option<Arc<Held>>,
    /// Forwarding met EPIPE: whoever read patience's output went away.
    pub reader_gone: bool,
}

/// One attempt's held stdout and stderr.
#[derive(Debug, Default)]
pub struct Held {
    pub stdout: Spool,
    pub stderr: Spool,
}

impl Held {
    /// Writes the held stdout to patience's stdout and the held stderr to its
    /// stderr. Errors (a closed stdout) are ignored: there is nobody to tell.
    pub fn show(&self) {
        self.stdout.write_to(1);
        self.stderr.write_to(2);
    }
}

/// Shows the last attempt's held output at the end of a run, as `--output`
/// says: always with `final`, only when the run did not succeed with
/// `failure`.
pub fn show_held(mode: OutputMode, held: Option<&Held>, succeeded: bool) {
    let show = match mode {
        OutputMode::Live => false,
        OutputMode::Final => true,
        OutputMode::Failure => !succeeded,
    };
    if let (true, Some(h)) = (show, held) {
        h.show();
    }
}

/// Held bytes of one stream: in memory up to [`HOLD_MEM_MAX`], then in an
/// unlinked temporary file. Nothing is dropped unless the file cannot be
/// written, which `write_to` then reports.
#[derive(Debug, Default)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
    /// Why bytes had to be dropped, if they were.
    lost: Option<String>,
}

impl Spool {
    /// Appends `chunk`.
    pub fn append(&mut self, chunk: &[u8]) {
        if self.lost.is_some() {
            return;
        }
        if self.file.is_none() && self.mem.len() + chunk.len() <= HOLD_MEM_MAX {
            self.mem.extend_from_slice(chunk);
            self.len += chunk.len() as u64;
            return;
        }
        let result = (|| -> io::Result<()> {
            if self.file.is_none() {
                let mut f = sys::temp_file(&temp_dir())?;
                f.write_all(&self.mem)?;
                self.file = Some(f);
                self.mem = Vec::new();
            }
            self.file.as_mut().expect("just created").write_all(chunk)
        })();
        match result {
            Ok(()) => self.len += chunk.len() as u64,
            Err(e) => {
                self.lost = Some(format!(
                    "cannot hold more output in {}: {e}",
                    temp_dir().display()
                ))
            }
        }
    }

    /// How many bytes are held.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held in memory right now (the rest is in the file).
    pub fn in_memory(&self) -> usize {
        self.mem.len()
    }

    /// Writes everything held to descriptor `fd`.
    fn write_to(&self, fd: i32) {
        let _ = self.copy(&mut |b| sys::write_all(fd, b));
        if let Some(why) = &self.lost {
            crate::messages::say(&format!("held output incomplete: {why}"));
        }
    }

    /// Passes everything held, in order, to `sink`.
    pub fn copy(&self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match &self.file {
            None => sink(&self.mem),
            Some(file) => {
                let mut f = file;
                f.seek(SeekFrom::Start(0))?;
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = match f.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    sink(&buf[..n])?;
                }
            }
        }
    }
}

/// Matches a stream line by line on a bounded buffer: a line is matched on
/// its first [`MATCH_LINE_MAX`] bytes (as UTF-8, invalid bytes replaced, a
/// trailing CR removed), and the rest of it is skipped.
pub struct LineMatcher {
    set: Arc<PatternSet>,
    line: Vec<u8>,
    /// The current line was already matched on its first bytes.
    skipping: bool,
    pub matches: Matches,
}

impl LineMatcher {
    pub fn new(set: Arc<PatternSet>) -> LineMatcher {
        LineMatcher {
            set,
            line: Vec::new(),
            skipping: false,
            matches: Matches::default(),
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        // Once every kind has matched, no later line can change the verdict.
        if self.set.all_matched(&self.matches) {
            return;
        }
        while let Some(i) = sys::memchr(b'\n', chunk) {
            self.push(&chunk[..i]);
            if !self.skipping {
                self.check();
            }
            self.line.clear();
            self.skipping = false;
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
    }

    /// The stream ended: matches a last line that had no newline.
    pub fn finish(&mut self) {
        if !self.line.is_empty() && !self.skipping {
            self.check();
        }
        self.line.clear();
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.skipping || bytes.is_empty() {
            return;
        }
        let take = bytes.len().min(MATCH_LINE_MAX - self.line.len());
        self.line.extend_from_slice(&bytes[..take]);
        if self.line.len() == MATCH_LINE_MAX {
            self.check();
            self.line.clear();
            self.skipping = true;
        }
    }

    fn check(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        self.set.check(line, &mut self.matches);
    }
}

/// One captured stream: read, forward, match, hold.
struct Reader {
    src: File,
    stop: Arc<OwnedFd>,
    /// patience's descriptor to forward to (1 or 2).
    dest: i32,
    forward: bool,
    matcher: Option<LineMatcher>,
    spool: Option<Spool>,
}

struct ReaderOut {
    dest: i32,
    reader_gone: bool,
    matches: Matches,
    spool: Option<Spool>,
}

impl Reader {
    fn run(mut self) -> ReaderOut {
        let mut buf = vec![0u8; CHUNK];
        let mut stopping = false;
        let mut drained = 0usize;
        let mut reader_gone = false;
        // After a short read the pipe is most likely empty: wait for it
        // rather than spend a read on EAGAIN (one syscall less per chunk).
        let mut wait = false;
        loop {
            if wait && !stopping {
                match sys::wait_readable(self.src.as_fd(), self.stop.as_fd()) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => stopping = true,
                    Err(_) => break,
                }
            }
            let n = match self.src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stopping {
                        break;
                    }
                    wait = true;
                    continue;
                }
                Err(_) => break,
            };
            wait = n < buf.len();
            let chunk = &buf[..n];
            if self.forward {
                if let Err(e) = sys::write_all(self.dest, chunk) {
                    if e.raw_os_error() == Some(libc::EPIPE) {
                        // Whoever read patience's output is gone: closing the
                        // pipe (by returning) gives the child its SIGPIPE.
                        reader_gone = true;
                        break;
                    }
                    // Any other error (a full disk): drop this stream's
                    // output but keep reading, so the child is not blocked.
                    self.forward = false;
                }
            }
            if let Some(m) = &mut self.matcher {
                m.feed(chunk);
            }
            if let Some(s) = &mut self.spool {
                s.append(chunk);
            }
            if stopping {
                drained += n;
                if drained >= DRAIN_MAX {
                    break;
                }
            }
        }
        let matches = match &mut self.matcher {
            Some(m) => {
                m.finish();
                m.matches
            }
            None => Matches::default(),
        };
        ReaderOut {
            dest: self.dest,
            reader_gone,
            matches,
            spool: self.spool,
        }
    }
}

/// Everything a spool holds, for its tests.
#[cfg(test)]
fn collect(s: &Spool) -> Vec<u8> {
    let mut v = Vec::new();
    s.copy(&mut |b| {
        v.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Conditions, Kind, Pattern};

    fn matcher(failure: &str) -> LineMatcher {
        let c = Conditions {
            failure: vec![Pattern::new(failure).unwrap()],
            ..Conditions::default()
        };
        LineMatcher::new(Arc::new(PatternSet::new(&c).unwrap()))
    }

    fn hit(m: &LineMatcher) -> bool {
        m.matches.get(Kind::Failure).is_some()
    }

    #[test]
    fn lines_split_across_chunks_are_matched_whole() {
        let mut m = matcher("^hello world$");
        m.feed(b"xx\nhel");
        m.feed(b"lo wo");
        assert!(!hit(&m));
        m.feed(b"rld\r\nnext");
        assert!(hit(&m));
    }

    #[test]
    fn a_last_line_without_newline_is_matched_at_the_end() {
        let mut m = matcher("^tail$");
        m.feed(b"a\ntail");
        assert!(!hit(&m));
        m.finish();
        assert!(hit(&m));
    }

    #[test]
    fn patterns_never_span_lines() {
        let mut m = matcher("a.b");
        m.feed(b"a\nb\n");
        m.finish();
        assert!(!hit(&m));
    }

    #[test]
    fn long_lines_are_matched_on_their_first_64k_only() {
        let mut m = matcher("NEEDLE");
        let mut line = vec![b'x'; MATCH_LINE_MAX - 6];
        line.extend_from_slice(b"NEEDLE");
        m.feed(&line);
        assert!(hit(&m), "the needle ends exactly at the limit");

        let mut m = matcher("NEEDLE");
        let mut line = vec![b'x'; MATCH_LINE_MAX - 5];
        line.extend_from_slice(b"NEEDLE\n");
        m.feed(&line);
        m.finish();
        assert!(!hit(&m), "cut at the limit");
        assert!(m.line.capacity() <= MATCH_LINE_MAX);

        // The next line is matched again.
        m.feed(b"a NEEDLE\n");
        assert!(hit(&m));
    }

    #[test]
    fn memory_stays_bounded_on_one_huge_line() {
        let mut m = matcher("never");
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..64 {
            m.feed(&chunk);
        }
        m.finish();
        assert!(!hit(&m));
        assert!(m.line.capacity() <= 2 * MATCH_LINE_MAX);
    }

    #[test]
    fn invalid_utf8_is_matched_lossily() {
        let mut m = matcher("^ok .* done$");
        m.feed(b"ok \xff\xfe done\n");
        assert!(hit(&m));
    }

    #[test]
    fn pathological_patterns_run_in_linear_time() {
        // (a+)+$ backtracks exponentially in backtracking engines; over
        // 1 MB of lines regex-lite's is_match stays linear.
        for pat in ["(a+)+$", "(a?){30}a{30}", ".*[^A-Z]|[A-Z]", "(x+x+)+y"] {
            let mut m = matcher(pat);
            let mut data = Vec::new();
            while data.len() < 1 << 20 {
                data.extend_from_slice(&[b'a'; 1000]);
                data.extend_from_slice(b"!\n");
            }
            let start = Instant::now();
            m.feed(&data);
            m.finish();
            let took = start.elapsed();
            assert!(took < Duration::from_secs(10), "{pat}: {took:?}");
        }
    }

    #[test]
    fn spools_move_to_a_file_beyond_the_memory_limit() {
        let mut s = Spool::default();
        let mut expect = Vec::new();
        let mut n = 0u32;
        while expect.len() < 3 * HOLD_MEM_MAX {
            let chunk: Vec<u8> = (0..7919u32)
                .map(|i| (i.wrapping_mul(31).wrapping_add(n)) as u8)
                .collect();
            n += 1;
            s.append(&chunk);
            expect.extend_from_slice(&chunk);
            assert!(s.in_memory() <= HOLD_MEM_MAX);
        }
        assert_eq!(s.in_memory(), 0);
        assert_eq!(s.len(), expect.len() as u64);
        assert!(collect(&s) == expect);
        // Reading it twice gives the same bytes.
        assert!(collect(&s) == expect);
    }

    #[test]
    fn small_spools_stay_in_memory() {
        let mut s = Spool::default();
        s.append(b"abc");
        s.append(b"");
        assert_eq!(s.in_memory(), 3);
        assert_eq!(collect(&s), b"abc");
    }
}
