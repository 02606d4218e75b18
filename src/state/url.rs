//! `--state-url`: where a fleet's shared state lives, parsed and checked
//! when the settings are read, so that a malformed URL is a usage error
//! (exit 125) before anything runs, and the password is kept out of every
//! message from then on ([`StateUrl`]'s `Display` masks it).
//!
//! Forms (the query part is optional in both):
//! - `redis://[user[:password]@]host[:port][/db][?timeout=DUR&lease=DUR]`
//! - `unix:///path/to/redis.sock[?db=N&timeout=DUR&lease=DUR]`
//!
//! `timeout` bounds the connect and every read and write (a server that is
//! down or stopped makes the run go on without its shared state, never
//! hang); `lease` is how long a slot or the breaker's probe outlives a
//! holder that stopped renewing it (a crashed host).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration;

/// The connect and I/O timeout when the URL gives none: as short as the
/// file store's fast path, so an unreachable server costs a run little.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a slot or probe lease lives without renewal when the URL gives
/// none. Its holder renews it every third of this while the run lives.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The shortest lease: renewals every third of it must get through a
/// loaded machine's scheduling.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A parsed `--state-url`.
#[derive(Clone, PartialEq, Eq)]
pub struct StateUrl {
    pub addr: Addr,
    pub db: u32,
    pub user: Option<String>,
    /// From the URL; `state-url-password-file` replaces it when the run
    /// opens the store.
    pub password: Option<String>,
    pub timeout: Duration,
    pub lease: Duration,
}

/// Never shows the password: `Debug` is the masked URL too.
impl fmt::Debug for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateUrl({self})")
    }
}

impl fmt::Display for StateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut query = Vec::new();
        match &self.addr {
            Addr::Tcp { host, port } => {
                f.write_str("redis://")?;
                match (&self.user, &self.password) {
                    (Some(u), Some(_)) => write!(f, "{u}:***@")?,
                    (Some(u), None) => write!(f, "{u}@")?,
                    (None, Some(_)) => f.write_str(":***@")?,
                    (None, None) => {}
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}/{}", self.db)?;
                } else {
                    write!(f, "{host}:{port}/{}", self.db)?;
                }
            }
            Addr::Unix(path) => {
                write!(f, "unix://{}", path.display())?;
                if self.db != 0 {
                    query.push(format!("db={}", self.db));
                }
            }
        }
        if self.timeout != DEFAULT_TIMEOUT {
            query.push(format!("timeout={}", duration::format(self.timeout)));
        }
        if self.lease != DEFAULT_LEASE {
            query.push(format!("lease={}", duration::format(self.lease)));
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

/// `text` with any password in it replaced by `***`, for messages about a
/// URL that may not even parse: whatever sits between the first ':' after
/// the scheme and the last '@' of the authority.
pub fn redact(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let rest = &text[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_string();
    };
    format!(
        "{}{}:***{}",
        &text[..start],
        &userinfo[..colon],
        &text[start + at..]
    )
}

/// Decodes `%XX` escapes (a password with '@' or ':' in it).
fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad %-escape in the {what}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8"))
}

fn parse_db(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|&n| n <= 1_000_000)
        .ok_or_else(|| format!("bad database number '{s}' (expected a whole number such as 0)"))
}

impl StateUrl {
    /// Parses a `--state-url` value. The error names the (masked) value
    /// and what is wrong with it.
    pub fn parse(text: &str) -> Result<StateUrl, String> {
        let shown = redact(text);
        let bad = |why: String| {
            format!(
                "invalid state URL '{shown}' ({why}; expected redis://[user[:password]@]host[:port][/db] or unix:///path/to/redis.sock)"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme".into()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let mut url = StateUrl {
            addr: Addr::Unix(PathBuf::new()),
            db: 0,
            user: None,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            lease: DEFAULT_LEASE,
        };
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "valkey" => {
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, ""),
                };
                let hostport = match authority.rfind('@') {
                    Some(at) => {
                        let userinfo = &authority[..at];
                        let (user, pass) = match userinfo.split_once(':') {
                            Some((u, p)) => (u, Some(p)),
                            None => (userinfo, None),
                        };
                        if !user.is_empty() {
                            url.user = Some(percent_decode(user, "user name").map_err(bad)?);
                        }
                        if let Some(p) = pass.filter(|p| !p.is_empty()) {
                            url.password = Some(percent_decode(p, "password").map_err(bad)?);
                        }
                        &authority[at + 1..]
                    }
                    None => authority,
                };
                let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
                    let (h, after) = v6
                        .split_once(']')
                        .ok_or_else(|| bad("an unclosed '[' in the host".into()))?;
                    match after {
                        "" => (h, None),
                        p => (
                            h,
                            Some(
                                p.strip_prefix(':')
                                    .ok_or_else(|| bad(format!("unexpected '{p}' after the host")))?,
                            ),
                        ),
                    }
                } else {
                    match hostport.rsplit_once(':') {
                        Some((h, p)) => (h, Some(p)),
                        None => (hostport, None),
                    }
                };
                if host.is_empty() {
                    return Err(bad("no host".into()));
                }
                if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
                    return Err(bad(format!("bad host '{host}'")));
                }
                let port = match port {
                    None => 6379,
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(format!("bad port '{p}' (expected 1 to 65535)")))?,
                };
                let db = path.trim_end_matches('/');
                if !db.is_empty() {
                    url.db = parse_db(db).map_err(bad)?;
                }
                url.addr = Addr::Tcp {
                    host: host.to_string(),
                    port,
                };
            }
            "unix" | "redis+unix" => {
                if !rest.starts_with('/') {
                    return Err(bad("the socket path must be absolute: unix:///path".into()));
                }
                url.addr = Addr::Unix(PathBuf::from(rest));
            }
            "rediss" | "valkeys" => {
                return Err(bad(format!(
                    "{scheme}:// (TLS) is not supported; use a Unix socket or a TLS tunnel to a local port"
                )))
            }
            other => return Err(bad(format!("unsupported scheme '{other}'"))),
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("'{pair}' in the query is not NAME=VALUE")))?;
            match k {
                "timeout" => {
                    let d = duration::parse(v).map_err(|e| bad(format!("timeout: {e}")))?;
                    if d.is_zero() {
                        return Err(bad("timeout must be longer than 0".into()));
                    }
                    url.timeout = d;
                }
                "lease" => {
                    let d = duration::parse(v).map_err(|e| bad(format!("lease: {e}")))?;
                    if d < MIN_LEASE {
                        return Err(bad(format!(
                            "lease must be at least {}",
                            duration::format(MIN_LEASE)
                        )));
                    }
                    url.lease = d;
                }
                "db" => url.db = parse_db(v).map_err(bad)?,
                _ => {
                    return Err(bad(format!(
                        "unknown parameter '{k}' (known: timeout, lease, db)"
                    )))
                }
            }
        }
        Ok(url)
    }

    /// True when the URL itself carries a password.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_and_unix_urls_parse_and_print_without_the_password() {
        let u = StateUrl::parse("redis://ops:s3cr%40t@db.example:6380/2?timeout=250ms&lease=30s").unwrap();
        assert_eq!(
            u.addr,
            Addr::Tcp {
                host: "db.example".into(),
                port: 6380
            }
        );
        assert_eq!(
            (u.db, u.user.as_deref(), u.password.as_deref()),
            (2, Some("ops"), Some("s3cr@t"))
        );
        assert_eq!(
            (u.timeout, u.lease),
            (Duration::from_millis(250), Duration::from_secs(30))
        );
        let shown = u.to_string();
        assert_eq!(shown, "redis://ops:***@db.example:6380/2?timeout=250ms&lease=30s");
        assert!(!format!("{u:?}").contains("s3cr"));
        let u = StateUrl::parse("redis://[::1]").unwrap();
        assert_eq!(u.to_string(), "redis://[::1]:6379/0");
        let u = StateUrl::parse("unix:///run/redis/redis.sock?db=3").unwrap();
        assert_eq!(u.addr, Addr::Unix("/run/redis/redis.sock".into()));
        assert_eq!(u.to_string(), "unix:///run/redis/redis.sock?db=3");
        assert_eq!(StateUrl::parse("redis://h").unwrap().timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn malformed_urls_are_refused_with_the_password_masked() {
        for bad in [
            "ftp://x",
            "redis://",
            "redis://h:0",
            "redis://h:65536",
            "redis://h:x",
            "redis://h/x",
            "redis://h?nope=1",
            "redis://h?lease=1ms",
            "rediss://h",
            "unix://relative.sock",
            "localhost:6379",
            "redis://u:hunter2@h:99999",
        ] {
            let e = StateUrl::parse(bad).unwrap_err();
            assert!(e.starts_with("invalid state URL '"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(StateUrl::parse("ftp://x").unwrap_err().contains("'ftp'"));
        assert!(StateUrl::parse("redis://h:99999")
            .unwrap_err()
            .contains("bad port '99999'"));
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:p@w@h"), "redis://:***@h");
        assert_eq!(redact("redis://h/a@b"), "redis://h/a@b");
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
