//! The control socket of a running stack (SERVICES.md §7): where it lives,
//! who may connect, and JSON-RPC 2.0 framing over it, one JSON value per
//! line. The acceptor and one thread per connection only parse and frame;
//! each request becomes a [`Call`] for the event loop, which owns all
//! state and answers over the call's channel (`supervisor::Sup::control`).
//!
//! Bounds, so that a hostile or broken client never disturbs the stack or
//! other clients: 16 connections at once (the 17th gets -32002 and is
//! closed), 64 KiB per request line, 5 s to send a request; every peer is
//! checked with SO_PEERCRED (our uid or root, else -32005).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::supervisor::Msg;

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_REQUEST: usize = 64 * 1024;
pub const REQUEST_TIME: Duration = Duration::from_secs(5);

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const NO_SUCH_SERVICE: i64 = -32001;
pub const BUSY: i64 = -32002;
pub const SHUTTING_DOWN: i64 = -32003;
pub const TIMED_OUT: i64 = -32004;
pub const NOT_PERMITTED: i64 = -32005;

/// The methods, for `-32601` and the docs test.
pub const METHODS: &[&str] = &[
    "ping",
    "status",
    "start",
    "stop",
    "restart",
    "signal",
    "reset",
    "logs",
    "wait",
    "subscribe",
    "down",
];

/// A JSON-RPC error: code, message, and optional data.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn no_such_service(name: &str) -> RpcError {
        RpcError {
            code: NO_SUCH_SERVICE,
            message: format!("no such service: {name}"),
            data: Some(json!({ "service": name })),
        }
    }
}

/// What the event loop sends back to a connection.
#[derive(Debug)]
pub enum Out {
    /// The answer; `more` keeps the connection writing notifications
    /// (`logs` with follow, `subscribe`, `down`) until the client leaves.
    Reply(Result<Value, RpcError>, bool),
    /// A notification: `{"jsonrpc":"2.0","method":M,"params":P}`.
    Note(&'static str, Value),
}

/// One request for the event loop.
#[derive(Debug)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub out: Sender<Out>,
}

/// The socket path for the services file at `file`: the override (the
/// environment's `PATIENCE_CONTROL_SOCKET`, then `control-socket`), else
/// `svc-HASH.sock` in the runtime directory.
pub fn socket_path(file: &Path, configured: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PATIENCE_CONTROL_SOCKET").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    Ok(runtime_dir().join(format!("svc-{}.sock", file_hash(&std::fs::canonicalize(file)?))))
}

/// The first 16 hex digits of the SHA-256 of a canonical path: a fixed
/// length, so the socket path stays far below sun_path's 108 bytes
/// whatever the file's path.
pub fn file_hash(canonical: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(canonical.as_os_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `$XDG_RUNTIME_DIR/patience`, else `/tmp/patience-UID` (also when
/// XDG_RUNTIME_DIR names no directory: a login's stale variable in cron).
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty() && Path::new(d).is_dir()) {
        Some(d) => PathBuf::from(d).join("patience"),
        None => PathBuf::from(format!("/tmp/patience-{}", crate::sys::geteuid())),
    }
}

/// Why the socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another supervisor answers on it: its pid, if it said.
    Live(Option<i64>),
    Other(String),
}

/// Makes the runtime directory (0700, ours, never a symlink) if the path is
/// the rule's, replaces a stale socket, and listens.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let other = |what: String| BindError::Other(format!("control socket {}: {what}", path.display()));
    if path.as_os_str().len() >= 108 {
        return Err(other(
            "the path is longer than the 107 bytes a socket path can have".into(),
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir == runtime_dir() {
        private_dir(dir).map_err(other)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(stream) => return Err(BindError::Live(ping_pid(stream))),
            // Nobody listens: a supervisor of ours that died.
            Err(_) => std::fs::remove_file(path)
                .map_err(|e| other(format!("cannot remove the stale socket: {e}")))?,
        },
        Ok(_) => return Err(other("exists and is not a socket".into())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| other(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| other(e.to_string()))?;
    Ok(listener)
}

/// Creates `dir` 0700 if missing; refuses one that is a symlink, not ours
/// or open to others (another user could otherwise plant the socket).
fn private_dir(dir: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(format!("cannot create {}: {e}", dir.display()));
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (a symlink is refused)",
            dir.display()
        ));
    }
    if meta.uid() != crate::sys::geteuid() {
        return Err(format!(
            "{} belongs to uid {}, not to us",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to others (mode {:o}; it must be 0700)",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Asks a live supervisor its pid (for "another supervisor runs this file").
fn ping_pid(mut stream: UnixStream) -> Option<i64> {
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream)
        .take(MAX_REQUEST as u64)
        .read_line(&mut line)
        .ok()?;
    let v: Value = serde_json::from_str(&line).ok()?;
    v["result"]["pid"].as_i64()
}

/// Starts the acceptor thread.
pub fn serve(listener: UnixListener, tx: Sender<Msg>) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let allowed = crate::sys::peer_uid(stream.as_fd())
                    .is_ok_and(|uid| uid == 0 || uid == crate::sys::geteuid());
                if !allowed {
                    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
                    let _ = stream.write_all(&error_line(
                        &Value::Null,
                        &RpcError::new(NOT_PERMITTED, "not permitted: another user's supervisor"),
                    ));
                    continue;
                }
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
                    let _ = stream.write_all(&error_line(
                        &Value::Null,
                        &RpcError::new(BUSY, format!("busy: {MAX_CONNECTIONS} clients are connected")),
                    ));
                    continue;
                }
                let tx = tx.clone();
                let active = Arc::clone(&active);
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        connection(stream, &tx);
                        active.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    // The closure (and its count) is dropped unrun.
                    continue;
                }
            }
        })?;
    Ok(())
}

/// Reads one request line: None at end of file, time out or too long
/// (the last answered first).
fn read_request(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .ok()?;
    if n == 0 {
        return None;
    }
    if line.len() > MAX_REQUEST && !line.ends_with(b"\n") {
        let _ = writer.write_all(&error_line(
            &Value::Null,
            &RpcError::new(
                INVALID_REQUEST,
                format!("request longer than {MAX_REQUEST} bytes"),
            ),
        ));
        return None;
    }
    Some(line)
}

fn connection(stream: UnixStream, tx: &Sender<Msg>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let _ = writer.set_write_timeout(Some(REQUEST_TIME));
    // A request must arrive whole within REQUEST_TIME; an idle client is
    // let go after as long, so that it cannot hold a connection for ever.
    let _ = stream.set_read_timeout(Some(REQUEST_TIME));
    let mut reader = BufReader::new(stream);
    while let Some(line) = read_request(&mut reader, &mut writer) {
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let (id, call) = match parse_request(&text) {
            Ok(parsed) => parsed,
            Err((id, e)) => {
                if writer.write_all(&error_line(&id, &e)).is_err() {
                    return;
                }
                continue;
            }
        };
        let (out, rx) = mpsc::channel();
        if tx
            .send(Msg::Control(Call {
                method: call.0,
                params: call.1,
                out,
            }))
            .is_err()
        {
            return;
        }
        let notification = id.is_none();
        let id = id.unwrap_or(Value::Null);
        loop {
            let Ok(msg) = rx.recv() else { return };
            let (bytes, done) = match msg {
                Out::Reply(Ok(v), more) => (result_line(&id, v), !more),
                Out::Reply(Err(e), _) => (error_line(&id, &e), true),
                Out::Note(method, params) => (note_line(method, params), false),
            };
            if !(notification && done) && writer.write_all(&bytes).is_err() {
                return;
            }
            if done {
                break;
            }
            // A streaming reply: no more requests on this connection.
        }
    }
}

type Parsed = (Option<Value>, (String, Value));

/// A request's id (None for a notification), method and params.
fn parse_request(text: &str) -> Result<Parsed, (Value, RpcError)> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            RpcError::new(PARSE_ERROR, format!("parse error: {e}")),
        )
    })?;
    let invalid = |id: &Value, why: &str| {
        (
            id.clone(),
            RpcError::new(INVALID_REQUEST, format!("invalid request: {why}")),
        )
    };
    let Value::Object(map) = &v else {
        return Err(invalid(
            &Value::Null,
            "expected an object (batches are not supported)",
        ));
    };
    let id = map.get("id").cloned();
    let id_ok = matches!(id, None | Some(Value::Null | Value::Number(_) | Value::String(_)));
    if !id_ok {
        return Err(invalid(&Value::Null, "id must be a number, a string or null"));
    }
    let shown = id.clone().unwrap_or(Value::Null);
    if map.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(invalid(&shown, "\"jsonrpc\" must be \"2.0\""));
    }
    let Some(Value::String(method)) = map.get("method") else {
        return Err(invalid(&shown, "\"method\" must be a string"));
    };
    let params = match map.get("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err((
                shown,
                RpcError::new(
                    INVALID_PARAMS,
                    "invalid params: expected an object of named params",
                ),
            ))
        }
    };
    if !METHODS.contains(&method.as_str()) {
        return Err((
            shown,
            RpcError::new(METHOD_NOT_FOUND, format!("method not found: {method}")),
        ));
    }
    Ok((id, (method.clone(), params)))
}

fn line_of(v: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn result_line(id: &Value, result: Value) -> Vec<u8> {
    line_of(&json!({ "jsonrpc": "2.0", "id": id, "result": result }))
}

fn error_line(id: &Value, e: &RpcError) -> Vec<u8> {
    let mut err = json!({ "code": e.code, "message": e.message });
    if let Some(d) = &e.data {
        err["data"] = d.clone();
    }
    line_of(&json!({ "jsonrpc": "2.0", "id": id, "error": err }))
}

fn note_line(method: &str, params: Value) -> Vec<u8> {
    line_of(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
}

/// Base64 (RFC 4648, padded), for a log line that is not UTF-8: JSON
/// carries its exact bytes beside the replaced text.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inverse of [`base64`]; None on anything but its output.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let t = text.as_bytes();
    if t.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for chunk in t.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_16_hex_digits_of_sha256() {
        // sha256("/srv/app/services.toml"), first 8 bytes.
        let h = file_hash(Path::new("/srv/app/services.toml"));
        assert_eq!(h.len(), 16);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(h, file_hash(Path::new("/srv/app/services2.toml")));
        // Known value: sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(file_hash(Path::new("abc")), "ba7816bf8f01cfea");
    }

    #[test]
    fn requests_are_checked_as_json_rpc_2() {
        let ok = parse_request(r#"{"jsonrpc":"2.0","id":7,"method":"status"}"#).unwrap();
        assert_eq!(ok.0, Some(json!(7)));
        assert_eq!(ok.1 .0, "status");
        let code = |t: &str| parse_request(t).err().map(|(_, e)| e.code);
        assert_eq!(code("{"), Some(PARSE_ERROR));
        assert_eq!(code("[1]"), Some(INVALID_REQUEST));
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), Some(INVALID_REQUEST));
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#),
            Some(METHOD_NOT_FOUND)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#),
            Some(INVALID_PARAMS)
        );
        let note = parse_request(r#"{"jsonrpc":"2.0","method":"ping"}"#).unwrap();
        assert_eq!(note.0, None);
    }

    #[test]
    fn base64_round_trips_any_bytes() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        for n in 0..300usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(unbase64("Zg="), None);
    }
}
