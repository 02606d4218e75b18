//! Whether an attempt succeeded, and if not, whether its failure is worth
//! another try: exit-code sets (`--success-exit`, `--retry-exit`,
//! `--stop-exit`), output patterns (`--success-pattern`, `--failure-pattern`,
//! `--abort-pattern`, `--retry-pattern`, `--transient`), and the
//! classification of a finished attempt.
//!
//! Patterns are compiled once, when the option is read, so a bad one is a
//! usage error before anything runs. `output` feeds them line by line (see
//! [`PatternSet::check`]); this module only decides, from which patterns
//! matched and how the process ended, in this order:
//!
//! 1. success: not timed out, exit code in the success set, no failure
//!    pattern matched, and a success pattern matched if any is given;
//! 2. otherwise a failure, final when an abort pattern matched;
//! 3. a timeout is retried, unless the exit-code sets say otherwise: it
//!    counts as [`TIMEOUT_STATUS`] (124) there, so `--stop-exit 124` makes
//!    it final and `--retry-exit 1` does too (`1,124` retries it);
//! 4. death by SIGPIPE is final (the reader of the output went away), as
//!    is any failure after patience met EPIPE forwarding the output;
//! 5. a failing exit code in `--stop-exit`, or outside `--retry-exit` when
//!    given, is final (a death by signal N counts as 128+N here);
//! 6. with retry patterns (`--retry-pattern`, `--transient`) a failure is
//!    retried only if one matched (or, with `--transient`, on exit code 75);
//! 7. any other failure is retried.

use std::fmt;

use regex_lite::{Regex, RegexBuilder};

use crate::sys::ExitKind;

/// The rule that decided a verdict: words for messages and the JSON report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub text: String,
    /// The exit code alone was a success code: a failure with this set
    /// failed on output (a pattern), and the run exits 1 rather than 0.
    pub exit_ok: bool,
}

impl From<&str> for Rule {
    fn from(text: &str) -> Rule {
        Rule {
            text: text.to_string(),
            exit_ok: false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The verdict on one attempt, with the rule that decided it (for messages
/// and the JSON report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success(Rule),
    /// A failure that may be retried.
    Retry(Rule),
    /// A failure that ends the run at once.
    Final(Rule),
}

impl Verdict {
    pub fn is_success(&self) -> bool {
        matches!(self, Verdict::Success(_))
    }

    /// The rule that decided it, in a few words.
    pub fn rule(&self) -> &str {
        match self {
            Verdict::Success(r) | Verdict::Retry(r) | Verdict::Final(r) => &r.text,
        }
    }

    /// True when the attempt exited with a success code but failed on its
    /// output: the run's exit status is then 1, never the code itself.
    pub fn failed_on_output(&self) -> bool {
        match self {
            Verdict::Success(_) => false,
            Verdict::Retry(r) | Verdict::Final(r) => r.exit_ok,
        }
    }
}

/// A set of exit codes (0–255), from `0`, `0,2` or `0-3,5`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeSet([u64; 4]);

impl CodeSet {
    /// The empty set.
    pub const fn empty() -> CodeSet {
        CodeSet([0; 4])
    }

    /// The set holding only `code`.
    pub fn single(code: u8) -> CodeSet {
        let mut s = CodeSet::empty();
        s.insert(code);
        s
    }

    fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1 << (code % 64);
    }

    /// True when `code` is in the set; codes outside 0–255 never are.
    pub fn contains(&self, code: i32) -> bool {
        match u8::try_from(code) {
            Ok(c) => self.0[usize::from(c / 64)] & (1 << (c % 64)) != 0,
            Err(_) => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Parses a comma-separated list of codes and inclusive ranges.
    pub fn parse(text: &str) -> Result<CodeSet, String> {
        let bad = |why: &str| {
            format!(
                "invalid exit code list '{text}': {why} (expected codes from 0 to 255, such as 0,2 or 0-3,5)"
            )
        };
        let code = |s: &str| -> Result<u8, String> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("'{s}' is not a code")));
            }
            s.parse::<u8>().map_err(|_| bad(&format!("{s} is above 255")))
        };
        let mut set = CodeSet::empty();
        for item in text.split(',') {
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (code(lo)?, code(hi)?);
                    if lo > hi {
                        return Err(bad(&format!("the range {lo}-{hi} is backwards")));
                    }
                    for c in lo..=hi {
                        set.insert(c);
                    }
                }
                None => set.insert(code(item)?),
            }
        }
        Ok(set)
    }
}

impl fmt::Display for CodeSet {
    /// The compact form: `0-3,5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut c = 0u16;
        while c < 256 {
            if !self.contains(i32::from(c)) {
                c += 1;
                continue;
            }
            let start = c;
            while c + 1 < 256 && self.contains(i32::from(c + 1)) {
                c += 1;
            }
            parts.push(if start == c {
                start.to_string()
            } else {
                format!("{start}-{c}")
            });
            c += 1;
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeSet({self})")
    }
}

/// The longest pattern text accepted, in bytes.
pub const PATTERN_MAX_LEN: usize = 4096;
/// The compiled size limit of one pattern (regex-lite's estimate, in bytes).
/// Matching costs O(size × line length), so this also bounds the time spent
/// on each line.
pub const PATTERN_MAX_SIZE: usize = 256 * 1024;
/// The nesting limit of one pattern (groups, repetitions).
pub const PATTERN_MAX_NEST: u32 = 32;

/// One compiled output pattern and the text it came from.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `text`, or says why it is refused: invalid syntax, features
    /// regex-lite lacks (backreferences, `\p{…}`), too long, too large once
    /// compiled (`a{1000}{1000}`), or nested too deep.
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.len() > PATTERN_MAX_LEN {
            return Err(format!(
                "the pattern is too long ({} bytes; at most {PATTERN_MAX_LEN})",
                text.len()
            ));
        }
        let regex = build(text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>();
            format!("invalid pattern: {}", msg.join(": "))
        })?;
        Ok(Pattern {
            source: text.to_string(),
            regex,
        })
    }

    /// True when one line (without its newline, cut at 64 KiB as for the
    /// other patterns) matches; invalid UTF-8 is replaced, as `check` does.
    pub fn matches_line(&self, line: &[u8]) -> bool {
        let line = &line[..line.len().min(crate::output::MATCH_LINE_MAX)];
        self.regex.is_match(&String::from_utf8_lossy(line))
    }

    /// The pattern in quotes, shortened for messages.
    fn quoted(&self) -> String {
        quote(&self.source)
    }
}

fn build(text: &str) -> Result<Regex, regex_lite::Error> {
    RegexBuilder::new(text)
        .size_limit(PATTERN_MAX_SIZE)
        .nest_limit(PATTERN_MAX_NEST)
        .build()
}

fn quote(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        None => format!("'{text}'"),
        Some((cut, _)) => format!("'{}…'", &text[..cut]),
    }
}

/// The built-in retry patterns of `--transient` (matched without regard to
/// case): what a network, a resolver, a package manager's lock or an
/// overloaded server print when trying again later will likely work.
pub const TRANSIENT: &[(&str, &str)] = &[
    ("connection refused", r"connection refused"),
    // curl >= 7.x words a refused connection so (exit code 7).
    ("could not connect", r"could(n't| not) connect to (server|host)"),
    ("connection reset", r"connection reset"),
    ("connection timed out", r"connection timed out"),
    ("network unreachable", r"network (is )?unreachable"),
    ("could not resolve host", r"could(n't| not) resolve host"),
    ("temporary failure", r"temporary failure"),
    ("could not get lock", r"could not get lock"),
    ("lock file exists", r"lock file exists"),
    ("waiting for cache lock", r"waiting for cache lock"),
    (
        "resource temporarily unavailable",
        r"resource temporarily unavailable",
    ),
    (
        "HTTP 429/502/503/504",
        r"\b(429|502|503|504)\b|too many requests|bad gateway|service unavailable|gateway time-?out",
    ),
];

/// What a timeout counts as in `--stop-exit` and `--retry-exit`: the status
/// `timeout` and patience exit with after one.
pub const TIMEOUT_STATUS: i32 = 124;

/// The exit code `--transient` also retries (EX_TEMPFAIL).
pub const TRANSIENT_EXIT: i32 = 75;

/// Which output patterns read: `--match-stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchStream {
    Stdout,
    Stderr,
    Both,
}

impl std::str::FromStr for MatchStream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(MatchStream::Stdout),
            "stderr" => Ok(MatchStream::Stderr),
            "both" => Ok(MatchStream::Both),
            _ => Err(format!("unknown stream '{s}' (pick from: stdout, stderr, both)")),
        }
    }
}

impl MatchStream {
    pub fn reads_stdout(self) -> bool {
        self != MatchStream::Stderr
    }
    pub fn reads_stderr(self) -> bool {
        self != MatchStream::Stdout
    }
}

/// The kinds of pattern, in the order of [`Matches`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Success = 0,
    Failure = 1,
    Abort = 2,
    Retry = 3,
    Transient = 4,
}

const KINDS: [Kind; 5] = [
    Kind::Success,
    Kind::Failure,
    Kind::Abort,
    Kind::Retry,
    Kind::Transient,
];

/// What the rules look at in an attempt that ran.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub exit: ExitKind,
    /// The attempt's time ran out (whatever it exited with afterwards).
    pub timed_out: bool,
    /// It was stopped for the terminal (SIGTTIN, SIGTTOU) and killed.
    pub tty_stop: Option<i32>,
    pub matches: Matches,
    /// Forwarding its output met EPIPE: whoever read it went away.
    pub reader_gone: bool,
}

/// Which patterns matched during one attempt: for each kind, the index of
/// the first pattern of that kind that matched a line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Matches([Option<usize>; 5]);

impl Matches {
    pub fn get(&self, kind: Kind) -> Option<usize> {
        self.0[kind as usize]
    }

    pub fn set(&mut self, kind: Kind, index: usize) {
        self.0[kind as usize].get_or_insert(index);
    }

    /// Adds what `other` (another stream) matched.
    pub fn merge(&mut self, other: &Matches) {
        for k in KINDS {
            if let Some(i) = other.get(k) {
                self.set(k, i);
            }
        }
    }
}

/// Exit codes and patterns: everything that decides an attempt's verdict.
#[derive(Clone, Debug)]
pub struct Conditions {
    pub success_exit: CodeSet,
    /// `None`: every failing code may be retried.
    pub retry_exit: Option<CodeSet>,
    pub stop_exit: CodeSet,
    pub success: Vec<Pattern>,
    pub failure: Vec<Pattern>,
    pub abort: Vec<Pattern>,
    pub retry: Vec<Pattern>,
    pub transient: bool,
    pub match_stream: MatchStream,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            success_exit: CodeSet::single(0),
            retry_exit: None,
            stop_exit: CodeSet::empty(),
            success: Vec::new(),
            failure: Vec::new(),
            abort: Vec::new(),
            retry: Vec::new(),
            transient: false,
            match_stream: MatchStream::Both,
        }
    }
}

impl Conditions {
    /// True when some pattern must read the output.
    pub fn has_patterns(&self) -> bool {
        self.transient
            || !(self.success.is_empty()
                && self.failure.is_empty()
                && self.abort.is_empty()
                && self.retry.is_empty())
    }

    fn patterns(&self, kind: Kind) -> &[Pattern] {
        match kind {
            Kind::Success => &self.success,
            Kind::Failure => &self.failure,
            Kind::Abort => &self.abort,
            Kind::Retry => &self.retry,
            Kind::Transient => &[],
        }
    }

    /// The name of pattern `index` of `kind`, for a rule.
    fn name(&self, kind: Kind, index: usize) -> String {
        match kind {
            Kind::Transient => TRANSIENT.get(index).map(|t| t.0.to_string()).unwrap_or_default(),
            _ => self
                .patterns(kind)
                .get(index)
                .map(Pattern::quoted)
                .unwrap_or_default(),
        }
    }

    /// Classifies an attempt that ran, from how it ended and what its output
    /// matched, in the order given in the module documentation.
    pub fn classify(&self, ended: &Observed) -> Verdict {
        // Another try would stop the same way: the terminal is not its.
        if let Some(sig) = ended.tty_stop {
            return Verdict::Final(Rule {
                text: format!(
                    "stopped by {}: it needs the terminal, which only --foreground gives it",
                    crate::signals::name(sig)
                ),
                exit_ok: false,
            });
        }
        let m = &ended.matches;
        let code = match ended.exit {
            ExitKind::Code(c) => Some(c),
            ExitKind::Signal(_) => None,
        };
        let exit_ok = !ended.timed_out && code.is_some_and(|c| self.success_exit.contains(c));
        let failure_hit = m.get(Kind::Failure);
        let success_hit = m.get(Kind::Success);
        if exit_ok && failure_hit.is_none() && (self.success.is_empty() || success_hit.is_some()) {
            let text = match (success_hit, code) {
                (Some(i), _) => format!("success pattern {}", self.name(Kind::Success, i)),
                (None, c) => format!("exit code {}", c.unwrap_or_default()),
            };
            return Verdict::Success(Rule { text, exit_ok });
        }
        // Why it failed.
        let reason = if ended.timed_out {
            "timeout".to_string()
        } else {
            match (ended.exit, failure_hit) {
                (ExitKind::Code(c), _) if !exit_ok => format!("exit code {c}"),
                (ExitKind::Signal(s), _) => format!("killed by {}", crate::signals::name(s)),
                (_, Some(i)) => format!("failure pattern {}", self.name(Kind::Failure, i)),
                (_, None) => "no success pattern matched".to_string(),
            }
        };
        let rule = |extra: &str| Rule {
            text: if extra.is_empty() {
                reason.clone()
            } else {
                format!("{reason}{extra}")
            },
            exit_ok,
        };
        // Whether it is worth another try.
        if let Some(i) = m.get(Kind::Abort) {
            return Verdict::Final(rule(&format!("; abort pattern {}", self.name(Kind::Abort, i))));
        }
        if ended.timed_out {
            return self
                .by_code(TIMEOUT_STATUS, rule)
                .unwrap_or_else(|| Verdict::Retry(rule("")));
        }
        // Whoever read the output went away (`patience -- yes | head -1`):
        // another attempt would only write into the same closed pipe. A
        // child that ignores SIGPIPE fails on EPIPE instead, which patience
        // saw when it forwarded the output.
        if ended.exit == ExitKind::Signal(libc::SIGPIPE) || ended.reader_gone {
            return Verdict::Final(rule(" (the output reader went away)"));
        }
        if !exit_ok {
            let status = match ended.exit {
                ExitKind::Code(c) => c,
                ExitKind::Signal(s) => 128 + s,
            };
            if let Some(verdict) = self.by_code(status, rule) {
                return verdict;
            }
        }
        if self.transient || !self.retry.is_empty() {
            if let Some(i) = m.get(Kind::Retry) {
                return Verdict::Retry(rule(&format!("; retry pattern {}", self.name(Kind::Retry, i))));
            }
            if let Some(i) = m.get(Kind::Transient) {
                return Verdict::Retry(rule(&format!(
                    "; transient error: {}",
                    self.name(Kind::Transient, i)
                )));
            }
            if self.transient && code == Some(TRANSIENT_EXIT) {
                return Verdict::Retry(rule("; transient exit code 75"));
            }
            return Verdict::Final(rule("; no retry pattern matched"));
        }
        Verdict::Retry(rule(""))
    }

    /// The final verdict `--stop-exit` or `--retry-exit` give a failure with
    /// `status`, if either decides it.
    fn by_code(&self, status: i32, rule: impl Fn(&str) -> Rule) -> Option<Verdict> {
        if self.stop_exit.contains(status) {
            return Some(Verdict::Final(rule(" (--stop-exit)")));
        }
        if self.retry_exit.is_some_and(|r| !r.contains(status)) {
            return Some(Verdict::Final(rule(" (not in --retry-exit)")));
        }
        None
    }

    /// The verdict on an attempt that could not start (`status` 126 or 127,
    /// `what` says why): final at once, unless `--retry-exit` names it.
    pub fn not_started(&self, status: i32, what: &str) -> Verdict {
        let rule = Rule::from(what);
        if self.retry_exit.is_some_and(|r| r.contains(status)) {
            Verdict::Retry(rule)
        } else {
            Verdict::Final(rule)
        }
    }
}

/// True when `text` has no regex syntax at all: it matches exactly where
/// its bytes occur, which a substring search finds far faster than a regex
/// engine (`ERROR`, `Connection refused`).
fn is_literal(text: &str) -> bool {
    !text.contains([
        '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
    ])
}

/// One pattern ready for matching.
#[derive(Debug)]
enum Matcher {
    /// A pattern without regex syntax, searched as bytes.
    Literal(Vec<u8>),
    Regex(Regex),
}

/// A line, as bytes and (made only when a regex needs it) as text.
struct Line<'a> {
    bytes: &'a [u8],
    text: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> Line<'a> {
    /// The line as UTF-8, invalid bytes replaced (U+FFFD).
    fn text(&mut self) -> &str {
        let bytes = self.bytes;
        self.text.get_or_insert_with(|| String::from_utf8_lossy(bytes))
    }
}

impl Matcher {
    /// For a literal, searching the raw bytes finds exactly what searching
    /// the lossily decoded text would: the literal is valid UTF-8, and
    /// decoding keeps every valid sequence as it is.
    fn is_match(&self, line: &mut Line) -> bool {
        match self {
            Matcher::Literal(lit) => crate::sys::contains(line.bytes, lit),
            Matcher::Regex(r) => r.is_match(line.text()),
        }
    }
}

/// A group of patterns of one kind. Several regexes are tried first as one
/// (their alternation, when it fits the size limit), then one by one only
/// on a line where that matched, to name the pattern.
#[derive(Debug)]
struct Group {
    kind: Kind,
    any: Option<Regex>,
    parts: Vec<Matcher>,
}

impl Group {
    fn new(kind: Kind, parts: Vec<Regex>) -> Group {
        let literal = |r: &Regex| is_literal(r.as_str()) && !r.as_str().contains('\u{fffd}');
        let any = match parts.len() {
            0 | 1 => None,
            _ if parts.iter().all(literal) => None,
            _ => {
                let joined: Vec<String> = parts.iter().map(|r| format!("(?:{})", r.as_str())).collect();
                build(&joined.join("|")).ok()
            }
        };
        let parts = parts
            .into_iter()
            .map(|r| {
                if literal(&r) {
                    Matcher::Literal(r.as_str().as_bytes().to_vec())
                } else {
                    Matcher::Regex(r)
                }
            })
            .collect();
        Group { kind, any, parts }
    }

    /// The index of the first pattern matching `line`, if any.
    fn first_match(&self, line: &mut Line) -> Option<usize> {
        if let Some(any) = &self.any {
            if !any.is_match(line.text()) {
                return None;
            }
        }
        self.parts.iter().position(|m| m.is_match(line))
    }
}

/// The patterns of a run, compiled for matching, shared by the threads that
/// read an attempt's output.
#[derive(Debug)]
pub struct PatternSet {
    groups: Vec<Group>,
}

impl PatternSet {
    /// The patterns of `c`, or `None` when there are none.
    pub fn new(c: &Conditions) -> Option<PatternSet> {
        if !c.has_patterns() {
            return None;
        }
        let mut groups = Vec::new();
        for kind in KINDS {
            let parts: Vec<Regex> = match kind {
                Kind::Transient if c.transient => TRANSIENT
                    .iter()
                    .map(|(_, re)| build(&format!("(?i){re}")).expect("built-in patterns compile"))
                    .collect(),
                _ => c.patterns(kind).iter().map(|p| p.regex.clone()).collect(),
            };
            if !parts.is_empty() {
                groups.push(Group::new(kind, parts));
            }
        }
        Some(PatternSet { groups })
    }

    /// Matches one line (without its newline) against every kind that has
    /// not matched yet, recording the first pattern that matches. Regexes
    /// see the line as UTF-8 with invalid bytes replaced.
    pub fn check(&self, line: &[u8], m: &mut Matches) {
        let mut line = Line {
            bytes: line,
            text: None,
        };
        for g in &self.groups {
            if m.get(g.kind).is_none() {
                if let Some(i) = g.first_match(&mut line) {
                    m.set(g.kind, i);
                }
            }
        }
    }

    /// True when every kind has matched: no later line can change anything.
    pub fn all_matched(&self, m: &Matches) -> bool {
        self.groups.iter().all(|g| m.get(g.kind).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sets_parse_lists_and_ranges() {
        let s = CodeSet::parse("0-3,5").unwrap();
        for c in [0, 1, 2, 3, 5] {
            assert!(s.contains(c), "{c}");
        }
        for c in [4, 6, 255, -1, 256, 1000] {
            assert!(!s.contains(c), "{c}");
        }
        assert_eq!(s.to_string(), "0-3,5");
        assert_eq!(CodeSet::parse("0,2").unwrap().to_string(), "0,2");
        assert_eq!(CodeSet::parse(" 7 , 9-9 ").unwrap().to_string(), "7,9");
        let all = CodeSet::parse("0-255").unwrap();
        assert!(all.contains(0) && all.contains(255) && all.contains(128));
        assert_eq!(all.to_string(), "0-255");
        assert_eq!(
            CodeSet::parse("63-65,127-129,191-193").unwrap().to_string(),
            "63-65,127-129,191-193"
        );
    }

    #[test]
    fn code_sets_reject_bad_input() {
        for bad in [
            "",
            ",",
            "0,",
            "256",
            "-1",
            "3-1",
            "a",
            "1-",
            "-",
            "0-256",
            "1.5",
            "+1",
            "0x1",
            "1--2",
            "99999999999",
        ] {
            let e = CodeSet::parse(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn patterns_refuse_what_regex_lite_cannot_do_cheaply() {
        assert!(Pattern::new("conn(ection)? refused").is_ok());
        assert!(Pattern::new(r"(?i)error: \d+").is_ok());
        for bad in [
            "(",
            "a{1000}{1000}",
            r"(a)\1",
            r"\p{Greek}",
            &"(".repeat(100),
            &"(a".repeat(40),
        ] {
            assert!(Pattern::new(bad).is_err(), "{bad}");
        }
        let long = "a".repeat(PATTERN_MAX_LEN + 1);
        assert!(Pattern::new(&long).unwrap_err().contains("too long"));
        // Messages stay on one line.
        assert!(!Pattern::new("(").unwrap_err().contains('\n'));
    }

    #[test]
    fn transient_patterns_compile_and_recognise_real_messages() {
        let c = Conditions {
            transient: true,
            ..Conditions::default()
        };
        let set = PatternSet::new(&c).unwrap();
        let hit = |line: &str| {
            let mut m = Matches::default();
            set.check(line.as_bytes(), &mut m);
            m.get(Kind::Transient)
        };
        for line in [
            "curl: (7) Failed to connect to localhost port 1: Connection refused",
            "curl: (6) Could not resolve host: example.invalid",
            "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234",
            "Err:1 http://deb.debian.org bookworm InRelease Temporary failure resolving 'deb.debian.org'",
            "curl: (22) The requested URL returned error: 503",
            "read: Connection reset by peer",
            "connect: Network is unreachable",
            "HTTP/1.1 429 Too Many Requests",
            "Waiting for cache lock: Could not get lock",
            "curl: (7) Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server",
        ] {
            assert!(hit(line).is_some(), "{line}");
        }
        for line in [
            "curl: (22) The requested URL returned error: 404",
            "5030 bytes",
            "all good",
        ] {
            assert_eq!(hit(line), None, "{line}");
        }
    }

    fn ended(exit: ExitKind, matches: Matches) -> Observed {
        Observed {
            exit,
            timed_out: false,
            tty_stop: None,
            matches,
            reader_gone: false,
        }
    }

    #[test]
    fn a_stop_for_the_terminal_is_final_whatever_else() {
        let c = Conditions {
            success_exit: CodeSet::parse("0-255").unwrap(),
            ..Conditions::default()
        };
        let mut seen = ended(ExitKind::Signal(libc::SIGTTOU), with(Kind::Success));
        seen.tty_stop = Some(libc::SIGTTOU);
        let v = c.classify(&seen);
        assert!(
            matches!(&v, Verdict::Final(r) if r.text.contains("--foreground")),
            "{v:?}"
        );
    }

    fn with(kind: Kind) -> Matches {
        let mut m = Matches::default();
        m.set(kind, 0);
        m
    }

    fn pats(p: &str) -> Vec<Pattern> {
        vec![Pattern::new(p).unwrap()]
    }

    #[test]
    fn classification_order() {
        let none = Matches::default();
        let plain = Conditions::default();
        assert!(plain.classify(&ended(ExitKind::Code(0), none)).is_success());
        assert!(matches!(
            plain.classify(&ended(ExitKind::Code(1), none)),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            plain.classify(&ended(ExitKind::Signal(libc::SIGPIPE), none)),
            Verdict::Final(_)
        ));
        assert!(matches!(
            plain.classify(&ended(ExitKind::Signal(libc::SIGKILL), none)),
            Verdict::Retry(_)
        ));
        let mut gone = ended(ExitKind::Code(1), none);
        gone.reader_gone = true;
        assert!(matches!(plain.classify(&gone), Verdict::Final(_)));
        let mut timed = ended(ExitKind::Code(0), none);
        timed.timed_out = true;
        assert_eq!(plain.classify(&timed), Verdict::Retry(Rule::from("timeout")));

        // A failure pattern fails an exit-0 attempt, and says so.
        let c = Conditions {
            failure: pats("x"),
            ..Conditions::default()
        };
        let v = c.classify(&ended(ExitKind::Code(0), with(Kind::Failure)));
        assert!(matches!(v, Verdict::Retry(_)) && v.failed_on_output(), "{v:?}");
        assert_eq!(v.rule(), "failure pattern 'x'");
        let v = c.classify(&ended(ExitKind::Code(3), with(Kind::Failure)));
        assert!(!v.failed_on_output(), "{v:?}");

        // A success pattern is needed when given.
        let c = Conditions {
            success: pats("ready"),
            success_exit: CodeSet::parse("0,2").unwrap(),
            ..Conditions::default()
        };
        assert!(!c.classify(&ended(ExitKind::Code(0), none)).is_success());
        assert!(c
            .classify(&ended(ExitKind::Code(2), with(Kind::Success)))
            .is_success());
        assert!(!c
            .classify(&ended(ExitKind::Code(1), with(Kind::Success)))
            .is_success());

        // Abort beats everything but success, even a timeout.
        let c = Conditions {
            abort: pats("FATAL"),
            ..Conditions::default()
        };
        let mut t = ended(ExitKind::Signal(libc::SIGTERM), with(Kind::Abort));
        t.timed_out = true;
        assert!(matches!(c.classify(&t), Verdict::Final(_)));
        assert!(c
            .classify(&ended(ExitKind::Code(0), with(Kind::Abort)))
            .is_success());

        // Exit-code sets; a signal N counts as 128+N.
        let c = Conditions {
            retry_exit: Some(CodeSet::parse("1,137").unwrap()),
            stop_exit: CodeSet::parse("1").unwrap(),
            ..Conditions::default()
        };
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(1), none)),
            Verdict::Final(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(2), none)),
            Verdict::Final(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Signal(9), none)),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Signal(15), none)),
            Verdict::Final(_)
        ));

        // Retry patterns filter failures; --transient also retries 75.
        let c = Conditions {
            retry: pats("busy"),
            transient: true,
            ..Conditions::default()
        };
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(1), none)),
            Verdict::Final(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(1), with(Kind::Retry))),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(1), with(Kind::Transient))),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(75), none)),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn a_timeout_is_124_in_the_exit_code_sets() {
        let timed = |exit| {
            let mut t = ended(exit, Matches::default());
            t.timed_out = true;
            t
        };
        let sets = |retry: Option<&str>, stop: &str| Conditions {
            retry_exit: retry.map(|r| CodeSet::parse(r).unwrap()),
            stop_exit: match stop {
                "" => CodeSet::empty(),
                codes => CodeSet::parse(codes).unwrap(),
            },
            success_exit: CodeSet::parse("0,124").unwrap(),
            ..Conditions::default()
        };
        for exit in [
            ExitKind::Signal(libc::SIGTERM),
            ExitKind::Code(0),
            ExitKind::Code(1),
        ] {
            let v = sets(None, "124").classify(&timed(exit));
            assert_eq!(v, Verdict::Final(Rule::from("timeout (--stop-exit)")), "{exit:?}");
            let v = sets(Some("1"), "").classify(&timed(exit));
            assert_eq!(v, Verdict::Final(Rule::from("timeout (not in --retry-exit)")));
            assert_eq!(
                sets(Some("1,124"), "").classify(&timed(exit)),
                Verdict::Retry(Rule::from("timeout"))
            );
            // Never a success, whatever --success-exit holds.
            assert_eq!(
                sets(None, "").classify(&timed(exit)),
                Verdict::Retry(Rule::from("timeout"))
            );
        }
        // --retry-exit 1,124 still makes other codes final, and 1 retried.
        let c = sets(Some("1,124"), "");
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(2), Matches::default())),
            Verdict::Final(_)
        ));
        assert!(matches!(
            c.classify(&ended(ExitKind::Code(1), Matches::default())),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn not_started_is_final_unless_named() {
        let plain = Conditions::default();
        assert!(matches!(
            plain.not_started(127, "command not found"),
            Verdict::Final(_)
        ));
        let c = Conditions {
            retry_exit: Some(CodeSet::parse("127").unwrap()),
            ..Conditions::default()
        };
        assert!(matches!(
            c.not_started(127, "command not found"),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            c.not_started(126, "command not executable"),
            Verdict::Final(_)
        ));
    }

    #[test]
    fn groups_report_the_first_matching_pattern() {
        let c = Conditions {
            failure: vec![Pattern::new("b+").unwrap(), Pattern::new("(?i)ERR").unwrap()],
            ..Conditions::default()
        };
        let set = PatternSet::new(&c).unwrap();
        let mut m = Matches::default();
        set.check(b"an err here", &mut m);
        assert_eq!(m.get(Kind::Failure), Some(1));
        set.check(b"bbb", &mut m);
        assert_eq!(m.get(Kind::Failure), Some(1), "the first match stays");
        assert!(set.all_matched(&m));
    }

    #[test]
    fn literals_match_as_the_regex_would() {
        assert!(is_literal("Connection refused") && is_literal("x") && is_literal("é: 5%"));
        for not in [
            r"a\.b", "a.b", "^x", "x$", "a|b", "(?i)x", "a{2}", "[x]", "a+", "a*", "a?",
        ] {
            assert!(!is_literal(not), "{not}");
        }
        let c = Conditions {
            failure: vec![Pattern::new("héllo wörld").unwrap(), Pattern::new("zz").unwrap()],
            ..Conditions::default()
        };
        let set = PatternSet::new(&c).unwrap();
        for (line, hit) in [
            (&b"say h\xc3\xa9llo w\xc3\xb6rld!"[..], Some(0)),
            (b"\xff\xfeh\xc3\xa9llo w\xc3\xb6rld", Some(0)),
            (b"h\xc3\xa9llo w\xc3rld", None),
            (b"abzz", Some(1)),
            (b"", None),
        ] {
            let mut m = Matches::default();
            set.check(line, &mut m);
            assert_eq!(m.get(Kind::Failure), hit, "{line:?}");
            // The same as the regex on the lossily decoded line.
            let text = String::from_utf8_lossy(line);
            let by_regex = c.failure.iter().position(|p| p.regex.is_match(&text));
            assert_eq!(by_regex, hit, "{line:?}");
        }
    }
}
