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

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse(text: &str) -> Result<i32, String> {
    let s = text.trim();
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("invalid signal '{text}' (numbers go from 1 to 64)"));
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|&(_, n)| n)
        .ok_or_else(|| format!("invalid signal '{text}' (use a name such as TERM, INT, KILL, or a number)"))
}

/// The name of signal `n` with its SIG prefix (`SIGKILL`), or `SIG<n>`.
pub fn name(n: i32) -> String {
    match NAMES.iter().find(|&&(_, v)| v == n) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("SIG{n}"),
    }
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
        assert_eq!(parse("HUP").unwrap(), 1);
        for bad in ["NOPE", "", "0", "65", "-1", "SIG", "15.0"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(name(9), "SIGKILL");
        assert_eq!(name(40), "SIG40");
    }
}
