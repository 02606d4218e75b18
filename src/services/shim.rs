//! The line protocol between the supervisor and a service's shim.
//!
//! A shim is plain patience: the supervisor runs `patience --no-config
//! --init OPTIONS -- COMMAND` with one more descriptor, a Unix stream
//! socket named by [`FD_VAR`]. Without it the same command line behaves
//! exactly as a user's. Over it go JSON values, one per line:
//!
//! shim → supervisor
//! - `{"ev":"start","attempt":N}`: attempt N is about to be executed;
//! - `{"ev":"pid","pid":P}`: the current attempt's process is P;
//! - `{"ev":"end","attempt":N,"ok":BOOL,"exit":TEXT}`: attempt N ended
//!   (its verdict, and how: `exit code 1`, `timeout after 5s`);
//! - `{"ev":"backoff","delay_ms":MS}`: the next attempt comes after MS;
//! - `{"ev":"say","line":TEXT}`: one of patience's own lines (attempt
//!   failed, restarting in 4s, the final line), which the supervisor
//!   prints as `[patience] NAME: TEXT`.
//!
//! supervisor → shim
//! - `{"op":"end"}`: end the current attempt as a timeout would (not ready
//!   in time): a failed attempt under the service's policy and backoff;
//! - `{"op":"stop"}`: stop the run: the service's `--signal` to the
//!   attempt, SIGKILL after its `--kill-after`, no further attempt;
//! - `{"op":"signal","signal":N}`: deliver signal N to the attempt's main
//!   process (`patiencectl signal`), whatever it would mean to patience;
//! - `{"op":"go","attempt":N}`: the answer to `start`: from now on the
//!   supervisor counts the output it reads as attempt N's. The shim waits
//!   for it (at most a second) before it executes the attempt, so that no
//!   line of attempt N is taken for attempt N-1's.
//!
//! The run's end is the shim's exit, with the run's exit status.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::child::Event;

/// The internal environment variable naming the shim's descriptor.
pub const FD_VAR: &str = "PATIENCE_SERVICE_FD";

/// The descriptor number the supervisor gives every shim.
pub const FD: i32 = 3;

/// What a shim reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Report {
    Start {
        attempt: u64,
    },
    Pid {
        pid: i32,
    },
    End {
        attempt: u64,
        ok: bool,
        #[serde(default)]
        exit: String,
    },
    Backoff {
        delay_ms: u64,
    },
    Say {
        line: String,
    },
}

/// What the supervisor asks of a shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Order {
    End,
    Stop,
    Signal { signal: i32 },
    Go { attempt: u64 },
}

/// One line of the protocol.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    v
}

/// The shim's side of the socket, when it is a shim.
static LINK: OnceLock<Mutex<UnixStream>> = OnceLock::new();

/// Takes the supervisor's descriptor, if this patience is a shim, and
/// removes the variable so that no attempt sees it. Call first in `main`,
/// before any thread starts.
pub fn adopt() {
    let Some(value) = std::env::var_os(FD_VAR) else {
        return;
    };
    std::env::remove_var(FD_VAR);
    let fd = value.to_str().and_then(|v| v.parse::<i32>().ok());
    if let Some(owned) = fd.and_then(crate::sys::take_fd) {
        let _ = LINK.set(Mutex::new(UnixStream::from(owned)));
    }
}

fn send(report: &Report) -> bool {
    let Some(link) = LINK.get() else {
        return false;
    };
    let mut stream = link.lock().unwrap_or_else(|e| e.into_inner());
    // A supervisor gone is no reason to stop the service: PDEATHSIG ends
    // the shim when it matters. Say it on stderr instead.
    stream.write_all(&encode(report)).is_ok()
}

/// Sends one of patience's own lines to the supervisor; false when this is
/// no shim (the caller prints it).
pub fn say(line: &str) -> bool {
    send(&Report::Say {
        line: line.to_string(),
    })
}

/// The last attempt the supervisor said `go` for.
static GO: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// How long a shim waits for `go`: a supervisor that does not answer (its
/// link gone) delays an attempt by this much, never more.
const GO_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub fn attempt_started(attempt: u64) {
    if !send(&Report::Start { attempt }) {
        return;
    }
    let (lock, cond) = &GO;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _ = cond.wait_timeout_while(guard, GO_WAIT, |go| *go < attempt);
}

pub fn attempt_pid(pid: i32) {
    send(&Report::Pid { pid });
}

pub fn attempt_ended(attempt: u64, ok: bool, exit: &str) {
    send(&Report::End {
        attempt,
        ok,
        exit: exit.to_string(),
    });
}

pub fn backoff(delay: std::time::Duration) {
    send(&Report::Backoff {
        delay_ms: delay.as_millis().min(u64::MAX as u128) as u64,
    });
}

/// Starts the thread that turns the supervisor's orders into events of the
/// attempt loop. Nothing when this is no shim.
pub fn listen(tx: Sender<Event>) {
    let Some(link) = LINK.get() else {
        return;
    };
    let Ok(reader) = link.lock().unwrap_or_else(|e| e.into_inner()).try_clone() else {
        return;
    };
    let _ = std::thread::Builder::new().name("shim".into()).spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let event = match serde_json::from_str::<Order>(&line) {
                Ok(Order::End) => Event::End,
                Ok(Order::Stop) => Event::Stop,
                Ok(Order::Signal { signal }) => Event::Deliver(signal),
                Ok(Order::Go { attempt }) => {
                    let (lock, cond) = &GO;
                    *lock.lock().unwrap_or_else(|e| e.into_inner()) = attempt;
                    cond.notify_all();
                    continue;
                }
                Err(_) => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let r = Report::End {
            attempt: 3,
            ok: false,
            exit: "exit code 1".into(),
        };
        let line = encode(&r);
        assert_eq!(
            line,
            b"{\"ev\":\"end\",\"attempt\":3,\"ok\":false,\"exit\":\"exit code 1\"}\n"
        );
        assert_eq!(serde_json::from_slice::<Report>(&line).unwrap(), r);
        assert_eq!(encode(&Order::Stop), b"{\"op\":\"stop\"}\n");
    }
}
