//! patienced's HTTP side: `GET /metrics`, `GET /` and `GET /healthz`, one
//! request per connection, over std's `TcpListener`.
//!
//! What bounds a slow, stalled or flooding client: one thread accepts; each
//! connection is served on a thread of its own, at most `MAX_CONNECTIONS` at
//! once; beyond that the oldest one still waiting for its request is closed
//! to make room, and when none is, the newcomer gets 503 at once. A
//! connection must deliver its request head within `HEAD_TIMEOUT` and take
//! its whole response within `SEND_TIMEOUT`, so it holds a thread and a
//! descriptor for seconds only. The exposition is rendered from a snapshot
//! while it is written, `CHUNK` bytes at a time: a scrape's memory does not
//! grow with the body, and the aggregate's lock, and with it datagram
//! intake, is never held during rendering or network I/O. accept(2) failing for want of descriptors or
//! memory (EMFILE under a flood) is logged and tried again as connections
//! close; it never stops the server.
//!
//! Why not tiny_http, which the specification names: tiny_http 0.12 reads
//! every connection on a thread of its own with no limit and no read timeout,
//! and its accept thread unwraps `try_clone` on each accepted socket; with
//! one descriptor left that panic aborts the release build (`panic =
//! "abort"`) and, in a debug build, leaves a server that never accepts
//! again. Prometheus needs a GET and a Content-Length; this is that.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::exposition::{self, Sink};
use super::{log, Shared};

/// Connections served at once; each has its own thread.
pub const MAX_CONNECTIONS: usize = 64;

/// How many more may be open for a moment, while connections closed to
/// make room for them end.
const SPARE: usize = 8;

/// After SIGTERM, how long responses under way may still take.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The longest a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a client may take to read its whole response: Prometheus's
/// default scrape timeout, past which it has given up on the scrape anyway.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the exposition is rendered before it is written: the
/// memory a scrape holds beside its snapshot.
const CHUNK: usize = 256 * 1024;

/// The largest request head read; a larger one is answered 431.
const MAX_HEAD: usize = 8 * 1024;

/// How often the acceptor looks at the stop flag when nobody connects.
const POLL: Duration = Duration::from_millis(200);

/// How long the acceptor waits before calling accept(2) again after it
/// failed for want of resources (it would fail again at once, in a spin).
const STARVED_RETRY: Duration = Duration::from_millis(100);

/// A connection thread's stack: it parses a head and renders into a
/// buffer on the heap.
const STACK: usize = 256 * 1024;

/// How much nicer than intake a connection's thread is (see
/// `sys::lower_thread_priority`).
const HTTP_NICE: i32 = 5;

const PLAIN: &str = "text/plain; charset=utf-8";

/// The running HTTP server.
pub struct Http {
    pub addr: SocketAddr,
    acceptor: JoinHandle<()>,
    conns: Arc<Conns>,
}

/// Binds `addr` and starts accepting; the acceptor stops once `stop` is set.
pub fn start(addr: SocketAddr, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> Result<Http, String> {
    let cannot = |e: io::Error| format!("cannot listen on {addr}: {e}");
    let listener = TcpListener::bind(addr).map_err(cannot)?;
    // Non-blocking, so a connection reset between poll and accept cannot
    // leave the acceptor blocked past a stop.
    listener.set_nonblocking(true).map_err(cannot)?;
    let addr = listener.local_addr().unwrap_or(addr);
    let conns = Arc::new(Conns::default());
    let c = conns.clone();
    let acceptor = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || accept_loop(&listener, &shared, &stop, &c))
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(Http {
        addr,
        acceptor,
        conns,
    })
}

impl Http {
    /// Waits for the acceptor to see the stop flag and answer what was
    /// still queued, then for the responses under way to end (within
    /// `STOP_GRACE`, which they know of).
    pub fn join(self) {
        let _ = self.acceptor.join();
        let until = Instant::now() + STOP_GRACE + Duration::from_secs(1);
        let mut list = self.conns.lock();
        while !list.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            list = match self.conns.ended.wait_timeout(list, left) {
                Ok((l, _)) => l,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The connections being served: for making room (closing the oldest one
/// still waiting for its request) and for waiting on them at shutdown.
#[derive(Default)]
struct Conns {
    list: Mutex<Vec<Conn>>,
    ended: Condvar,
    next: AtomicU64,
}

struct Conn {
    id: u64,
    since: Instant,
    /// Still reading its request head: may be closed to make room.
    waiting: bool,
    /// A handle to shut the socket down with, when one could be made.
    handle: Option<TcpStream>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks connection `id` as past its request head.
    fn busy(&self, id: u64) {
        if let Some(c) = self.lock().iter_mut().find(|c| c.id == id) {
            c.waiting = false;
            c.handle = None;
        }
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|c| c.id != id);
        self.ended.notify_all();
    }
}

/// Removes its connection from `Conns` when the thread serving it ends.
struct Registered {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &Arc<AtomicBool>, conns: &Arc<Conns>) {
    let mut starved = false;
    let mut no_threads = false;
    while !stop.load(Ordering::Relaxed) {
        match crate::sys::readable_within(listener.as_fd(), POLL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(STARVED_RETRY);
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if starved {
                    log("HTTP: accepting connections again");
                    starved = false;
                }
                match admit(stream, shared, stop, conns) {
                    Ok(()) if no_threads => {
                        log("HTTP: threads for connections start again");
                        no_threads = false;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if !no_threads {
                            log(&format!(
                                "HTTP: cannot start a thread for a connection ({e}): answering 503 until one starts"
                            ));
                            no_threads = true;
                        }
                    }
                }
            }
            Err(e) if out_of_resources(&e) => {
                if !starved {
                    log(&format!(
                        "HTTP: stopped accepting connections ({e}); trying again as they close"
                    ));
                    starved = true;
                }
                std::thread::sleep(STARVED_RETRY);
            }
            // EAGAIN (someone else's connection went first), ECONNABORTED,
            // EINTR: nothing to do but wait for the next one.
            Err(_) => {}
        }
    }
    // Stopping: what is queued in the kernel is answered, not reset.
    while let Ok((stream, _)) = listener.accept() {
        turn_away(stream, "shutting down\n");
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `stream` on a thread of its own. When `MAX_CONNECTIONS` are open,
/// the oldest one still waiting for its request is closed to make room;
/// when none is, or no thread can start, the client is answered 503 (and
/// the error returned, for the log).
fn admit(
    stream: TcpStream,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Conns>,
) -> io::Result<()> {
    let id = conns.next.fetch_add(1, Ordering::Relaxed);
    {
        let mut list = conns.lock();
        let open = list.len();
        if open >= MAX_CONNECTIONS {
            let oldest = list
                .iter_mut()
                .filter(|c| c.waiting && c.handle.is_some())
                .min_by_key(|c| c.since);
            match oldest {
                Some(c) if open < MAX_CONNECTIONS + SPARE => {
                    if let Some(mut h) = c.handle.take() {
                        // Told why, as far as a short write can.
                        let why = "request not sent in time: closed to make room\n";
                        let _ = h.set_write_timeout(Some(Duration::from_millis(50)));
                        let _ = h.write_all(&head(408, PLAIN, Some(why.len()), ""));
                        let _ = h.write_all(why.as_bytes());
                        let _ = h.shutdown(Shutdown::Both);
                    }
                    c.waiting = false;
                }
                _ => {
                    drop(list);
                    turn_away(stream, "too many connections: try again\n");
                    return Ok(());
                }
            }
        }
        list.push(Conn {
            id,
            since: Instant::now(),
            waiting: true,
            handle: stream.try_clone().ok(),
        });
    }
    let registered = Registered {
        conns: conns.clone(),
        id,
    };
    // The stream reaches the thread through a channel, so that it is still
    // ours to answer 503 on when the thread cannot start.
    let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
    let (shared, stop) = (shared.clone(), stop.clone());
    let spawned = std::thread::Builder::new()
        .name("http-conn".into())
        .stack_size(STACK)
        .spawn(move || {
            let registered = registered;
            crate::sys::lower_thread_priority(HTTP_NICE);
            if let Ok(stream) = rx.recv() {
                serve(stream, &shared, &stop, &registered);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = tx.send(stream);
            Ok(())
        }
        Err(e) => {
            // The closure, and with it the registration, is gone already.
            turn_away(stream, "no thread to serve this: try again\n");
            Err(e)
        }
    }
}

/// Answers 503 without reading the request, on the acceptor's thread: the
/// reply is small enough for the socket's buffer, and a short timeout
/// bounds the write if it is not.
fn turn_away(mut stream: TcpStream, why: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(&head(503, PLAIN, Some(why.len()), ""));
    let _ = stream.write_all(why.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    linger(&mut stream, Duration::from_millis(100));
}

/// One exchange: read the head, answer, close.
fn serve(mut stream: TcpStream, shared: &Shared, stop: &AtomicBool, conn: &Registered) {
    // Linux does not pass the listener's O_NONBLOCK on to accepted sockets;
    // say so anyway, since the timeouts below rely on blocking I/O.
    let _ = stream.set_nonblocking(false);
    // The head and the body go out as separate writes; without NODELAY the
    // body could wait for the client's delayed ACK of the head.
    let _ = stream.set_nodelay(true);
    let (reply, with_body) = match read_head(&mut stream, stop) {
        Ok(raw) => {
            let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
            answer(&raw, shared, local)
        }
        Err(HeadError::TooLarge) => (Reply::plain(431, "request head too large\n"), true),
        Err(HeadError::Stopping) => (Reply::plain(503, "shutting down\n"), true),
        Err(HeadError::Gone) => return,
    };
    conn.conns.busy(conn.id);
    let mut out = Body::new(&mut stream, Instant::now() + SEND_TIMEOUT, stop);
    match reply.body {
        Content::Text(text) => {
            out.put(&head(
                reply.status,
                reply.content_type,
                Some(text.len()),
                reply.extra,
            ));
            if with_body {
                out.put(text.as_bytes());
            }
        }
        Content::Exposition { chunked } => {
            let framing = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            };
            out.put(&head(200, reply.content_type, None, framing));
            out.send();
            if with_body {
                out.chunked = chunked;
                // Taken now, under the lock for a moment; rendered and
                // written without it, a chunk at a time.
                let snap = shared.snapshot();
                exposition::render(&snap, shared.start_time(), &mut out);
            }
        }
    }
    if out.finish() {
        let _ = stream.shutdown(Shutdown::Write);
        linger(&mut stream, LINGER);
    }
}

/// A response on its way out: bytes gathered up to `CHUNK`, then written
/// (as one chunk of a chunked body when `chunked`), all before `deadline`.
/// The first failure (the client gone, the deadline passed) is kept and
/// the rest dropped.
struct Body<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    chunked: bool,
    deadline: Instant,
    failed: bool,
    /// Set at SIGTERM: the deadline is then `STOP_GRACE` away at most.
    stop: &'a AtomicBool,
    stopping: bool,
}

/// Room kept at the front of a chunk for its size line.
const SIZE_LINE: usize = 8;

impl<'a> Body<'a> {
    fn new(stream: &'a mut TcpStream, deadline: Instant, stop: &'a AtomicBool) -> Body<'a> {
        Body {
            stream,
            buf: Vec::with_capacity(CHUNK + 1024),
            chunked: false,
            deadline,
            failed: false,
            stop,
            stopping: false,
        }
    }

    /// Writes what is gathered.
    fn send(&mut self) {
        if self.failed || self.buf.len() <= self.start() {
            return;
        }
        if !self.stopping && self.stop.load(Ordering::Relaxed) {
            self.stopping = true;
            self.deadline = self.deadline.min(Instant::now() + STOP_GRACE);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || self.stream.set_write_timeout(Some(left)).is_err() {
            self.failed = true;
            return;
        }
        if self.chunked {
            // Leading zeros are allowed in a chunk size: the line is a
            // fixed six hex digits, so it fits the room kept for it.
            let size = format!("{:06x}\r\n", self.buf.len() - SIZE_LINE);
            self.buf[..SIZE_LINE].copy_from_slice(size.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        }
        self.failed = self.stream.write_all(&self.buf).is_err();
        self.buf.clear();
        if self.chunked {
            self.buf.extend_from_slice(&[0; SIZE_LINE]);
        }
    }

    fn start(&self) -> usize {
        if self.chunked {
            SIZE_LINE
        } else {
            0
        }
    }

    /// Writes the rest and the end of a chunked body; true when all went out.
    fn finish(mut self) -> bool {
        self.send();
        if self.chunked && !self.failed {
            self.failed = self.stream.write_all(b"0\r\n\r\n").is_err();
        }
        !self.failed
    }
}

impl exposition::Sink for Body<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.chunked && self.buf.is_empty() {
            self.buf.extend_from_slice(&[0; SIZE_LINE]);
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.send();
        }
    }
}

/// A response, before it is written.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Content,
    /// More header lines, each ending in CRLF.
    extra: &'static str,
}

enum Content {
    Text(String),
    /// The exposition, rendered as it is sent: in chunks for HTTP/1.1,
    /// to the end of the connection for HTTP/1.0.
    Exposition {
        chunked: bool,
    },
}

impl Reply {
    fn plain(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: PLAIN,
            body: Content::Text(body.into()),
            extra: "",
        }
    }
}

/// The reply to the request whose head is `raw`, and whether its body is
/// sent (not for HEAD).
fn answer(raw: &[u8], shared: &Shared, local: bool) -> (Reply, bool) {
    let req = match parse_request(raw) {
        Ok(r) => r,
        Err(505) => {
            return (
                Reply::plain(505, "HTTP version not supported: use HTTP/1.1\n"),
                true,
            )
        }
        Err(status) => return (Reply::plain(status, "bad request\n"), true),
    };
    let reply = match route(req.method, req.path) {
        Route::Metrics => Reply {
            status: 200,
            content_type: exposition::CONTENT_TYPE,
            body: Content::Exposition {
                chunked: req.version == "HTTP/1.1",
            },
            extra: "",
        },
        Route::Health => Reply::plain(200, "ok\n"),
        Route::Index => Reply::plain(200, index_page()),
        Route::NotFound => Reply::plain(404, "not found: try /metrics\n"),
        Route::NotAllowed => Reply {
            extra: if req.path == "/metrics" {
                "Allow: GET, HEAD, DELETE\r\n"
            } else {
                "Allow: GET, HEAD\r\n"
            },
            ..Reply::plain(405, "method not allowed: use GET\n")
        },
        Route::Delete => delete(req.query, shared, local),
    };
    (reply, req.method != "HEAD")
}

/// How long, at most, a connection is read after its response.
const LINGER: Duration = Duration::from_millis(500);

/// Reads, for a moment, what the client still sends (a body we did not
/// ask for, a second request), so that closing does not reset the
/// connection and throw away the response before the client has read it.
fn linger(stream: &mut TcpStream, within: Duration) {
    let until = Instant::now() + within;
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn index_page() -> String {
    format!(
        "patienced {}\n\nPrometheus metrics: /metrics\nHealth check: /healthz\n",
        env!("CARGO_PKG_VERSION")
    )
}

enum HeadError {
    /// The client closed, failed or took longer than `HEAD_TIMEOUT`.
    Gone,
    /// SIGTERM came first.
    Stopping,
    /// More than `MAX_HEAD` bytes without the blank line that ends a head.
    TooLarge,
}

/// Reads up to the blank line that ends the request head (the head alone,
/// without it), within `HEAD_TIMEOUT` in all.
fn read_head(stream: &mut TcpStream, stop: &AtomicBool) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(HeadError::Stopping);
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HeadError::Gone)?;
        // In slices, to see a stop.
        stream
            .set_read_timeout(Some(left.min(POLL)))
            .map_err(|_| HeadError::Gone)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return Err(HeadError::Gone),
        };
        // The end may straddle two reads: look again at the last 3 bytes.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            let end = from + end;
            // The limit counts the head up to and including its blank line.
            let blank = if buf[end..].starts_with(b"\n\r\n") { 3 } else { 2 };
            if end + blank > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head in `buf` ends: the position of the blank line's first
/// newline. Bare `\n` line ends are accepted, as most servers do.
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| buf[i..].starts_with(b"\n\r\n") || buf[i..].starts_with(b"\n\n"))
}

/// The parts of a request line patienced looks at.
#[derive(Debug, PartialEq)]
struct Request<'a> {
    method: &'a str,
    version: &'a str,
    /// What follows `?` in the target, if anything.
    query: Option<&'a str>,
    /// The target without its query string.
    path: &'a str,
}

/// Parses the request head `head` (without its blank line): the request
/// line `METHOD TARGET HTTP/1.x`, and the header lines as far as patienced
/// needs them (HTTP/1.1 requires exactly one `Host`). The error is the
/// status to answer: 400, or 505 for a well-formed version other than 1.0
/// and 1.1.
fn parse_request(head: &[u8]) -> Result<Request<'_>, u16> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = std::str::from_utf8(lines.next().ok_or(400u16)?).map_err(|_| 400u16)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') {
        return Err(400);
    }
    match version.as_bytes() {
        b"HTTP/1.0" | b"HTTP/1.1" => {}
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(505)
        }
        _ => return Err(400),
    }
    let mut hosts = 0;
    for line in lines {
        // A header line is `name: value`; a name has no space, and a line
        // that starts with one would continue the last (obsolete folding).
        let colon = line.iter().position(|&b| b == b':').ok_or(400u16)?;
        let name = &line[..colon];
        if name.is_empty()
            || name
                .iter()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(400);
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if version == "HTTP/1.1" && hosts != 1 || hosts > 1 {
        return Err(400);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Ok(Request {
        method,
        path,
        query,
        version,
    })
}

#[derive(Debug, PartialEq)]
enum Route {
    Metrics,
    Delete,
    Health,
    Index,
    NotFound,
    NotAllowed,
}

/// What a request for `path` with `method` gets: unknown paths 404 whatever
/// the method, known ones 405 unless read with GET or HEAD.
fn route(method: &str, path: &str) -> Route {
    let known = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        "/" => Route::Index,
        _ => return Route::NotFound,
    };
    match method {
        "GET" | "HEAD" => known,
        "DELETE" if known == Route::Metrics => Route::Delete,
        _ => Route::NotAllowed,
    }
}

/// `DELETE /metrics?command=NAME` (NAME percent-encoded): removes one
/// command's series, state file included at its next write. Only from
/// the loopback address: patienced has no authentication.
fn delete(query: Option<&str>, shared: &Shared, local: bool) -> Reply {
    if !local {
        return Reply::plain(403, "DELETE is only allowed from the loopback address\n");
    }
    let name = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("command="))
        .and_then(percent_decode);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Reply::plain(
            400,
            "usage: DELETE /metrics?command=NAME (NAME percent-encoded)\n",
        );
    };
    if shared.remove(&name) {
        log(&format!("removed command {name:?} (DELETE /metrics)"));
        Reply::plain(200, format!("removed {name}\n"))
    } else {
        Reply::plain(404, format!("no command {name}\n"))
    }
}

/// `%XX` escapes decoded (a `+` stays a `+`); None when that is not UTF-8
/// or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A response head for a body of `len` bytes (None: the body's length is
/// told by its framing, or by the end of the connection); `extra` is more
/// header lines, each ending in CRLF. Always `Connection: close`: one
/// request per connection.
fn head(status: u16, content_type: &str, len: Option<usize>, extra: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        503 => "Service Unavailable",
        _ => "",
    };
    let length = len
        .map(|n| format!("Content-Length: {n}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{length}\
         {extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_or_refused() {
        let ok = |m, p, q, v| {
            Ok(Request {
                method: m,
                path: p,
                query: q,
                version: v,
            })
        };
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x"),
            ok("GET", "/metrics", None, "HTTP/1.1")
        );
        assert_eq!(
            parse_request(b"HEAD /?a=b HTTP/1.0"),
            ok("HEAD", "/", Some("a=b"), "HTTP/1.0")
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1&y HTTP/1.1\nhOsT:x\nAccept: */*"),
            ok("GET", "/metrics", Some("x=1&y"), "HTTP/1.1")
        );
        for (bad, status) in [
            (&b""[..], 400),
            (b"GET", 400),
            (b"GET /metrics", 400),
            (b"GET /metrics HTTP/2", 400),
            (b"GET /metrics HTTP/1.1junk\r\nHost: x", 400),
            (b"GET /metrics HTTP/1.9\r\nHost: x", 505),
            (b"GET /metrics HTTP/2.0\r\nHost: x", 505),
            (b"GET /metrics HTTP/1.1", 400),
            (b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b", 400),
            (b"GET /metrics HTTP/1.0\r\nHost: a\r\nHost: b", 400),
            (b"GET /metrics HTTP/1.1\r\nHost : a", 400),
            (b"GET /metrics HTTP/1.1\r\nHost: a\r\nno colon", 400),
            (b"GET /metrics HTTP/1.1\r\nHost: a\r\n folded", 400),
            (b"GET  /metrics HTTP/1.1", 400),
            (b"get /metrics HTTP/1.1", 400),
            (b"GET metrics HTTP/1.1", 400),
            (b"GET /metrics HTTP/1.1 extra", 400),
            (b"GET /\xff HTTP/1.1", 400),
        ] {
            assert_eq!(
                parse_request(bad).map(|_| ()),
                Err(status),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn routes_follow_path_then_method() {
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("HEAD", "/metrics"), Route::Metrics);
        assert_eq!(route("GET", "/healthz"), Route::Health);
        assert_eq!(route("GET", "/"), Route::Index);
        assert_eq!(route("GET", "/metrics/"), Route::NotFound);
        assert_eq!(route("POST", "/nope"), Route::NotFound);
        assert_eq!(route("POST", "/metrics"), Route::NotAllowed);
        assert_eq!(route("DELETE", "/"), Route::NotAllowed);
        assert_eq!(route("DELETE", "/metrics"), Route::Delete);
        assert_eq!(percent_decode("a%20b%22%0Ac+d").as_deref(), Some("a b\"\nc+d"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody"), Some(19));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn response_heads_carry_length_and_close() {
        let h = String::from_utf8(head(405, PLAIN, Some(12), "Allow: GET, HEAD\r\n")).unwrap();
        assert_eq!(
            h,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 12\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"
        );
    }
}
