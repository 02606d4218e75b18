//! Signals as patience sees them: names and numbers for `--signal`, which
//! signals patience forwards, and the thread that turns delivered signals
//! into messages for the attempt loop.
//!
//! The handler itself (signal-hook's) only writes to a pipe; a named thread
//! reads it and sends the signal number on a channel, so the attempt loop
//! decides what a signal means with no async-signal-safety concerns.

/// The signals patience forwards to the attempt and then exits 128+N on.
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

const NAMES: [(&str, i32); 31] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal as GNU timeout's `-s` does: `TERM`, `SIGTERM`, `term`,
/// `15`, `SIG15`; `0` (or `EXIT`), which signals nothing and only starts the
/// grace before SIGKILL; and the real-time signals `RTMIN`, `RTMIN+N`,
/// `RTMAX-N`, `RTMAX`, counted from this C library's SIGRTMIN and SIGRTMAX.
pub fn parse(text: &str) -> Result<i32, String> {
    let (_, rtmax) = crate::sys::realtime_signals();
    let bad = || {
        format!(
            "invalid signal '{text}' (use a name such as TERM, INT, KILL, RTMIN+1, or a number from 0 to {rtmax})"
        )
    };
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        return match bare.parse::<i32>() {
            Ok(n) if n <= rtmax => Ok(n),
            _ => Err(bad()),
        };
    }
    if bare == "EXIT" {
        return Ok(0);
    }
    NAMES
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|&(_, n)| n)
        .or_else(|| realtime(bare))
        .ok_or_else(bad)
}

/// `RTMIN`, `RTMIN+N`, `RTMAX-N`, `RTMAX` (without SIG), when N keeps the
/// signal inside the real-time range.
fn realtime(bare: &str) -> Option<i32> {
    let (min, max) = crate::sys::realtime_signals();
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(sign)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i32>().ok().filter(|&n| n <= max - min)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return offset(rest, '+').map(|n| min + n);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return offset(rest, '-').map(|n| max - n);
    }
    None
}

/// The name of signal `n` with its SIG prefix (`SIGKILL`); a real-time
/// signal as `kill -l` and GNU timeout name it, `SIGRTMIN+N` in the lower
/// half of the range and `SIGRTMAX-N` in the upper (`SIGRTMIN+6` is 40 under
/// glibc); anything else `SIG<n>`. Every name is a valid metrics label and
/// `parse` reads it back.
pub fn name(n: i32) -> String {
    if let Some((name, _)) = NAMES.iter().find(|&&(_, v)| v == n) {
        return format!("SIG{name}");
    }
    let (min, max) = crate::sys::realtime_signals();
    if (min..=max).contains(&n) {
        let lower_half = n <= min + (max - min) / 2;
        return match (n - min, max - n) {
            (0, _) => "SIGRTMIN".into(),
            (_, 0) => "SIGRTMAX".into(),
            (up, _) if lower_half => format!("SIGRTMIN+{up}"),
            (_, down) => format!("SIGRTMAX-{down}"),
        };
    }
    format!("SIG{n}")
}

/// Registers handlers for the forwarded signals that were not ignored when
/// patience started, and starts the thread that sends each delivered signal
/// to `deliver`, until `deliver` returns false. A signal the caller ignored (a background job's SIGINT) stays
/// ignored, for patience and for the child (GNU timeout 9.10 behaves so).
pub fn listen(deliver: impl Fn(i32) -> bool + Send + 'static) -> std::io::Result<()> {
    let wanted: Vec<i32> = FORWARDED
        .iter()
        .copied()
        .filter(|&s| !crate::sys::is_ignored(s))
        .collect();
    let mut signals = signal_hook::iterator::Signals::new(&wanted)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if !deliver(sig) {
                    break;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap(), 15);
        assert_eq!(parse("SIGTERM").unwrap(), 15);
        assert_eq!(parse("sigkill").unwrap(), 9);
        assert_eq!(parse("15").unwrap(), 15);
        assert_eq!(parse("SIG15").unwrap(), 15);
        assert_eq!(parse("HUP").unwrap(), 1);
        // Signal 0, as GNU timeout takes it: nothing sent, SIGKILL later.
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("SIG0").unwrap(), 0);
        assert_eq!(parse("EXIT").unwrap(), 0);
        for bad in [
            "NOPE",
            "",
            "65",
            "-1",
            "SIG",
            "15.0",
            "+15",
            "SIGSIGTERM",
            "99999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(0), "SIG0");
    }

    #[test]
    fn real_time_signals_as_gnu_and_kill_l_name_them() {
        let (min, max) = crate::sys::realtime_signals();
        assert!(min > 31 && max >= min + 8, "{min}..{max}");
        assert_eq!(parse("RTMIN").unwrap(), min);
        assert_eq!(parse("SIGRTMIN").unwrap(), min);
        assert_eq!(parse("rtmin+2").unwrap(), min + 2);
        assert_eq!(parse("SIGRTMIN+0").unwrap(), min);
        assert_eq!(parse("RTMAX").unwrap(), max);
        assert_eq!(parse("SIGRTMAX-1").unwrap(), max - 1);
        assert_eq!(parse(&format!("RTMIN+{}", max - min)).unwrap(), max);
        assert_eq!(parse(&format!("RTMAX-{}", max - min)).unwrap(), min);
        assert_eq!(parse(&max.to_string()).unwrap(), max);
        for bad in [
            format!("RTMIN+{}", max - min + 1),
            format!("RTMAX-{}", max - min + 1),
            format!("{}", max + 1),
            "RTMIN-1".into(),
            "RTMAX+1".into(),
            "RTMIN+".into(),
            "RTMIN1".into(),
            "RTMIN+ 1".into(),
            "RTMIDDLE".into(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(name(min), "SIGRTMIN");
        assert_eq!(name(min + 1), "SIGRTMIN+1");
        assert_eq!(name(max), "SIGRTMAX");
        assert_eq!(name(max - 1), "SIGRTMAX-1");
        // Every number has a name that reads back to it, and no label
        // needs quoting beyond what Prometheus does anyway.
        for n in 0..=max {
            let shown = name(n);
            assert_eq!(parse(&shown), Ok(n), "{shown}");
            assert!(
                shown
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-'),
                "{shown}"
            );
        }
        if (min, max) == (34, 64) {
            // glibc, as `kill -l` prints it.
            assert_eq!(name(40), "SIGRTMIN+6");
            assert_eq!(name(49), "SIGRTMIN+15");
            assert_eq!(name(50), "SIGRTMAX-14");
            assert_eq!(name(32), "SIG32");
        }
    }
}
