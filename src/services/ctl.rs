//! `patiencectl VERB ...` (also `patience --ctl VERB ...`): the control
//! client of a running stack (patiencectl(1)). It finds the supervisor's
//! socket, sends JSON-RPC requests, and turns the answers into text and
//! an exit status: 0 done, 1 not done, 3 no supervisor, 4 no such service,
//! 124 timed out, 125 usage.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::control;

pub const DONE: i32 = 0;
pub const NOT_DONE: i32 = 1;
pub const NO_SUPERVISOR: i32 = 3;
pub const NO_SUCH_SERVICE: i32 = 4;
pub const TIMED_OUT: i32 = 124;
pub const USAGE: i32 = 125;

/// The client's failures, each with the exit status it gives.
#[derive(Debug)]
pub enum CtlError {
    Usage(String),
    NoSupervisor(String),
    NoSuchService(String),
    TimedOut(String),
    NotDone(String),
}

impl CtlError {
    fn status(&self) -> i32 {
        match self {
            CtlError::Usage(_) => USAGE,
            CtlError::NoSupervisor(_) => NO_SUPERVISOR,
            CtlError::NoSuchService(_) => NO_SUCH_SERVICE,
            CtlError::TimedOut(_) => TIMED_OUT,
            CtlError::NotDone(_) => NOT_DONE,
        }
    }

    fn message(&self) -> &str {
        match self {
            CtlError::Usage(m)
            | CtlError::NoSupervisor(m)
            | CtlError::NoSuchService(m)
            | CtlError::TimedOut(m)
            | CtlError::NotDone(m) => m,
        }
    }
}

impl From<lexopt::Error> for CtlError {
    fn from(e: lexopt::Error) -> Self {
        CtlError::Usage(e.to_string())
    }
}

pub const HELP: &str = "\
Usage: patiencectl [-f FILE | -s SOCKET] VERB [ARGS...]
       patience --ctl [-f FILE | -s SOCKET] VERB [ARGS...]
Control a stack run by `patience --services FILE` (patiencectl(1)).

Verbs:
  up [-d] [SERVICE...]     start services in the running supervisor; with
                           none running, run it (in the background with -d)
  down [-t DUR]            stop the stack; return once it is gone
  start SERVICE...         start services (and what they need)
  stop SERVICE...          stop services; return once they have stopped
  restart [SERVICE...]     stop and start again, skipping the backoff
  status, ps [--json]      the state of every service
  logs [-f] [-n N] [SERVICE...]
                           the last N lines (100) of each service; -f follows
  wait [-t DUR] [--for ready|succeeded] [SERVICE...]
                           until the services are ready (or succeeded)
  check                    0 if every critical service is ready or succeeded
  signal SIG SERVICE...    send SIG to the services' running attempts
  reset SERVICE...         forget failures and restart counts

Options:
  -f, --file FILE          the services file whose supervisor to reach
  -s, --socket SOCKET      the control socket to use
  -h, --help               this help
  -V, --version            the version

Without -f or -s: PATIENCE_CONTROL_SOCKET, else ./services.toml if present,
else the only svc-*.sock in the runtime directory.
Exit status: 0 done, 1 not done, 3 no supervisor, 4 no such service,
124 timed out, 125 usage.
";

/// Runs the client with `args` (after the program name or `--ctl`).
pub fn main(args: Vec<OsString>) -> i32 {
    match run(args) {
        Ok(status) => status,
        Err(e) => {
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "patiencectl: {}", e.message());
            if matches!(e, CtlError::Usage(_)) {
                let _ = writeln!(err, "Try 'patiencectl --help' for more information.");
            }
            e.status()
        }
    }
}

/// Where to reach the supervisor, as the global options say.
#[derive(Default)]
struct Target {
    file: Option<PathBuf>,
    socket: Option<PathBuf>,
}

fn text(v: OsString, what: &str) -> Result<String, CtlError> {
    v.into_string()
        .map_err(|raw| CtlError::Usage(format!("{what} {raw:?} is not valid UTF-8")))
}

fn duration(v: OsString, opt: &str) -> Result<Duration, CtlError> {
    let t = text(v, opt)?;
    crate::duration::parse(&t).map_err(|e| CtlError::Usage(format!("{opt}: {e}")))
}

fn run(args: Vec<OsString>) -> Result<i32, CtlError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut target = Target::default();
    let verb = loop {
        match parser.next()? {
            Some(Short('f') | Long("file")) => target.file = Some(parser.value()?.into()),
            Some(Short('s') | Long("socket")) => target.socket = Some(parser.value()?.into()),
            Some(Short('h') | Long("help")) => {
                let _ = io::stdout().lock().write_all(HELP.as_bytes());
                return Ok(DONE);
            }
            Some(Short('V') | Long("version")) => {
                println!("patiencectl (patience) {}", env!("CARGO_PKG_VERSION"));
                return Ok(DONE);
            }
            Some(Value(v)) => break text(v, "verb")?,
            Some(arg) => return Err(arg.unexpected().into()),
            None => {
                return Err(CtlError::Usage(
                    "a verb is needed (status, logs, up, down, ...)".into(),
                ))
            }
        }
    };
    if target.file.is_some() && target.socket.is_some() {
        return Err(CtlError::Usage("-f and -s exclude each other".into()));
    }
    // Each verb's own options and operands.
    let mut detach = false;
    let mut json_out = false;
    let mut follow = false;
    let mut lines: Option<u64> = None;
    let mut timeout: Option<Duration> = None;
    let mut goal: Option<String> = None;
    let mut operands: Vec<String> = Vec::new();
    while let Some(arg) = parser.next()? {
        match (verb.as_str(), arg) {
            ("up", Short('d') | Long("detach")) => detach = true,
            ("status" | "ps", Long("json")) => json_out = true,
            ("logs", Short('f') | Long("follow")) => follow = true,
            ("logs", Short('n') | Long("lines")) => {
                let t = text(parser.value()?, "-n")?;
                lines = Some(
                    t.parse()
                        .map_err(|_| CtlError::Usage(format!("-n: '{t}' is not a whole number of lines")))?,
                );
            }
            ("down" | "wait", Short('t') | Long("timeout")) => {
                timeout = Some(duration(parser.value()?, "-t")?)
            }
            ("wait", Long("for")) => {
                let t = text(parser.value()?, "--for")?;
                if t != "ready" && t != "succeeded" {
                    return Err(CtlError::Usage(format!(
                        "--for: '{t}' is not a goal (ready or succeeded)"
                    )));
                }
                goal = Some(t);
            }
            (_, Value(v)) => operands.push(text(v, "operand")?),
            (_, arg) => return Err(arg.unexpected().into()),
        }
    }
    let needs_names = ["start", "stop", "reset"];
    if needs_names.contains(&verb.as_str()) && operands.is_empty() {
        return Err(CtlError::Usage(format!("{verb}: name at least one service")));
    }
    let no_operands = ["down", "status", "ps", "check"];
    if no_operands.contains(&verb.as_str()) && !operands.is_empty() {
        return Err(CtlError::Usage(format!(
            "{verb} takes no operand: '{}'",
            operands[0]
        )));
    }
    match verb.as_str() {
        "up" => up(&target, detach, &operands),
        "down" => {
            let mut c = Client::connect(&target)?;
            let pid = c.call("ping", json!({}))?["pid"].as_i64();
            c.call("down", json!({ "timeout": timeout.map(|t| t.as_secs_f64()) }))?;
            // Answered by the end of the connection: the supervisor's exit,
            // whose last step the kernel may still be taking.
            c.drain();
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let end = Instant::now() + Duration::from_secs(2);
                while crate::sys::alive_not_zombie(pid) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(DONE)
        }
        "start" => simple(&target, "start", &operands),
        "restart" => simple(&target, "restart", &operands),
        "reset" => simple(&target, "reset", &operands),
        "stop" => {
            let mut c = Client::connect(&target)?;
            c.call("stop", json!({ "services": operands }))?;
            // Return once they have stopped.
            loop {
                let status = c.call("status", json!({}))?;
                let stopping = services(&status)
                    .iter()
                    .any(|s| operands.iter().any(|n| s["name"] == n.as_str()) && s["state"] == "stopping");
                if !stopping {
                    return Ok(DONE);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        "signal" => {
            if operands.len() < 2 {
                return Err(CtlError::Usage("signal: give a signal and at least one service".into()));
            }
            let sig = operands.remove(0);
            crate::signals::parse(&sig).map_err(|e| CtlError::Usage(format!("signal: {e}")))?;
            let mut c = Client::connect(&target)?;
            let r = c.call("signal", json!({ "signal": sig, "services": operands }))?;
            let done: Vec<&str> = r["signalled"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            let missed: Vec<&String> = operands.iter().filter(|n| !done.contains(&n.as_str())).collect();
            if missed.is_empty() {
                Ok(DONE)
            } else {
                let missed: Vec<&str> = missed.iter().map(|s| s.as_str()).collect();
                Err(CtlError::NotDone(format!("not running: {}", missed.join(", "))))
            }
        }
        "status" | "ps" => {
            let mut c = Client::connect(&target)?;
            let status = c.call("status", json!({}))?;
            let out = if json_out {
                format!("{status}\n")
            } else {
                table(&status)
            };
            let _ = io::stdout().lock().write_all(out.as_bytes());
            Ok(DONE)
        }
        "logs" => logs(&target, follow, lines, &operands),
        "wait" => {
            let mut c = Client::connect(&target)?;
            let params = json!({
                "services": operands,
                "for": goal.unwrap_or_else(|| "ready".into()),
                "timeout": timeout.map(|t| t.as_secs_f64()),
            });
            let r = c.call("wait", params)?;
            if r["ok"] == true {
                Ok(DONE)
            } else {
                let not: Vec<&str> = r["not"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
                    .unwrap_or_default();
                Err(CtlError::NotDone(format!("will not get there: {}", not.join(", "))))
            }
        }
        "check" => {
            let mut c = Client::connect(&target)?;
            let status = c.call("status", json!({}))?;
            let bad: Vec<String> = services(&status)
                .iter()
                .filter(|s| s["critical"] == true && s["selected"] == true)
                .filter(|s| s["state"] != "ready" && s["state"] != "succeeded")
                .map(|s| format!("{} {}", s["name"].as_str().unwrap_or(""), s["state"].as_str().unwrap_or("")))
                .collect();
            if bad.is_empty() && status["shutting_down"] != true {
                Ok(DONE)
            } else if status["shutting_down"] == true {
                Err(CtlError::NotDone("the stack is shutting down".into()))
            } else {
                Err(CtlError::NotDone(format!("not ready: {}", bad.join(", "))))
            }
        }
        other => Err(CtlError::Usage(format!(
            "unknown verb '{other}' (up, down, start, stop, restart, status, logs, wait, check, signal, reset)"
        ))),
    }
}

fn services(status: &Value) -> Vec<Value> {
    status["services"].as_array().cloned().unwrap_or_default()
}

fn simple(target: &Target, method: &str, operands: &[String]) -> Result<i32, CtlError> {
    let mut c = Client::connect(target)?;
    c.call(method, json!({ "services": operands }))?;
    Ok(DONE)
}

/// The services file for `-f`, or `./services.toml` if present.
fn file_of(target: &Target) -> Option<PathBuf> {
    target.file.clone().or_else(|| {
        let p = PathBuf::from("services.toml");
        p.is_file().then_some(p)
    })
}

/// The socket to use, by the rule of patiencectl(1).
fn socket_of(target: &Target) -> Result<PathBuf, CtlError> {
    if let Some(s) = &target.socket {
        return Ok(s.clone());
    }
    if target.file.is_none() {
        if let Some(p) = std::env::var_os("PATIENCE_CONTROL_SOCKET").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
    }
    if let Some(file) = file_of(target) {
        return socket_for_file(&file);
    }
    let dir = control::runtime_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("svc-") && n.ends_with(".sock"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Err(CtlError::NoSupervisor(format!(
            "no supervisor found: no ./services.toml and no svc-*.sock in {} (use -f FILE or -s SOCKET)",
            dir.display()
        ))),
        1 => Ok(found.remove(0)),
        _ => {
            let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            Err(CtlError::Usage(format!(
                "several supervisors run; name one with -f FILE or -s SOCKET: {}",
                list.join(", ")
            )))
        }
    }
}

fn socket_for_file(file: &Path) -> Result<PathBuf, CtlError> {
    if !file.exists() {
        return Err(CtlError::Usage(format!("-f: {}: no such file", file.display())));
    }
    // The file may name its own socket; a file that no longer parses
    // still has the rule's.
    let configured = super::file::load(file).ok().and_then(|s| s.group.control_socket);
    control::socket_path(file, configured.as_deref())
        .map_err(|e| CtlError::Usage(format!("-f: {}: {e}", file.display())))
}

/// One connection to the supervisor.
struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    fn connect(target: &Target) -> Result<Client, CtlError> {
        let path = socket_of(target)?;
        Client::at(&path)
    }

    fn at(path: &Path) -> Result<Client, CtlError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            CtlError::NoSupervisor(format!("no supervisor answers on {}: {e}", path.display()))
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| CtlError::NoSupervisor(format!("{}: {e}", path.display())))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    fn send(&mut self, method: &str, params: Value) -> Result<u64, CtlError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
                .unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = self.writer.write_all(&line) {
            // Refused at once (busy, not permitted): the reason is there
            // to read.
            if let Some(v) = self.next() {
                if let Some(err) = v.get("error") {
                    return Err(rpc_error(err));
                }
            }
            return Err(CtlError::NoSupervisor(format!("the supervisor went away: {e}")));
        }
        Ok(id)
    }

    /// The next line from the supervisor, None at the end.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(&line).ok(),
        }
    }

    /// Sends a request and waits for its answer (skipping notifications).
    fn call(&mut self, method: &str, params: Value) -> Result<Value, CtlError> {
        let id = self.send(method, params)?;
        loop {
            let Some(v) = self.next() else {
                return Err(CtlError::NoSupervisor(
                    "the supervisor closed the connection".into(),
                ));
            };
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                if v.get("id").is_some_and(|i| i.is_null()) && v.get("error").is_some() {
                    return Err(rpc_error(&v["error"]));
                }
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(rpc_error(e));
            }
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Reads until the supervisor closes the connection.
    fn drain(&mut self) {
        while self.next().is_some() {}
    }
}

fn rpc_error(e: &Value) -> CtlError {
    let msg = e["message"].as_str().unwrap_or("error").to_string();
    match e["code"].as_i64() {
        Some(control::NO_SUCH_SERVICE) => CtlError::NoSuchService(msg),
        Some(control::TIMED_OUT) => CtlError::TimedOut(msg),
        Some(control::INVALID_PARAMS) => CtlError::Usage(msg),
        _ => CtlError::NotDone(msg),
    }
}

/// `up`: start services in a running supervisor, else run one.
fn up(target: &Target, detach: bool, names: &[String]) -> Result<i32, CtlError> {
    let socket = socket_of(target);
    if let Ok(path) = &socket {
        if let Ok(mut c) = Client::at(path) {
            c.call("start", json!({ "services": names }))?;
            return Ok(DONE);
        }
    }
    let Some(file) = file_of(target) else {
        return Err(match socket {
            Err(e) => e,
            Ok(p) => CtlError::NoSupervisor(format!(
                "no supervisor answers on {} and no services file to start one (-f FILE)",
                p.display()
            )),
        });
    };
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .or_else(|| std::env::args_os().next().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("patience"));
    let mut cmd = Command::new(exe);
    cmd.arg("--services").arg(&file);
    if !names.is_empty() {
        cmd.arg("--").args(names);
    }
    if !detach {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        return Err(CtlError::NotDone(format!("cannot run patience --services: {e}")));
    }
    let path = socket_for_file(&file)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::sys::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| CtlError::NotDone(format!("cannot run patience --services: {e}")))?;
    // Returns once the supervisor answers ping; says why if it ends first.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::at(&path) {
            if c.call("ping", json!({})).is_ok() {
                return Ok(DONE);
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(CtlError::NotDone(format!(
                "the supervisor ended before it answered ({st}); run `patience --services {}` to see why",
                file.display()
            )));
        }
        if Instant::now() >= end {
            return Err(CtlError::TimedOut(
                "the supervisor did not answer within 30s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn logs(target: &Target, follow: bool, lines: Option<u64>, names: &[String]) -> Result<i32, CtlError> {
    let mut c = Client::connect(target)?;
    let r = c.call(
        "logs",
        json!({ "services": names, "lines": lines.unwrap_or(100), "follow": follow }),
    )?;
    let width = r["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["service"].as_str())
                .map(str::len)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
        .max(names.iter().map(String::len).max().unwrap_or(0));
    let mut out = io::stdout().lock();
    for l in r["lines"].as_array().into_iter().flatten() {
        if print_line(&mut out, l, width).is_err() {
            return Ok(DONE);
        }
    }
    let _ = out.flush();
    if follow {
        while let Some(v) = c.next() {
            if v["method"] == "log" && print_line(&mut out, &v["params"], width).is_err() {
                break;
            }
            let _ = out.flush();
        }
    }
    Ok(DONE)
}

/// `name | line`, with the line's exact bytes when it was not UTF-8.
fn print_line(out: &mut impl Write, l: &Value, width: usize) -> io::Result<()> {
    let name = l["service"].as_str().unwrap_or("");
    let bytes = match l
        .get("base64")
        .and_then(Value::as_str)
        .and_then(control::unbase64)
    {
        Some(b) => b,
        None => l["text"].as_str().unwrap_or("").as_bytes().to_vec(),
    };
    let mut line = format!("{name:<width$} | ").into_bytes();
    line.extend_from_slice(&bytes);
    line.push(b'\n');
    out.write_all(&line)
}

/// A duration as status shows it: `3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn since(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The status table of patiencectl(1).
pub fn table(status: &Value) -> String {
    let head = [
        "SERVICE",
        "STATE",
        "ATTEMPT",
        "PID",
        "SINCE",
        "RESTARTS",
        "LAST EXIT",
        "NOTE",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for s in services(status) {
        let dash = |v: &Value| match v {
            Value::Null => "-".to_string(),
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        let attempt = match s["attempt"].as_u64() {
            Some(0) | None => "-".into(),
            Some(n) => n.to_string(),
        };
        rows.push(vec![
            dash(&s["name"]),
            dash(&s["state"]),
            attempt,
            dash(&s["pid"]),
            since(s["since_s"].as_f64().unwrap_or(0.0)),
            dash(&s["restarts"]),
            dash(&s["last_exit"]),
            dash(&s["note"]),
        ]);
    }
    let cols = head.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for c in 0..cols {
            if c + 1 == cols {
                line.push_str(&r[c]);
            } else {
                line.push_str(&format!("{:<w$}  ", r[c], w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_like_the_status_table() {
        assert_eq!(since(3.4), "3s");
        assert_eq!(since(245.0), "4m05s");
        assert_eq!(since(7380.0), "2h03m");
        assert_eq!(since(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
    }

    #[test]
    fn the_table_aligns_columns_and_dashes_what_is_missing() {
        let status = json!({ "services": [
            { "name": "db", "state": "ready", "attempt": 1, "pid": 14, "since_s": 7380.0,
              "restarts": 0, "last_exit": null, "note": "ready: pattern" },
            { "name": "migrate", "state": "succeeded", "attempt": 2, "pid": null, "since_s": 7320.0,
              "restarts": 1, "last_exit": "exit code 0", "note": "" },
        ]});
        let t = table(&status);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE  STATE      ATTEMPT  PID  SINCE  RESTARTS  LAST EXIT    NOTE"
        );
        assert_eq!(
            lines[1],
            "db       ready      1        14   2h03m  0         -            ready: pattern"
        );
        assert_eq!(
            lines[2],
            "migrate  succeeded  2        -    2h02m  1         exit code 0"
        );
    }
}
