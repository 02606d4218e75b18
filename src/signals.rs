//! Signals as patience sees them: names and numbers for `--signal`, which
//! signals patience forwards, and the thread that turns delivered signals
//! into messages for the attempt loop.
//!
//! The handler itself (signal-hook's) only writes to a pipe; a named thread
//! reads it and sends the signal number on a channel, so the attempt loop
//! decides what a signal means with no async-signal-safety concerns.

/// The signals that are faults of the process that gets them, or that
/// patience keeps for itself, and so are never caught to be passed on:
/// SIGCHLD is how patience learns of exits, SIGPIPE and SIGTTIN/SIGTTOU are
/// ignored by patience (its own writes, not the command's business), the
/// synchronous ones (SIGSEGV, SIGBUS …) are patience's own faults, as tini
/// leaves them too. SIGKILL and SIGSTOP cannot be caught at all.
const NOT_CAUGHT: [i32; 13] = [
    libc::SIGCHLD,
    libc::SIGPIPE,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGSYS,
    libc::SIGKILL,
    libc::SIGSTOP,
];

/// Every signal patience catches to pass on to the attempt: all catchable
/// signals but those of `NOT_CAUGHT`, real-time ones included (tini and
/// dumb-init pass them all; GNU timeout handles every terminating one), so
/// that as PID 1 none is dropped and elsewhere none kills patience and
/// strands the attempt. SIGTSTP only without `--foreground`: there patience
/// shares the terminal's job with the command, and a shell sees the job
/// stopped only if patience stops too.
pub fn caught(foreground: bool) -> Vec<i32> {
    (1..=crate::sys::realtime_signals().1)
        .filter(|s| !NOT_CAUGHT.contains(s))
        .filter(|&s| !(foreground && s == libc::SIGTSTP))
        // glibc keeps the first real-time signals for its threads.
        .filter(|&s| !(libc::SIGSYS < s && s < crate::sys::realtime_signals().0))
        .collect()
}

/// What a signal received while an attempt runs asks of patience.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// INT, TERM, QUIT (and HUP outside supervision): passed to the
    /// attempt's process group, and the run ends when the attempt does.
    Stop,
    /// Anything else: passed on, nothing else changes. A supervisor passes
    /// it to the attempt's main process only (tini's default: the process
    /// that knows how to reload tells its workers); a plain retry run to
    /// the attempt's group, as GNU timeout does.
    Pass,
}

/// What `sig` means to a run; `supervising` is true as PID 1, with
/// `--init` and under `--restart always`, where SIGHUP is a reload signal
/// rather than a hangup.
pub fn meaning(sig: i32, supervising: bool) -> Meaning {
    match sig {
        libc::SIGINT | libc::SIGTERM | libc::SIGQUIT => Meaning::Stop,
        libc::SIGHUP if !supervising => Meaning::Stop,
        _ => Meaning::Pass,
    }
}

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

/// Registers handlers for the `caught` signals that were not ignored when
/// patience started, and starts the thread that sends each delivered signal
/// to `deliver`, until `deliver` returns false. A signal the caller ignored
/// (a background job's SIGINT) stays ignored, for patience and for the
/// child (GNU timeout 9.10 behaves so).
pub fn listen(caught: &[i32], deliver: impl Fn(i32) -> bool + Send + 'static) -> std::io::Result<()> {
    let wanted: Vec<i32> = caught
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

    #[test]
    fn every_catchable_signal_but_the_kept_ones_is_caught() {
        let all = caught(false);
        for sig in [
            libc::SIGHUP,
            libc::SIGALRM,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGURG,
            libc::SIGPWR,
        ] {
            assert!(all.contains(&sig), "{sig}");
        }
        assert!(
            all.contains(&crate::sys::realtime_signals().0)
                && all.contains(&crate::sys::realtime_signals().1)
        );
        for sig in NOT_CAUGHT {
            assert!(!all.contains(&sig), "{sig}");
        }
        assert!(!caught(true).contains(&libc::SIGTSTP));
    }

    #[test]
    fn hup_stops_a_retry_run_and_reloads_a_supervisor() {
        assert_eq!(meaning(libc::SIGHUP, false), Meaning::Stop);
        assert_eq!(meaning(libc::SIGHUP, true), Meaning::Pass);
        assert_eq!(meaning(libc::SIGTERM, true), Meaning::Stop);
        for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH, libc::SIGALRM] {
            assert_eq!(meaning(sig, false), Meaning::Pass);
            assert_eq!(meaning(sig, true), Meaning::Pass);
        }
    }
}
