//! The delay schedule between attempts: six strategies or an explicit list
//! of delays (`-d 1s,5s,30s`), a cap, optional jitter, and a tiny seeded
//! PRNG so that tests are reproducible.
//!
//! Everything is computed in `f64` seconds, clamped to the cap *before* it is
//! turned into a `Duration`, so no attempt number (0, 64, 65, 10^6, u64::MAX)
//! can overflow, wrap to zero or panic: the classic `base << n` and
//! `base * 2.pow(n)` bugs of release builds cannot happen here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the delay grows from one attempt to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Fixed,
    Linear,
    Exponential,
    Fibonacci,
    /// Full jitter: uniform(0, min(cap, base * 2^(n-1))).
    Jitter,
    /// min(cap, uniform(base, 3 * previous)), as in the AWS architecture blog.
    DecorrelatedJitter,
}

impl Strategy {
    pub const NAMES: &'static str = "fixed, linear, exponential, fibonacci, jitter, decorrelated-jitter";

    /// True when the delay is random, so a schedule can only be shown as ranges.
    pub fn is_random(self) -> bool {
        matches!(self, Strategy::Jitter | Strategy::DecorrelatedJitter)
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fixed" | "constant" => Strategy::Fixed,
            "linear" => Strategy::Linear,
            "exponential" | "exp" => Strategy::Exponential,
            "fibonacci" | "fib" => Strategy::Fibonacci,
            "jitter" | "full-jitter" => Strategy::Jitter,
            "decorrelated-jitter" | "decorrelated" => Strategy::DecorrelatedJitter,
            _ => return Err(format!("unknown backoff '{s}' (pick from: {})", Self::NAMES)),
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Fixed => "fixed",
            Strategy::Linear => "linear",
            Strategy::Exponential => "exponential",
            Strategy::Fibonacci => "fibonacci",
            Strategy::Jitter => "jitter",
            Strategy::DecorrelatedJitter => "decorrelated-jitter",
        })
    }
}

/// The backoff settings, validated: `multiplier >= 1` and finite, `jitter` in
/// `0..=1`, `max_delay` no larger than `duration::MAX`.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    pub strategy: Strategy,
    pub base: Duration,
    /// `-d 1s,5s,30s`: the delays themselves, in order, the last repeating
    /// (Debian's `retry -d 1,5,30`); they replace the strategy. Empty for a
    /// single `--delay`, which is then the base.
    pub list: Vec<Duration>,
    pub multiplier: f64,
    pub max_delay: Duration,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            strategy: Strategy::Exponential,
            base: Duration::from_secs(1),
            list: Vec::new(),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.0,
        }
    }
}

/// Parses `--delay`: one duration (the base), or two or more separated by
/// commas (the list). Returns the base and the list (empty for one).
pub fn parse_delay(s: &str) -> Result<(Duration, Vec<Duration>), String> {
    if !s.contains(',') {
        return Ok((crate::duration::parse(s)?, Vec::new()));
    }
    let mut list = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        if item.trim().is_empty() {
            return Err(format!(
                "invalid delay list '{s}': delay {} is empty (expected durations separated by commas, such as 1s,5s,30s)",
                i + 1
            ));
        }
        let d = crate::duration::parse(item.trim()).map_err(|e| format!("invalid delay list '{s}': {e}"))?;
        list.push(d);
    }
    Ok((list[0], list))
}

/// `--delay` as it was given: the base, or the list joined by commas.
pub fn format_delay(b: &Backoff) -> String {
    if b.list.is_empty() {
        return crate::duration::format(b.base);
    }
    let shown: Vec<String> = b.list.iter().map(|d| crate::duration::format(*d)).collect();
    shown.join(",")
}

/// Parses `--multiplier`: a finite number, at least 1 (a factor below one
/// would make "exponential" shrink, which is never what a user means).
pub fn parse_multiplier(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && (1.0..=1000.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "invalid multiplier '{s}' (expected a number from 1 to 1000)"
        )),
    }
}

/// Parses `--jitter`: a fraction from 0 to 1.
pub fn parse_jitter(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("invalid jitter '{s}' (expected a fraction from 0 to 1)")),
    }
}

/// `base * factor^k` in seconds, for a factor >= 1: never NaN, so never a
/// surprise after `min(cap)`. The exponent is clamped (past 2000 every such
/// factor has long reached any cap, or infinity, which the cap absorbs),
/// and a zero base stays zero however large the power: 0 * 2^1024 is
/// 0 * inf, NaN, which once became the cap at attempt 1025.
fn grow(base: f64, factor: f64, k: u64) -> f64 {
    if base == 0.0 {
        return 0.0;
    }
    base * factor.powi(k.min(2000) as i32)
}

/// The n-th Fibonacci number (F(1) = F(2) = 1) as f64, saturating at a value
/// far beyond any cap so that the loop is short for any n.
fn fibonacci(n: u64) -> f64 {
    let (mut a, mut b) = (0f64, 1f64);
    for _ in 1..n.min(200) {
        (a, b) = (b, a + b);
    }
    b
}

impl Backoff {
    /// The listed delay after attempt `n` (1-based), the last one once the
    /// list runs out; `None` without a list.
    fn listed(&self, n: u64) -> Option<Duration> {
        let i = usize::try_from(n.max(1) - 1).unwrap_or(usize::MAX);
        self.list.get(i).or(self.list.last()).copied()
    }

    /// The strategy that shapes the delays: a list is fixed per position, so
    /// nothing random or growing applies on top of it but `--jitter`.
    fn effective(&self) -> Strategy {
        if self.list.is_empty() {
            self.strategy
        } else {
            Strategy::Fixed
        }
    }

    /// The deterministic part of the delay after attempt `n` (1-based), in
    /// seconds, already capped. For the jitter strategies this is the upper
    /// bound of the random draw.
    fn nominal(&self, n: u64) -> f64 {
        let base = self.base.as_secs_f64();
        let n = n.max(1);
        let raw = match self.listed(n) {
            Some(d) => d.as_secs_f64(),
            None => match self.strategy {
                Strategy::Fixed => base,
                Strategy::Linear => base * n as f64,
                Strategy::Exponential => grow(base, self.multiplier, n - 1),
                Strategy::Fibonacci => base * fibonacci(n),
                Strategy::Jitter | Strategy::DecorrelatedJitter => grow(base, 2.0, n - 1),
            },
        };
        raw.min(self.max_delay.as_secs_f64())
    }

    /// The smallest and largest delay that can follow attempt `n`, for
    /// `--dry-run` (equal bounds for the deterministic strategies).
    pub fn range(&self, n: u64) -> (Duration, Duration) {
        let cap = self.max_delay.as_secs_f64();
        let strategy = self.effective();
        let (lo, hi) = match strategy {
            Strategy::Jitter => (0.0, self.nominal(n)),
            Strategy::DecorrelatedJitter => {
                let base = self.base.as_secs_f64().min(cap);
                // The schedule starts with previous = base, so delay n is
                // drawn from [base, 3 * previous]: at most base * 3^n.
                (base, grow(base, 3.0, n.max(1)).min(cap))
            }
            _ => {
                let d = self.nominal(n);
                (d, d)
            }
        };
        let j = self.jitter;
        (secs((lo * (1.0 - j)).min(cap)), secs((hi * (1.0 + j)).min(cap)))
    }
}

/// Converts seconds to a Duration without ever panicking: NaN and negative
/// become zero, anything huge becomes `duration::MAX`.
fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s)
        .unwrap_or(crate::duration::MAX)
        .min(crate::duration::MAX)
}

/// A small xorshift64* generator: reproducible from a seed, no dependency,
/// good enough to spread retries (it is not for secrets).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock and the process id, so that many
    /// patience processes started together do not retry in lock-step.
    pub fn from_entropy() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (u64::from(std::process::id()) << 32))
    }

    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: never zero, well mixed even for small seeds.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo) * self.next_f64()
    }
}

/// The `--stagger` wait: uniform in [0, `below`), never `below` itself, and
/// zero when `below` is. Drawn in whole nanoseconds, so float rounding can
/// never reach the bound (a first attempt at the deadline would not run).
pub fn stagger(below: Duration, rng: &mut Rng) -> Duration {
    let span = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX);
    if span == 0 {
        return Duration::ZERO;
    }
    // `as` saturates: a product rounded up past u64 stays in range.
    let ns = (span as f64 * rng.next_f64()) as u64;
    Duration::from_nanos(ns.min(span - 1))
}

/// The running schedule of one patience run: remembers the previous delay
/// (decorrelated jitter needs it) and where the sequence restarted.
#[derive(Clone, Debug)]
pub struct Schedule {
    backoff: Backoff,
    rng: Rng,
    prev: f64,
    /// Attempts since the sequence (re)started; the next delay is for this n.
    n: u64,
}

impl Schedule {
    pub fn new(backoff: Backoff, rng: Rng) -> Schedule {
        let prev = backoff.base.as_secs_f64();
        Schedule {
            backoff,
            rng,
            prev,
            n: 0,
        }
    }

    /// Restarts the sequence at its first delay (`--reset-after`).
    pub fn reset(&mut self) {
        self.n = 0;
        self.prev = self.backoff.base.as_secs_f64();
    }

    /// The delay to wait after the attempt that just ended. Never above
    /// `max_delay`, never negative, never a panic.
    pub fn next_delay(&mut self) -> Duration {
        self.n = self.n.saturating_add(1);
        let b = &self.backoff;
        let cap = b.max_delay.as_secs_f64();
        let base = b.base.as_secs_f64();
        let mut d = match b.effective() {
            Strategy::Jitter => {
                let hi = b.nominal(self.n);
                self.rng.uniform(0.0, hi)
            }
            Strategy::DecorrelatedJitter => {
                let hi = (self.prev * 3.0).min(cap);
                let d = self.rng.uniform(base.min(cap), hi).min(cap);
                self.prev = d;
                d
            }
            _ => b.nominal(self.n),
        };
        if b.jitter > 0.0 {
            d *= 1.0 + b.jitter * (2.0 * self.rng.next_f64() - 1.0);
        }
        // Jitter is re-clamped: the cap is a promise, jitter or not.
        secs(d.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(strategy: Strategy, base_ms: u64, cap_s: u64) -> Backoff {
        Backoff {
            strategy,
            base: Duration::from_millis(base_ms),
            max_delay: Duration::from_secs(cap_s),
            ..Backoff::default()
        }
    }

    fn first(b: &Backoff, count: usize) -> Vec<u64> {
        let mut s = Schedule::new(b.clone(), Rng::new(7));
        (0..count).map(|_| s.next_delay().as_millis() as u64).collect()
    }

    #[test]
    fn deterministic_formulas() {
        assert_eq!(first(&backoff(Strategy::Fixed, 100, 60), 4), [100, 100, 100, 100]);
        assert_eq!(
            first(&backoff(Strategy::Linear, 100, 60), 4),
            [100, 200, 300, 400]
        );
        assert_eq!(
            first(&backoff(Strategy::Exponential, 100, 60), 5),
            [100, 200, 400, 800, 1600]
        );
        assert_eq!(
            first(&backoff(Strategy::Fibonacci, 100, 60), 6),
            [100, 100, 200, 300, 500, 800]
        );
        let mut b = backoff(Strategy::Exponential, 100, 60);
        b.multiplier = 3.0;
        assert_eq!(first(&b, 3), [100, 300, 900]);
    }

    #[test]
    fn cap_holds_for_every_strategy() {
        for s in [Strategy::Linear, Strategy::Exponential, Strategy::Fibonacci] {
            let d = first(&backoff(s, 1000, 5), 40);
            assert_eq!(*d.last().unwrap(), 5000, "{s}");
        }
    }

    #[test]
    fn no_overflow_or_wrap_at_huge_attempt_numbers() {
        // Attempts where shift- and pow-based code wraps or zeroes.
        for s in [
            Strategy::Fixed,
            Strategy::Linear,
            Strategy::Exponential,
            Strategy::Fibonacci,
        ] {
            let b = backoff(s, 1000, 60);
            let mut prev = Duration::ZERO;
            for n in [
                0u64,
                1,
                2,
                63,
                64,
                65,
                1023,
                1024,
                1025,
                100_000,
                1_000_000,
                u32::MAX as u64,
                u64::MAX,
            ] {
                let (lo, hi) = b.range(n);
                assert_eq!(lo, hi);
                assert!(hi >= prev, "{s}: delay fell at attempt {n}");
                assert!(
                    !hi.is_zero() && hi <= Duration::from_secs(60),
                    "{s} at {n}: {hi:?}"
                );
                prev = hi;
            }
        }
    }

    #[test]
    fn monotonic_up_to_the_cap_through_a_million_attempts() {
        let mut s = Schedule::new(backoff(Strategy::Exponential, 1, 3600), Rng::new(1));
        let mut prev = Duration::ZERO;
        for _ in 0..1_000_000 {
            let d = s.next_delay();
            assert!(d >= prev && d <= Duration::from_secs(3600));
            prev = d;
        }
        assert_eq!(prev, Duration::from_secs(3600));
    }

    #[test]
    fn huge_multiplier_and_cap_do_not_panic() {
        let b = Backoff {
            strategy: Strategy::Exponential,
            base: crate::duration::MAX,
            list: Vec::new(),
            multiplier: 1000.0,
            max_delay: crate::duration::MAX,
            jitter: 1.0,
        };
        let mut s = Schedule::new(b, Rng::new(3));
        for _ in 0..5000 {
            assert!(s.next_delay() <= crate::duration::MAX);
        }
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = backoff(Strategy::Jitter, 100, 2);
        let mut s = Schedule::new(b.clone(), Rng::new(11));
        for n in 1..=10_000u64 {
            let d = s.next_delay();
            let (lo, hi) = b.range(n);
            assert!(d >= lo && d <= hi, "attempt {n}: {d:?} not in {lo:?}..{hi:?}");
        }
    }

    #[test]
    fn decorrelated_jitter_delays_lie_in_the_dry_run_range() {
        let b = backoff(Strategy::DecorrelatedJitter, 100, 100);
        let mut highest_first = Duration::ZERO;
        for seed in 0..2000 {
            let mut s = Schedule::new(b.clone(), Rng::new(seed));
            for n in 1..=8u64 {
                let d = s.next_delay();
                let (lo, hi) = b.range(n);
                assert!(
                    d >= lo && d <= hi,
                    "seed {seed}, attempt {n}: {d:?} not in {lo:?}..{hi:?}"
                );
                if n == 1 {
                    highest_first = highest_first.max(d);
                }
            }
        }
        // The first delay is drawn from [b, 3b]: the range is not too wide.
        assert_eq!(
            b.range(1),
            (Duration::from_millis(100), Duration::from_millis(300))
        );
        assert!(highest_first > Duration::from_millis(280), "{highest_first:?}");
    }

    #[test]
    fn full_jitter_mean_matches_the_formula() {
        // Capped at 0.8s from attempt 4 on, the mean of uniform(0, 0.8) is 0.4s.
        let b = backoff(Strategy::Jitter, 100, 60);
        let mut sum = 0.0;
        let runs = 20_000;
        for seed in 0..runs {
            let mut s = Schedule::new(b.clone(), Rng::new(seed));
            for _ in 0..3 {
                s.next_delay();
            }
            sum += s.next_delay().as_secs_f64();
        }
        let mean = sum / runs as f64;
        assert!((mean - 0.4).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn decorrelated_jitter_between_base_and_cap() {
        let b = backoff(Strategy::DecorrelatedJitter, 100, 3);
        let mut s = Schedule::new(b, Rng::new(5));
        for _ in 0..10_000 {
            let d = s.next_delay();
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_secs(3),
                "{d:?}"
            );
        }
    }

    #[test]
    fn zero_base_means_no_delay_never_a_hot_loop_surprise() {
        for s in [
            Strategy::Exponential,
            Strategy::DecorrelatedJitter,
            Strategy::Jitter,
        ] {
            assert_eq!(first(&backoff(s, 0, 60), 3), [0, 0, 0]);
        }
    }

    #[test]
    fn zero_base_stays_zero_past_attempt_1024() {
        // 2^1024 is inf in f64, and 0 * inf is NaN: once, that NaN became
        // the cap, and a zero-delay loop waited a minute at attempt 1025.
        let all = [
            Strategy::Fixed,
            Strategy::Linear,
            Strategy::Exponential,
            Strategy::Fibonacci,
            Strategy::Jitter,
            Strategy::DecorrelatedJitter,
        ];
        for strategy in all {
            let b = backoff(strategy, 0, 60);
            let mut s = Schedule::new(b.clone(), Rng::new(3));
            for n in 1..=3000u64 {
                assert_eq!(s.next_delay(), Duration::ZERO, "{strategy} at attempt {n}");
            }
            for n in [1, 64, 1024, 1025, 1026, 2001, 1_000_000, u64::MAX] {
                assert_eq!(
                    b.range(n),
                    (Duration::ZERO, Duration::ZERO),
                    "{strategy} range at {n}"
                );
            }
        }
    }

    #[test]
    fn extra_jitter_spreads_but_respects_the_cap() {
        let mut b = backoff(Strategy::Fixed, 1000, 60);
        b.jitter = 0.5;
        let mut s = Schedule::new(b.clone(), Rng::new(9));
        let ds: Vec<_> = (0..1000).map(|_| s.next_delay()).collect();
        assert!(ds
            .iter()
            .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_millis(1500)));
        assert!(ds.iter().any(|d| *d < Duration::from_millis(900)));
        b.max_delay = Duration::from_secs(1);
        let mut s = Schedule::new(b, Rng::new(9));
        assert!((0..1000).all(|_| s.next_delay() <= Duration::from_secs(1)));
    }

    #[test]
    fn reset_restarts_the_sequence() {
        let mut s = Schedule::new(backoff(Strategy::Exponential, 100, 60), Rng::new(1));
        s.next_delay();
        s.next_delay();
        s.reset();
        assert_eq!(s.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn stagger_lies_in_its_half_open_range_and_spreads() {
        assert_eq!(stagger(Duration::ZERO, &mut Rng::new(1)), Duration::ZERO);
        assert_eq!(stagger(Duration::from_nanos(1), &mut Rng::new(1)), Duration::ZERO);
        for below in [
            Duration::from_nanos(2),
            Duration::from_millis(1),
            Duration::from_secs(1),
            crate::duration::MAX,
        ] {
            let mut rng = Rng::new(below.as_nanos() as u64);
            let draws: Vec<_> = (0..2000).map(|_| stagger(below, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d < below), "{below:?}");
            let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
            if below >= Duration::from_millis(1) {
                // Uniform: both ends of the range are reached, the middle too.
                assert!(
                    *lo < below / 50 && *hi > below - below / 50,
                    "{below:?}: {lo:?}..{hi:?}"
                );
                let mean = draws.iter().map(|d| d.as_secs_f64()).sum::<f64>() / draws.len() as f64;
                let want = below.as_secs_f64() / 2.0;
                assert!((mean - want).abs() < want * 0.1, "{below:?}: mean {mean}");
            }
        }
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        let b = backoff(Strategy::Jitter, 100, 60);
        assert_eq!(first(&b, 20), first(&b, 20));
    }

    fn listed(list: &[u64], strategy: Strategy) -> Backoff {
        let list: Vec<Duration> = list.iter().map(|&ms| Duration::from_millis(ms)).collect();
        Backoff {
            strategy,
            base: list[0],
            list,
            ..Backoff::default()
        }
    }

    #[test]
    fn a_delay_list_is_followed_in_order_and_its_last_delay_repeats() {
        // Whatever strategy is left at its default: the list replaces it.
        for strategy in [Strategy::Fixed, Strategy::Exponential] {
            let b = listed(&[1000, 5000, 30_000], strategy);
            assert_eq!(
                first(&b, 6),
                [1000, 5000, 30_000, 30_000, 30_000, 30_000],
                "{strategy}"
            );
            assert_eq!(b.range(2), (Duration::from_secs(5), Duration::from_secs(5)));
            for n in [0, 1] {
                assert_eq!(b.range(n).0, Duration::from_secs(1));
            }
            for n in [3, 1000, u64::MAX] {
                assert_eq!(b.range(n), (Duration::from_secs(30), Duration::from_secs(30)));
            }
        }
    }

    #[test]
    fn a_delay_list_is_capped_jittered_and_restarted() {
        let mut b = listed(&[100, 5000, 90_000], Strategy::Fixed);
        b.max_delay = Duration::from_secs(60);
        assert_eq!(first(&b, 4), [100, 5000, 60_000, 60_000]);
        b.jitter = 0.5;
        let mut s = Schedule::new(b.clone(), Rng::new(4));
        for n in 1..=1000u64 {
            let d = s.next_delay();
            let (lo, hi) = b.range(n);
            assert!(d >= lo && d <= hi, "attempt {n}: {d:?} not in {lo:?}..{hi:?}");
            assert!(d <= Duration::from_secs(60));
        }
        assert_eq!(
            b.range(1),
            (Duration::from_millis(50), Duration::from_millis(150))
        );
        let mut s = Schedule::new(listed(&[100, 200], Strategy::Fixed), Rng::new(1));
        s.next_delay();
        s.next_delay();
        s.reset();
        assert_eq!(s.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn delay_lists_parse_and_bad_ones_name_the_value() {
        assert_eq!(parse_delay("2s").unwrap(), (Duration::from_secs(2), vec![]));
        let (base, list) = parse_delay("1s,5s,30s").unwrap();
        assert_eq!(base, Duration::from_secs(1));
        assert_eq!(list, [1, 5, 30].map(Duration::from_secs).to_vec());
        // Debian's retry takes bare seconds; spaces around items are fine.
        assert_eq!(parse_delay("1, 1.5,0").unwrap().1.len(), 3);
        for bad in ["1s,,2s", "1s,", ",1s", ",", "1s,x", "1s,-2s", "1s,1e999s"] {
            let e = parse_delay(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        let b = listed(&[1000, 1500, 60_000], Strategy::Fixed);
        assert_eq!(format_delay(&b), "1s,1.5s,1m");
        assert_eq!(format_delay(&Backoff::default()), "1s");
    }

    #[test]
    fn parameters_are_validated() {
        for bad in ["nan", "inf", "-1", "0.5", "", "x", "1e9"] {
            assert!(parse_multiplier(bad).is_err(), "{bad}");
        }
        for bad in ["nan", "2", "-0.1", "", "inf"] {
            assert!(parse_jitter(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_jitter("0.25").unwrap(), 0.25);
        assert!("nope".parse::<Strategy>().is_err());
    }
}
