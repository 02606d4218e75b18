//! The shared rate limit of one key (`--rate-limit N/DUR`): a token bucket
//! holding at most N tokens, refilled at N per DUR, one token per attempt.
//!
//! It is stored as a single time, GCRA style: `tat_ns`, the moment the
//! bucket would be full again. Taking a token moves it one interval
//! (DUR / N) later. Nothing is ever rounded to whole tokens or reset to
//! "now" on a read, so many short runs lose no refill (the classic bug of
//! buckets that keep an integer count and a last-refill time). A run that
//! must wait reserves its token before it sleeps, so waiters are served in
//! order and the lock is not held while waiting.
//!
//! Time is injected (`now`, ns of wall clock). A clock that went back is
//! handled by `State::normalise`; a clock that jumped forward just finds a
//! full bucket.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;

/// The most tokens a bucket may hold: far beyond any real use, and small
/// enough that no product below can overflow.
pub const MAX_TOKENS: u64 = 1_000_000_000;

/// `N/DUR`: N tokens per DUR, and a burst of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub tokens: u64,
    pub per: Duration,
}

impl Rate {
    /// Parses `10/1s`, `100/1m`, `5/s` (a bare unit means one of it).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad =
            |why: &str| format!("invalid rate '{text}' ({why}; expected N/DUR such as 10/1s or 100/1m)");
        let (n, per) = text.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let tokens: u64 = n.trim().parse().map_err(|_| bad("N must be a whole number"))?;
        if tokens == 0 || tokens > MAX_TOKENS {
            return Err(bad(&format!("N must be from 1 to {MAX_TOKENS}")));
        }
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_alphabetic()) {
            duration::parse(&format!("1{per}"))
        } else {
            duration::parse(per)
        }
        .map_err(|e| bad(&e))?;
        let rate = Rate { tokens, per };
        if rate.interval_ns() == 0 {
            return Err(bad("more than one token per nanosecond"));
        }
        Ok(rate)
    }

    /// Time between two tokens (DUR / N), in ns.
    pub fn interval_ns(&self) -> u64 {
        u64::try_from(self.per.as_nanos() / u128::from(self.tokens)).unwrap_or(u64::MAX)
    }

    /// How far ahead of now the bucket may be drawn before a run waits: N
    /// intervals, the burst.
    fn window_ns(&self) -> u64 {
        self.interval_ns().saturating_mul(self.tokens)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tokens, duration::format(self.per))
    }
}

/// The stored bucket of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bucket {
    /// When the bucket would be full again if nobody took a token (wall
    /// clock, ns since the epoch); in the past means full.
    pub tat_ns: u64,
    /// The rate of the last run that took a token, for `--state`.
    pub tokens: u64,
    pub per_ns: u64,
}

impl Bucket {
    /// Takes one token at `now`, returning how long to wait before using it.
    /// When that wait would be longer than `max_wait` (the deadline), nothing
    /// is taken and the wait is returned as the error.
    pub fn take(&mut self, rate: &Rate, now: u64, max_wait: Option<Duration>) -> Result<Duration, Duration> {
        let base = self.tat_ns.max(now);
        let next = base.saturating_add(rate.interval_ns());
        let wait = Duration::from_nanos(next.saturating_sub(rate.window_ns()).saturating_sub(now));
        if max_wait.is_some_and(|m| wait > m) {
            return Err(wait);
        }
        self.tat_ns = next;
        self.tokens = rate.tokens;
        self.per_ns = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
        Ok(wait)
    }

    /// Tokens left at `now` (fractional; 0 when runs are already waiting).
    pub fn available(&self, rate: &Rate, now: u64) -> f64 {
        let drawn = self.tat_ns.saturating_sub(now);
        rate.window_ns().saturating_sub(drawn) as f64 / rate.interval_ns() as f64
    }

    /// The rate last used, if any run took a token.
    pub fn last_rate(&self) -> Option<Rate> {
        (self.tokens > 0 && self.per_ns > 0).then(|| Rate {
            tokens: self.tokens,
            per: Duration::from_nanos(self.per_ns),
        })
    }

    /// Moves the stored time back by `delta` (the wall clock went back).
    pub fn shift_back(&mut self, delta: u64) {
        self.tat_ns = self.tat_ns.saturating_sub(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    const T0: u64 = 1_700_000_000 * S;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            rate("10/1s"),
            Rate {
                tokens: 10,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(rate("100/1m").per, Duration::from_secs(60));
        assert_eq!(rate("5/s").per, Duration::from_secs(1));
        assert_eq!(rate(" 3 / 2h ").tokens, 3);
        assert_eq!(rate("10/1s").to_string(), "10/1s");
        for bad in [
            "",
            "10",
            "/1s",
            "10/",
            "0/1s",
            "-1/1s",
            "1.5/1s",
            "10/0",
            "10/-1s",
            "10/x",
            "10/1s/2",
            "2000000000/1s",
            "2000/1us",
            "NaN/1s",
            "10/inf",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_of_n_then_one_per_interval() {
        let r = rate("2/1s");
        let mut b = Bucket::default();
        assert_eq!(b.available(&r, T0), 2.0);
        assert_eq!(b.take(&r, T0, None), Ok(Duration::ZERO));
        assert_eq!(b.take(&r, T0, None), Ok(Duration::ZERO));
        assert_eq!(b.available(&r, T0), 0.0);
        // Reservations queue up: 0.5s, 1s, 1.5s, 2s for attempts 3..6.
        for k in 1..=4u64 {
            assert_eq!(b.take(&r, T0, None), Ok(Duration::from_millis(500 * k)));
        }
        // Idle long enough and the bucket is full again, never fuller.
        assert_eq!(b.available(&r, T0 + 100 * S), 2.0);
    }

    #[test]
    fn no_refill_is_lost_across_many_short_runs() {
        // 10/1s for 10 s, one take every 73 ms (not a multiple of the 100 ms
        // interval): exactly the refill and the burst, never fewer.
        let r = rate("10/1s");
        let mut b = Bucket::default();
        let mut granted = 0;
        let mut now = T0;
        while now < T0 + 10 * S {
            let mut probe = b.clone();
            if probe.take(&r, now, Some(Duration::ZERO)).is_ok() {
                b = probe;
                granted += 1;
            }
            now += 73 * MS;
        }
        // 10 s of refill at 10/s plus the burst of 10, minus at most one token
        // still refilling at the end.
        assert!((109..=110).contains(&granted), "{granted}");
        // Fractional progress survives reads: 50 ms after a take, half a token.
        let mut b = Bucket::default();
        for _ in 0..10 {
            b.take(&r, T0, None).unwrap();
        }
        assert_eq!(b.available(&r, T0 + 50 * MS), 0.5);
        assert_eq!(b.available(&r, T0 + 150 * MS), 1.5);
    }

    #[test]
    fn a_wait_beyond_the_deadline_takes_nothing() {
        let r = rate("1/10s");
        let mut b = Bucket::default();
        b.take(&r, T0, None).unwrap();
        let before = b.clone();
        assert_eq!(
            b.take(&r, T0, Some(Duration::from_secs(2))),
            Err(Duration::from_secs(10))
        );
        assert_eq!(b, before);
        assert_eq!(
            b.take(&r, T0, Some(Duration::from_secs(10))),
            Ok(Duration::from_secs(10))
        );
    }

    #[test]
    fn clock_jumps() {
        let r = rate("1/1s");
        let mut b = Bucket::default();
        b.take(&r, T0, None).unwrap();
        // Far forward: a full bucket, no wait.
        assert_eq!(b.take(&r, u64::MAX / 2, None), Ok(Duration::ZERO));
        // A stored time far in the future (the clock went back) is moved
        // back with the rest of the timeline, then waits at most one interval.
        let mut b = Bucket::default();
        b.take(&r, T0 + 3600 * S, None).unwrap();
        b.shift_back(3600 * S);
        assert_eq!(b.take(&r, T0, None), Ok(Duration::from_secs(1)));
        // Saturating everywhere: no panic at the edges of u64.
        let mut b = Bucket {
            tat_ns: u64::MAX,
            ..Bucket::default()
        };
        assert!(b.take(&r, 0, Some(Duration::from_secs(1))).is_err());
        assert_eq!(b.available(&r, 0), 0.0);
    }
}
