//! patienced's HTTP side: `GET /metrics`, `GET /` and `GET /healthz` over
//! tiny_http, answered by a fixed number of worker threads.
//!
//! Why a slow or stalled client cannot stop other scrapes: tiny_http reads
//! each connection on its own thread and hands a request to the workers only
//! once its head has arrived in full, so half a request occupies no worker.
//! A client that stops *reading* its response holds a worker for at most
//! `SEND_TIMEOUT` (SO_SNDTIMEO, inherited by accepted sockets). The exposition
//! is rendered into memory before anything is written, so the aggregate's
//! lock, and with it datagram intake, is never held during network I/O.
//!
//! tiny_http stops accepting for good when accept(2) fails (EMFILE under a
//! flood of idle connections); the worker that receives that error binds
//! the address again, so the daemon recovers once the flood is over.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::{exposition, log, Shared};

/// Worker threads answering requests.
pub const WORKERS: usize = 4;

/// The longest a worker waits on a client that does not read its response.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// The running HTTP server.
pub struct Http {
    pub addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

fn listen(addr: SocketAddr) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    crate::sys::set_send_timeout(&listener, SEND_TIMEOUT)?;
    Server::from_listener(listener, None).map_err(std::io::Error::other)
}

/// Binds `addr` and starts the workers; they stop once `stop` is set.
pub fn start(addr: SocketAddr, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> Result<Http, String> {
    let server = listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = match server.server_addr() {
        tiny_http::ListenAddr::IP(a) => a,
        _ => addr,
    };
    let current = Arc::new(RwLock::new(Arc::new(server)));
    let mut workers = Vec::with_capacity(WORKERS);
    for i in 0..WORKERS {
        let (current, shared, stop) = (current.clone(), shared.clone(), stop.clone());
        let worker = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || work(addr, &current, &shared, &stop))
            .map_err(|e| format!("cannot start an HTTP worker: {e}"))?;
        workers.push(worker);
    }
    Ok(Http { addr, workers })
}

impl Http {
    /// Waits for the workers to see the stop flag.
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn work(addr: SocketAddr, current: &RwLock<Arc<Server>>, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let server = current
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => respond(request, shared),
            Ok(None) => {}
            Err(e) => {
                log(&format!(
                    "HTTP server stopped accepting ({e}); listening again on {addr}"
                ));
                drop(server);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    match listen(addr) {
                        Ok(s) => {
                            *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
                            log(&format!("listening again on {addr}"));
                            break;
                        }
                        Err(e) => log(&format!("cannot listen on {addr} again: {e}")),
                    }
                }
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn text(status: u16, body: String, content_type: &str) -> Response<Cursor<Vec<u8>>> {
    // The body is in memory: always send a Content-Length, never chunks.
    Response::from_data(body.into_bytes())
        .with_chunked_threshold(usize::MAX)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

/// Answers one request. Write errors (a client gone, a send timeout) only
/// end that request.
fn respond(request: Request, shared: &Shared) {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = request.url().split('?').next().unwrap_or("");
    let known = matches!(path, "/" | "/metrics" | "/healthz");
    let readable = matches!(request.method(), Method::Get | Method::Head);
    let response = if !known {
        text(404, "not found: try /metrics\n".into(), PLAIN)
    } else if !readable {
        text(405, "method not allowed: use GET\n".into(), PLAIN).with_header(header("Allow", "GET, HEAD"))
    } else {
        match path {
            "/metrics" => text(200, shared.render(), exposition::CONTENT_TYPE),
            "/healthz" => text(200, "ok\n".into(), PLAIN),
            _ => text(
                200,
                format!(
                    "patienced {}\n\nPrometheus metrics: /metrics\nHealth check: /healthz\n",
                    env!("CARGO_PKG_VERSION")
                ),
                PLAIN,
            ),
        }
    };
    let _ = request.respond(response);
}
