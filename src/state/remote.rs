//! The Redis store (`--state-url`): the breaker, the token bucket and the
//! slots of a key on a server that every host of a fleet names.
//!
//! Each operation is one Lua script, run atomically by the server, on the
//! server's clock (`TIME`), so hosts whose clocks disagree still agree on
//! when a breaker half-opens or a token comes. The keys of key `K`:
//! - `patience:K:breaker`, a hash: phase, consecutive failures, when it
//!   opened and for how long; the half-open probe's holder, since when, and
//!   until when its lease lasts.
//! - `patience:K:bucket`, a hash: the bucket's GCRA time (`tat`, µs) and
//!   the rate last used; it expires once the bucket is full again.
//! - `patience:K:slots`, a sorted set: one member per slot holder, scored
//!   by when its lease ends (µs). Expired members are swept by the next
//!   admission, so a SIGKILLed run or a crashed host frees its slot within
//!   the lease.
//! - `patience:K:slots-max`: the last limit, for `--state`.
//!
//! A PID means nothing on another host, so holders are `PID@HOST #NONCE`
//! and hold leases, not PIDs: while a run holds a slot or the probe, a
//! thread renews its lease every third of the lease time. Times are µs
//! (an f64 is exact there for centuries; ns would not be).
//!
//! Failure policy, as the file store's: a server that cannot be reached,
//! answers too slowly (the URL's `timeout`, 100 ms by default) or answers
//! with an error makes the run go on without its shared state, with one
//! warning; only an unreadable password file is patience's own error.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Script, Value};

use super::breaker;
use super::url::{Addr, StateUrl};
use super::{Admission, Limits};
use crate::messages::say;

const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function f(x) return string.format('%.17g', x) end
local id, first = ARGV[1], ARGV[2] == '1'
local threshold, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
local max, lease = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens, per = tonumber(ARGV[7]), tonumber(ARGV[8])
local maxwait, cap = tonumber(ARGV[9]), tonumber(ARGV[10])
local probe = 0
if threshold > 0 then
  local b = redis.call('HMGET', KEYS[1], 'phase', 'failures', 'opened', 'cooldown', 'probe', 'probe_since', 'probe_until')
  local phase = b[1] or 'closed'
  if phase == 'open' then
    local cd = tonumber(b[4] or '0')
    if cd <= 0 then cd = cooldown end
    local elapsed = math.max(now - tonumber(b[3] or '0'), 0)
    local left = math.min(math.max(cd - elapsed, 0), cd)
    if left > 0 then return {'open', math.ceil(left), tonumber(b[2] or '0')} end
    probe = 2
  elseif phase == 'half-open' then
    local holder = b[5]
    if holder == id then
      probe = 1
    elseif holder and now < tonumber(b[7] or '0') and now - tonumber(b[6] or '0') < cap then
      return {'probing', holder}
    else
      probe = 2
    end
  end
end
local slot = 0
if first and max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', f(now))
  if redis.call('ZCARD', KEYS[3]) >= max then
    return {'full', redis.call('ZRANGE', KEYS[3], 0, -1)}
  end
  slot = 1
end
local wait, tat = 0, 0
if tokens > 0 then
  local interval = per / tokens
  tat = math.max(tonumber(redis.call('HGET', KEYS[2], 'tat') or '0'), now) + interval
  wait = math.max(tat - interval * tokens - now, 0)
  if maxwait >= 0 and wait > maxwait then return {'late', math.ceil(wait)} end
end
if probe == 2 then
  redis.call('HSET', KEYS[1], 'phase', 'half-open', 'probe', id, 'probe_since', f(now), 'probe_until', f(now + lease))
end
if slot == 1 then
  local keep = math.ceil(lease / 1000) * 2 + 1000
  redis.call('ZADD', KEYS[3], f(now + lease), id)
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('SET', KEYS[4], max, 'PX', keep)
end
if tokens > 0 then
  redis.call('HSET', KEYS[2], 'tat', f(tat), 'tokens', tokens, 'per', f(per))
  redis.call('PEXPIRE', KEYS[2], math.ceil((tat - now) / 1000) + 1000)
end
if probe > 0 then probe = 1 end
return {'ok', probe, slot, math.ceil(wait)}
";

const RECORD: &str = r"
local id = ARGV[1]
if ARGV[2] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[1]) end
  return {0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local b = redis.call('HMGET', KEYS[1], 'phase', 'failures', 'probe')
local phase = b[1] or 'closed'
local failures = tonumber(b[2] or '0') + 1
local reopen = false
if phase == 'closed' then
  reopen = failures >= tonumber(ARGV[3])
elseif phase == 'half-open' then
  reopen = (not b[3]) or b[3] == id
end
if reopen then
  redis.call('HSET', KEYS[1], 'phase', 'open', 'failures', failures, 'opened', string.format('%.17g', now), 'cooldown', ARGV[4])
  redis.call('HDEL', KEYS[1], 'probe', 'probe_since', 'probe_until')
  return {1, failures}
end
redis.call('HSET', KEYS[1], 'failures', failures)
return {0, failures}
";

const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = string.format('%.17g', now + tonumber(ARGV[2]))
local held = 0
if ARGV[3] == '1' and redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], 'XX', until_, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) / 1000) * 2 + 1000)
  held = held + 1
end
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'probe_until', until_)
  held = held + 2
end
return held
";

const RELEASE: &str = r"
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if ARGV[3] == '1' and redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_since', 'probe_until')
end
return 1
";

const SHOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. string.format('%.17g', now), '+inf')
return {string.format('%.17g', now), redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), live, redis.call('GET', KEYS[4]) or ''}
";

const RESET: &str = r"
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
";

/// Why the Redis store cannot be used.
#[derive(Debug)]
pub enum RemoteError {
    /// `state-url-password-file` cannot be read: patience's own error.
    PasswordFile(String),
    /// The server cannot be reached or used: the run goes on without it.
    Unavailable(String),
}

/// A holder's name as messages show it: `PID@HOST`, without the nonce.
pub fn shown(id: &str) -> &str {
    id.split(" #").next().unwrap_or(id)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn cannot(e: redis::RedisError) -> String {
    if e.is_timeout() {
        "the state server did not answer in time".into()
    } else {
        format!("state server: {e}")
    }
}

/// The key names of one patience key.
#[derive(Clone)]
struct Keys {
    breaker: String,
    bucket: String,
    slots: String,
    slots_max: String,
}

impl Keys {
    fn new(key: &str) -> Keys {
        let k = |what: &str| format!("patience:{key}:{what}");
        Keys {
            breaker: k("breaker"),
            bucket: k("bucket"),
            slots: k("slots"),
            slots_max: k("slots-max"),
        }
    }
}

/// The connection, shared by the run and its lease renewer.
type Shared = Arc<Mutex<redis::Connection>>;

fn lock(c: &Shared) -> MutexGuard<'_, redis::Connection> {
    // Nothing panics while holding it; a poisoned lock is still a connection.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread renewing this run's leases; stopped and joined on drop.
struct Renewer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One key's state on the server, open for the whole run.
pub struct Remote {
    con: Shared,
    keys: Keys,
    key: String,
    id: String,
    lease: Duration,
    renewer: Option<Renewer>,
}

/// Connects to the server of `url` (the password from `password_file`
/// when given), with the URL's timeout on the connect and on every read
/// and write after it.
fn connect(url: &StateUrl, password_file: Option<&Path>) -> Result<redis::Connection, RemoteError> {
    let addr = match &url.addr {
        Addr::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
        Addr::Unix(path) => ConnectionAddr::Unix(path.clone()),
    };
    let mut redis_info = RedisConnectionInfo::default()
        .set_db(i64::from(url.db))
        .set_skip_set_lib_name();
    if let Some(user) = &url.user {
        redis_info = redis_info.set_username(user);
    }
    let password = match password_file {
        Some(p) => Some(read_password(p)?),
        None => url.password.clone(),
    };
    if let Some(pw) = password {
        redis_info = redis_info.set_password(pw);
    }
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| RemoteError::Unavailable(cannot(e)))?
        .set_redis_settings(redis_info);
    let client = redis::Client::open(info).map_err(|e| RemoteError::Unavailable(cannot(e)))?;
    let unavailable = |e: redis::RedisError| RemoteError::Unavailable(format!("{} ({url})", cannot(e)));
    let con = client
        .get_connection_with_timeout(url.timeout)
        .map_err(unavailable)?;
    con.set_read_timeout(Some(url.timeout)).map_err(unavailable)?;
    con.set_write_timeout(Some(url.timeout)).map_err(unavailable)?;
    Ok(con)
}

/// The first line of the password file, without its line end.
fn read_password(path: &Path) -> Result<String, RemoteError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RemoteError::PasswordFile(format!(
            "state-url-password-file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(RemoteError::PasswordFile(format!(
            "state-url-password-file {}: the file is empty",
            path.display()
        )));
    }
    Ok(line.to_string())
}

/// This host's name, for holder names (a PID alone means nothing here).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A name for this run no other run of the fleet has: PID, host, and a
/// nonce from the clock and the PID (two containers may share a hostname
/// and a PID, not the nanosecond they started).
fn holder_id() -> String {
    let pid = crate::sys::getpid();
    let mut x = super::wall_ns() ^ (u64::from(pid.unsigned_abs()) << 32);
    // splitmix64: spreads the bits, so the nonce is not the clock.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{pid}@{} #{:08x}", hostname(), x as u32)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        _ => Vec::new(),
    }
}

impl Remote {
    /// Opens key `key` on the server of `url`.
    pub fn open(url: &StateUrl, password_file: Option<&Path>, key: &str) -> Result<Remote, RemoteError> {
        let con = connect(url, password_file)?;
        Ok(Remote {
            con: Arc::new(Mutex::new(con)),
            keys: Keys::new(key),
            key: key.to_string(),
            id: holder_id(),
            lease: url.lease,
            renewer: None,
        })
    }

    /// The admission of `super::admit`, as one script on the server.
    pub fn admit(
        &self,
        limits: &Limits,
        first: bool,
        max_wait: Option<Duration>,
    ) -> Result<Admission, String> {
        let (threshold, cooldown) = limits
            .breaker
            .map_or((0, 0), |b| (b.threshold, micros(b.cooldown)));
        let cap = limits
            .breaker
            .map_or(0, |b| micros(b.cooldown.max(breaker::PROBE_LEASE_MIN)));
        let (tokens, per) = limits.rate.map_or((0, 0), |r| (r.tokens, micros(r.per)));
        let max_wait: i64 = max_wait.map_or(-1, |d| i64::try_from(micros(d)).unwrap_or(i64::MAX));
        let reply: Vec<Value> = Script::new(ADMIT)
            .key(&self.keys.breaker)
            .key(&self.keys.bucket)
            .key(&self.keys.slots)
            .key(&self.keys.slots_max)
            .arg(&self.id)
            .arg(u8::from(first))
            .arg(threshold)
            .arg(cooldown)
            .arg(limits.max_concurrent.unwrap_or(0))
            .arg(micros(self.lease))
            .arg(tokens)
            .arg(per)
            .arg(max_wait)
            .arg(cap)
            .invoke(&mut *lock(&self.con))
            .map_err(cannot)?;
        let us = |v: Option<&Value>| Duration::from_micros(v.map_or(0, int).max(0) as u64);
        let what = reply.first().map(text).unwrap_or_default();
        Ok(match what.as_str() {
            "ok" => Admission::Admitted {
                probe: reply.get(1).map_or(0, int) == 1,
                slot: reply.get(2).map_or(0, int) == 1,
                token_wait: us(reply.get(3)),
            },
            "open" => Admission::Breaker(breaker::Verdict::Open {
                left: us(reply.get(1)),
                failures: reply.get(2).map_or(0, int).max(0) as u64,
            }),
            "probing" => Admission::ProbeHeld {
                by: shown(&reply.get(1).map(text).unwrap_or_default()).to_string(),
            },
            "full" => Admission::Held {
                by: reply
                    .get(1)
                    .map(texts)
                    .unwrap_or_default()
                    .iter()
                    .map(|h| shown(h).to_string())
                    .collect(),
            },
            "late" => Admission::TooLate(us(reply.get(1))),
            other => {
                return Err(format!(
                    "state server: unexpected reply '{other}' to the admission"
                ))
            }
        })
    }

    /// Feeds the breaker one attempt's result: (opened it, failures).
    pub fn record(&self, cfg: &breaker::Config, success: bool) -> Result<(bool, u64), String> {
        let (opened, failures): (i64, i64) = Script::new(RECORD)
            .key(&self.keys.breaker)
            .arg(&self.id)
            .arg(u8::from(success))
            .arg(cfg.threshold)
            .arg(micros(cfg.cooldown))
            .invoke(&mut *lock(&self.con))
            .map_err(cannot)?;
        Ok((opened == 1, failures.max(0) as u64))
    }

    /// Keeps the leases of what this run holds alive until it lets go:
    /// (re)starts the renewer for the slot and/or the probe.
    pub fn hold(&mut self, slot: bool, probe: bool) {
        self.renewer = None;
        if !slot && !probe {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let (con, keys, id, lease, key) = (
            self.con.clone(),
            self.keys.clone(),
            self.id.clone(),
            self.lease,
            self.key.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("state-lease".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut warned = false;
                // Until the run lets go (the sender is dropped).
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(lease / 3) {
                    let renewed: Result<i64, _> = Script::new(RENEW)
                        .key(&keys.breaker)
                        .key(&keys.slots)
                        .arg(&id)
                        .arg(micros(lease))
                        .arg(u8::from(slot))
                        .arg(u8::from(probe))
                        .invoke(&mut *lock(&con));
                    if let Err(e) = renewed {
                        if !warned {
                            say(&format!(
                                "warning: cannot renew the lease of key '{key}' ({}); what this run holds frees itself within {}",
                                cannot(e),
                                crate::duration::format(lease)
                            ));
                            warned = true;
                        }
                    }
                }
            });
        if let Ok(thread) = thread {
            self.renewer = Some(Renewer {
                stop: Some(tx),
                thread: Some(thread),
            });
        }
    }

    /// Gives back the slot and/or the probe lease.
    pub fn release(&mut self, slot: bool, probe: bool) -> Result<(), String> {
        self.renewer = None;
        let _: i64 = Script::new(RELEASE)
            .key(&self.keys.breaker)
            .key(&self.keys.slots)
            .arg(&self.id)
            .arg(u8::from(slot))
            .arg(u8::from(probe))
            .invoke(&mut *lock(&self.con))
            .map_err(cannot)?;
        Ok(())
    }
}

/// `--state KEY` against the server: the JSON of `super::view`'s shape.
pub fn show(
    url: &StateUrl,
    password_file: Option<&Path>,
    key: &str,
) -> Result<serde_json::Value, RemoteError> {
    let reply: Vec<Value> = on_every_key(url, password_file, key, SHOW)?;
    let now: f64 = reply
        .first()
        .map(text)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    let hash = |i: usize| -> std::collections::HashMap<String, String> {
        let flat = reply.get(i).map(texts).unwrap_or_default();
        flat.chunks(2)
            .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
            .collect()
    };
    let num = |h: &std::collections::HashMap<String, String>, k: &str| -> f64 {
        h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    let b = hash(1);
    let bucket = hash(2);
    let holders: Vec<String> = reply
        .get(3)
        .map(texts)
        .unwrap_or_default()
        .iter()
        .map(|h| shown(h).to_string())
        .collect();
    let slots_max: Option<u64> = reply.get(4).map(text).and_then(|t| t.parse().ok());
    let phase = b.get("phase").cloned().unwrap_or_else(|| "closed".into());
    let opened = num(&b, "opened");
    let cooldown = num(&b, "cooldown");
    let retry_in = if phase == "open" {
        (cooldown - (now - opened).max(0.0)).clamp(0.0, cooldown) / 1e6
    } else {
        0.0
    };
    let probe = b
        .get("probe")
        .filter(|_| now < num(&b, "probe_until"))
        .map(|p| shown(p).to_string());
    let (tokens, per) = (num(&bucket, "tokens"), num(&bucket, "per"));
    let rate = (tokens > 0.0 && per > 0.0).then(|| super::ratelimit::Rate {
        tokens: tokens as u64,
        per: Duration::from_micros(per as u64),
    });
    let available = rate.map(|_| {
        let interval = per / tokens;
        let drawn = (num(&bucket, "tat") - now).max(0.0);
        ((interval * tokens - drawn).max(0.0)) / interval
    });
    Ok(serde_json::json!({
        "key": key,
        "store": url.to_string(),
        "breaker": {
            "state": phase,
            "consecutive_failures": num(&b, "failures") as u64,
            "opened_at": (opened > 0.0).then_some(opened / 1e6),
            "retry_in_s": retry_in,
            "probe": probe,
        },
        "rate_limit": {
            "limit": rate.map(|r| r.to_string()),
            "tokens": available,
        },
        "slots": {
            "limit": slots_max,
            "holders": holders,
        },
    }))
}

/// `--reset-state KEY` against the server.
pub fn reset(url: &StateUrl, password_file: Option<&Path>, key: &str) -> Result<(), RemoteError> {
    let _: i64 = on_every_key(url, password_file, key, RESET)?;
    Ok(())
}

/// Runs `script` once over every server key of `key` (`--state`,
/// `--reset-state`), on a connection of its own.
fn on_every_key<T: redis::FromRedisValue>(
    url: &StateUrl,
    password_file: Option<&Path>,
    key: &str,
    script: &str,
) -> Result<T, RemoteError> {
    let mut con = connect(url, password_file)?;
    let keys = Keys::new(key);
    Script::new(script)
        .key(&keys.breaker)
        .key(&keys.bucket)
        .key(&keys.slots)
        .key(&keys.slots_max)
        .invoke(&mut con)
        .map_err(|e| RemoteError::Unavailable(cannot(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_names_hide_the_nonce_and_differ() {
        let a = holder_id();
        assert!(
            shown(&a).starts_with(&format!("{}@", crate::sys::getpid())),
            "{a}"
        );
        assert!(!shown(&a).contains('#'));
        assert_eq!(shown("12@web1 #0a0b0c0d"), "12@web1");
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, holder_id());
    }

    #[test]
    fn an_unreachable_server_fails_within_the_timeout() {
        let url = StateUrl::parse("unix:///nonexistent/patience-test.sock").unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(
            Remote::open(&url, None, "k"),
            Err(RemoteError::Unavailable(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
        let missing = Path::new("/nonexistent/password");
        assert!(matches!(
            Remote::open(&url, Some(missing), "k"),
            Err(RemoteError::PasswordFile(m)) if m.contains("/nonexistent/password")
        ));
    }
}
