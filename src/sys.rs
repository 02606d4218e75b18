//! The only module that calls `libc` or uses `unsafe`: process groups,
//! signals, waiting without reaping, prctl, and what the child does between
//! fork and exec. Everything here has a safe signature; each `unsafe` block
//! says why it is sound. Callers never see a raw libc type.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// How a process ended, as `waitid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited normally with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Prepares the process when `main` starts, before anything else opens a
/// file: fd 0, 1 or 2 closed by the caller (`2>&-`) is reopened on
/// /dev/null, so a later lock or state file can never land on a standard
/// descriptor and be handed to the child as its output. (Rust's runtime does
/// the same; patience's `main` runs without it to see the inherited SIGPIPE.)
pub fn sanitize_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any integer is harmless; it only reports EBADF.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1;
        if closed {
            let flags = if fd == 0 { libc::O_RDONLY } else { libc::O_WRONLY };
            // SAFETY: the path is a NUL-terminated literal; open returns the
            // lowest free descriptor, which is `fd` since all below are open.
            unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
        }
    }
}

/// True when `sig` is ignored (SIG_IGN) right now. Used at start-up to learn
/// what the caller ignored, so it stays ignored for the child.
pub fn is_ignored(sig: i32) -> bool {
    // SAFETY: a zeroed sigaction is a valid out-parameter; passing a null new
    // action only queries the disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Sets `sig` to SIG_IGN in patience itself.
pub fn ignore(sig: i32) {
    // SAFETY: SIG_IGN is a valid disposition for every catchable signal;
    // for others signal() fails harmlessly.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}

/// Sets `sig` back to its default disposition in patience itself.
pub fn set_default(sig: i32) {
    // SAFETY: SIG_DFL is a valid disposition for every signal.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Unblocks `sigs` for the calling thread (and the threads it starts later),
/// so a mask inherited from the caller cannot hide them from patience.
pub fn unblock(sigs: &[i32]) {
    // SAFETY: the set is initialised by sigemptyset before use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The signal mask patience inherited, to be given back to the child.
#[derive(Clone, Copy)]
pub struct SigMask(libc::sigset_t);

impl SigMask {
    /// The calling thread's current mask.
    pub fn current() -> SigMask {
        // SAFETY: sigemptyset initialises the set; pthread_sigmask with a null
        // new set only reads the current mask into it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut set);
            SigMask(set)
        }
    }

    /// True when `sig` is blocked in this mask.
    pub fn contains(&self, sig: i32) -> bool {
        // SAFETY: self.0 is an initialised sigset_t.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }
}

/// What the child must look like at exec, beyond what `Command` does.
#[derive(Clone, Copy)]
pub struct ChildSetup {
    /// Dispositions to put back (signal, was ignored): std resets SIGPIPE to
    /// default, patience ignored TTIN/TTOU for itself; the caller's SIG_IGN
    /// must survive, everything else starts at default.
    pub restore: [(i32, bool); 4],
    /// The mask patience inherited (std empties it before exec).
    pub mask: SigMask,
    /// Kill the child with SIGKILL if patience dies (PR_SET_PDEATHSIG).
    pub die_with_parent: bool,
    /// patience's pid, to close the race where patience died before prctl.
    pub parent: i32,
    /// A terminal whose foreground the child's own process group takes
    /// before exec, so that it can read it at once (the parent gives it
    /// too, after the fork, whichever comes first).
    pub terminal: Option<i32>,
}

/// Installs `setup` to run in the child between fork and exec.
pub fn prepare_child(cmd: &mut Command, setup: ChildSetup) {
    let hook = move || {
        if let Some(fd) = setup.terminal {
            // SAFETY: getpid and tcsetpgrp are async-signal-safe and take no
            // memory. std has made the child its own group leader already;
            // SIGTTOU is still ignored here (patience's disposition), so the
            // call works from the background group the child is in.
            unsafe { libc::tcsetpgrp(fd, libc::getpid()) };
        }
        for (sig, ignored) in setup.restore {
            let disp = if ignored { libc::SIG_IGN } else { libc::SIG_DFL };
            // SAFETY: signal() is async-signal-safe and SIG_IGN/SIG_DFL are
            // valid for these catchable signals.
            unsafe { libc::signal(sig, disp) };
        }
        // SAFETY: the mask is an initialised sigset_t copied into the closure;
        // sigprocmask is async-signal-safe.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &setup.mask.0, std::ptr::null_mut()) };
        if setup.die_with_parent {
            // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe
            // system calls with no memory arguments. The death signal follows
            // the *thread* that forked, so patience spawns from its main thread.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                if libc::getppid() != setup.parent {
                    // patience died before prctl took effect.
                    libc::_exit(128 + libc::SIGKILL);
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls (tcsetpgrp,
    // signal, sigprocmask, prctl, getppid, _exit) and allocates nothing, as
    // required between fork and exec in a multi-threaded process.
    unsafe { cmd.pre_exec(hook) };
}

/// waitid(idtype, id, flags), EINTR retried.
fn waitid(idtype: libc::idtype_t, id: libc::id_t, flags: libc::c_int) -> io::Result<libc::siginfo_t> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`.
        let ret = unsafe { libc::waitid(idtype, id, &mut info, flags) };
        if ret == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(info);
    }
}

/// How a child waited for with `WEXITED | WSTOPPED | WNOWAIT` ended
/// (`Ok`), or the signal that stopped it (`Err`). A stop's notice is
/// consumed here: WNOWAIT left it pending, and it would be reported again
/// at once. WNOHANG, as the child may have been continued meanwhile;
/// without WEXITED an exit is never taken.
fn exit_or_stop(pid: i32, info: &libc::siginfo_t) -> Result<ExitKind, i32> {
    if info.si_code != libc::CLD_STOPPED && info.si_code != libc::CLD_TRAPPED {
        return Ok(exit_kind(info));
    }
    // SAFETY: waitid filled `info` for a CLD_STOPPED event, for which
    // si_status (the stop signal) is the valid union member.
    let sig = unsafe { info.si_status() };
    let _ = waitid(libc::P_PID, pid as libc::id_t, libc::WSTOPPED | libc::WNOHANG);
    Err(sig)
}

/// Blocks until process `pid` (our child) has exited, *without reaping it*
/// (the zombie keeps its pid and process group reserved, so signalling the
/// group afterwards can never hit a recycled number; call `reap` after),
/// or is stopped by a signal: `Ok(Err(sig))`, and a second call waits for
/// the next event, not the same stop.
pub fn wait_exit_or_stop(pid: i32) -> io::Result<Result<ExitKind, i32>> {
    let info = waitid(
        libc::P_PID,
        pid as libc::id_t,
        libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT,
    )?;
    Ok(exit_or_stop(pid, &info))
}

fn exit_kind(info: &libc::siginfo_t) -> ExitKind {
    // SAFETY: waitid filled `info` for a CLD_* event, for which si_status is
    // the valid union member.
    let status = unsafe { info.si_status() };
    if info.si_code == libc::CLD_EXITED {
        ExitKind::Code(status)
    } else {
        ExitKind::Signal(status)
    }
}

/// As `wait_exit_or_stop`, for any child: its pid and how it ended or
/// stopped. `Ok(None)` when there is no child at all (ECHILD). Used in init
/// mode, where orphans re-parented to patience must be reaped too.
pub fn wait_any_exit_or_stop() -> io::Result<Option<(i32, Result<ExitKind, i32>)>> {
    match waitid(libc::P_ALL, 0, libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT) {
        Ok(info) => {
            // SAFETY: waitid filled `info` for a child event.
            let pid = unsafe { info.si_pid() };
            Ok(Some((pid, exit_or_stop(pid, &info))))
        }
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reaps child `pid`, which `wait_exit_or_stop` saw exit (or which was
/// killed: it blocks until the exit). After this the pid may be
/// reused, so nothing may signal it or its group any more.
pub fn reap(pid: i32) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only into `status`.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
}

/// Sends `sig` to process group `pgid`. ESRCH (nobody left) is not an error.
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill with a negative pid signals a group; no memory involved.
    match check(unsafe { libc::kill(-pgid, sig) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(drop),
    }
}

/// Sends `sig` to process `pid`. ESRCH is not an error.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill has no memory arguments.
    match check(unsafe { libc::kill(pid, sig) }) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r.map(drop),
    }
}

/// True when a process with this pid exists (kill(pid, 0)); EPERM counts as
/// alive, since the process exists but belongs to someone else.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Makes patience a child subreaper: orphans of its attempts re-parent to it
/// rather than to PID 1, so it can reap them and kill them with the attempt.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory arguments.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// This process's id.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The real user id.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// True when `fd` refers to a terminal.
pub fn isatty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

// ---- output ----

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pipe whose two ends are close-on-exec (the child gets its end through
/// dup2, which clears the flag on the copy): (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
    // nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes reads from `fd` return EAGAIN instead of blocking. Only for
/// descriptors patience alone uses (a pipe's read end it created).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid descriptor only change its flags.
    unsafe {
        let flags = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        check(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
    }
    Ok(())
}

/// Asks for a pipe buffer of `bytes` (F_SETPIPE_SZ). Best effort: the
/// kernel may refuse above /proc/sys/fs/pipe-max-size.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int and only resizes the pipe buffer.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
}

/// Blocks until `fd` has data or end of file, or `stop` becomes readable or
/// hung up. Returns (fd ready, stop ready).
pub fn wait_readable(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: poll reads and writes only the two pollfd structs given.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ret == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok((fds[0].revents != 0, fds[1].revents != 0));
    }
}

/// Writes all of `buf` to descriptor `fd` (patience's stdout or stderr),
/// unbuffered. EINTR is retried; EAGAIN (a descriptor someone else made
/// non-blocking) waits in poll rather than spinning. Other errors, EPIPE
/// first of all, are returned.
pub fn write_all(fd: i32, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: write reads at most buf.len() bytes from a valid slice.
        let ret = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if ret >= 0 {
            buf = &buf[ret as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll writes only the one pollfd given.
                unsafe { libc::poll(&mut p, 1, -1) };
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// The position of the first `needle` in `hay` (libc's vectorised memchr).
pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.is_empty() {
        return None;
    }
    // SAFETY: memchr reads at most hay.len() bytes of a valid slice and
    // returns null or a pointer into it.
    let p = unsafe { libc::memchr(hay.as_ptr().cast(), libc::c_int::from(needle), hay.len()) };
    if p.is_null() {
        None
    } else {
        Some(p as usize - hay.as_ptr() as usize)
    }
}

/// A new temporary file in `dir` with no name (O_TMPFILE, so nothing is left
/// behind even after SIGKILL), close-on-exec, mode 0600. Where the file
/// system lacks O_TMPFILE, a uniquely named file is created and unlinked
/// at once.
pub fn temp_file(dir: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // std adds O_CLOEXEC to every open.
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    if let Ok(f) = unnamed {
        return Ok(f);
    }
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".patience-{}-{n}-{nanos:08x}", getpid()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from(io::ErrorKind::AlreadyExists))
}

/// True when `needle` occurs in `hay` (libc's memmem).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.len() < needle.len() {
        return false;
    }
    // SAFETY: memmem reads at most hay.len() and needle.len() bytes of two
    // valid, non-empty slices and returns null or a pointer into `hay`.
    let p = unsafe {
        libc::memmem(
            hay.as_ptr().cast(),
            hay.len(),
            needle.as_ptr().cast(),
            needle.len(),
        )
    };
    !p.is_null()
}

// ---- state (cross-process resilience) ----

/// How `open_private` opens a file in the state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Read and write, creating the file (mode 0600) if missing: lock files.
    Lock,
    /// Write a new file (mode 0600) that must not exist yet: temp files.
    CreateNew,
}

/// Opens `path` for the state store: never through a symlink at its last
/// component (O_NOFOLLOW fails with ELOOP), never blocking on a FIFO planted
/// there (O_NONBLOCK; it changes nothing for regular files), and close-on-exec
/// like every descriptor std opens, so no command ever inherits it. The
/// caller still checks with `fstat` (`File::metadata`) what it opened.
pub fn open_private(path: &std::path::Path, mode: OpenMode) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    match mode {
        OpenMode::Read => o.read(true),
        OpenMode::Lock => o.read(true).write(true).create(true),
        OpenMode::CreateNew => o.write(true).create_new(true),
    };
    o.mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Tries once to take an exclusive `flock` on `file` without blocking:
/// `Ok(true)` when taken, `Ok(false)` when another open file holds it. Other
/// errors (ENOLCK on some NFS mounts, EIO) are returned for the caller to
/// fail open on.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock takes a descriptor the File keeps open for the
        // duration of the call, and no memory.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if ret == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Takes an exclusive `flock` on `file`, blocking until it is free. Only
/// called on a helper thread that the caller may abandon (see
/// `state::store`): patience's own threads never block on a lock.
pub fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: as in try_lock_exclusive.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if ret == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Releases a `flock` taken by `try_lock_exclusive` (closing the file would
/// too; the store keeps its lock file open for the whole run).
pub fn unlock(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: as in try_lock_exclusive; LOCK_UN on an unlocked file is a no-op.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// /proc/PID/stat), or `None` if that cannot be read. Stored next to a PID so
/// that a recycled PID is not mistaken for the process that held a slot.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    stat_fields(pid, |mut fields| fields.nth(19)?.parse().ok())
}

/// Calls `read` with the fields of /proc/PID/stat that follow the command
/// name (field 3, the state, first).
fn stat_fields<T>(pid: i32, read: impl FnOnce(std::str::SplitWhitespace<'_>) -> Option<T>) -> Option<T> {
    // One read into a buffer: /proc reports a size of 0, which would make
    // read_to_string probe with many small reads. The line is far shorter.
    let mut buf = [0u8; 1024];
    let n = std::io::Read::read(
        &mut std::fs::File::open(format!("/proc/{pid}/stat")).ok()?,
        &mut buf,
    )
    .ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or
    // ')' itself: the fields that follow start after the *last* ')'.
    read(stat[stat.rfind(')')? + 1..].split_whitespace())
}

// ---- metrics and daemon ----

/// The effective user id: who owns the files and sockets we create.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets the file mode creation mask and returns the previous one. patienced
/// calls it around `bind` so its socket never exists with a wider mode than
/// asked, even for an instant.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Raises the soft limit on open files to the hard limit, so that many idle
/// HTTP clients make accept(2) fail later rather than sooner.
pub fn raise_open_files_limit() {
    // SAFETY: a zeroed rlimit is a valid out-parameter; setrlimit reads the
    // struct we pass and nothing else.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Waits up to `timeout` for `fd` to become readable (a listening socket:
/// a connection to accept); false when the time ran out. EINTR counts as
/// time run out, so the caller looks at its stop flag sooner, not later.
pub fn readable_within(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll reads and writes only the one pollfd given.
    let ret = unsafe { libc::poll(&mut p, 1, ms) };
    if ret == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(ret > 0)
}

/// Makes glibc's malloc give large freed blocks back to the system: the
/// exposition of 10,000 series is a few megabytes built for each scrape, and
/// by default glibc would keep such blocks (and one arena per HTTP thread)
/// for good. A no-op on other C libraries.
pub fn return_large_frees_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tunables; it is called at start,
    // before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Lowers the calling thread's scheduling priority by `by` nice steps:
/// patienced's HTTP threads give way to datagram intake, whose kernel queue
/// holds only `net.unix.max_dgram_qlen` datagrams (often 10), so that a busy
/// CPU is taken from rendering, not from receiving. Errors are ignored.
pub fn lower_thread_priority(by: i32) {
    // SAFETY: gettid has no arguments; get/setpriority on our own thread id
    // read and change only its nice value. getpriority's -1 can be a value
    // or an error; either way the result is a nice value in range.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).clamp(-20, 19));
    }
}

// ---- supervise ----

/// Reaps child `pid` if it has exited, without blocking; true when it was
/// reaped. For orphans, which the init-mode reaper saw exit with
/// `wait_any_exit`: if the number is no longer a zombie child of ours (std
/// reaped a child whose exec failed), nothing happens.
pub fn reap_if_exited(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only into `status`.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if ret == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return ret == pid;
    }
}

/// Sends `sig` to every process this one may signal except itself
/// (`kill(-1, sig)`); true when at least one process got it. Only for
/// PID 1, where "every process" means the rest of its PID namespace: the
/// caller checks `getpid() == 1`. Signal 0 only asks whether anyone is left.
pub fn kill_everyone_else(sig: i32) -> bool {
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(-1, sig) == 0 }
}

// ---- signals and the terminal ----

/// The descriptor among stdin, stdout and stderr that is a terminal whose
/// foreground process group is patience's own, if any: then patience is a
/// foreground job (`docker run -it`, an interactive shell) and may hand the
/// terminal to an attempt. `None` in the background, or with no terminal.
pub fn foreground_terminal() -> Option<i32> {
    // SAFETY: getpgrp cannot fail.
    let ours = unsafe { libc::getpgrp() };
    (0..=2).find(|&fd| {
        // SAFETY: isatty and tcgetpgrp only inspect the descriptor.
        unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == ours }
    })
}

/// Makes `pgid` the foreground process group of the terminal on `fd`.
/// patience ignores SIGTTOU, so this works from the background too (it
/// takes the terminal back after an attempt). Errors are ignored: a
/// terminal that went away has no foreground to give.
pub fn give_terminal(fd: i32, pgid: i32) {
    // SAFETY: tcsetpgrp has no memory arguments.
    unsafe { libc::tcsetpgrp(fd, pgid) };
}

/// The process group of process `pid`, if it exists.
pub fn getpgid(pid: i32) -> Option<i32> {
    // SAFETY: getpgid has no memory arguments.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// patience's own process group.
pub fn getpgrp() -> i32 {
    // SAFETY: getpgrp cannot fail.
    unsafe { libc::getpgrp() }
}

/// Stops patience itself (SIGSTOP, which cannot be caught), as a job
/// control shell's job stops on Ctrl-Z; returns when it is continued.
pub fn stop_self() {
    // SAFETY: raise has no memory arguments.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// Whether process group `pgid` has a live member other than its leader
/// (which the caller keeps as an unreaped zombie, so the number cannot be
/// reused): `Some(true)` or `Some(false)` from /proc, `None` when /proc is
/// missing or belongs to another PID namespace (an empty chroot,
/// `unshare --pid` without `--mount-proc`). Zombies do not count: they are
/// gone already, only not yet reaped by their parent.
pub fn group_has_others(pgid: i32) -> Option<bool> {
    let ours = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
    if ours != Some(getpid()) {
        return None;
    }
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid != pgid && matches!(state_and_group(pid), Some((state, pgrp)) if pgrp == pgid && !gone(state))
        {
            return Some(true);
        }
    }
    Some(false)
}

/// True when process `pid` is alive and not a zombie. Where /proc cannot be
/// read, a process that exists counts as alive.
pub fn alive_not_zombie(pid: i32) -> bool {
    match state_and_group(pid) {
        Some((state, _)) => !gone(state),
        None => process_alive(pid),
    }
}

/// Zombie or dead: exited, only not reaped yet.
fn gone(state: u8) -> bool {
    state == b'Z' || state == b'X'
}

/// The state letter and process group of `pid`, from /proc/PID/stat.
fn state_and_group(pid: i32) -> Option<(u8, i32)> {
    // State, ppid, pgrp.
    stat_fields(pid, |mut fields| {
        let state = *fields.next()?.as_bytes().first()?;
        let pgrp = fields.nth(1)?.parse().ok()?;
        Some((state, pgrp))
    })
}

// ---- signal names ----

/// The real-time signals as this C library numbers them: (SIGRTMIN,
/// SIGRTMAX). They are functions, not constants, because glibc keeps the
/// first few for its threads (34 under glibc, 35 under musl).
pub fn realtime_signals() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// Takes descriptor `fd`, inherited from the parent that named it (the
/// supervisor's socket of a `--services` shim), and marks it close-on-exec
/// so the attempts never inherit it. None when `fd` is not open.
pub fn take_fd(fd: i32) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    // SAFETY: fcntl on any integer is harmless; F_GETFD fails with EBADF
    // for a descriptor that is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above; setting FD_CLOEXEC touches nothing else.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open, and the parent handed it to this
    // process alone through its environment; it is taken once, at start-up.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Up to this many descriptors go to a child through [`pass_fds`].
pub const MAX_PASSED: usize = 4;

/// Makes each descriptor `fd` of the parent descriptor `target` of the
/// child, open across exec, for several at once: each source is first
/// copied above every target, so that putting one in place never closes
/// another still to be moved (the supervisor's socket to a shim and a
/// service's `ready-fd` pipe). At most [`MAX_PASSED`] pairs; more are an
/// error of the caller, refused before the spawn.
pub fn pass_fds(cmd: &mut Command, pairs: &[(i32, i32)]) -> io::Result<()> {
    if pairs.len() > MAX_PASSED {
        return Err(io::Error::other("too many descriptors to pass"));
    }
    let mut fixed = [(-1, -1); MAX_PASSED];
    fixed[..pairs.len()].copy_from_slice(pairs);
    let count = pairs.len();
    let floor = pairs.iter().map(|&(_, t)| t).max().unwrap_or(0) + 1;
    let hook = move || {
        let mut copies = [-1; MAX_PASSED];
        for (n, &(fd, _)) in fixed[..count].iter().enumerate() {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor at or above
            // `floor`; fcntl is async-signal-safe.
            copies[n] = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) })?;
        }
        for (n, &(_, target)) in fixed[..count].iter().enumerate() {
            // SAFETY: dup2 is async-signal-safe; the copy is open and above
            // every target, and the new descriptor is never close-on-exec.
            check(unsafe { libc::dup2(copies[n], target) })?;
            // SAFETY: closing the copy this hook made; it is close-on-exec
            // anyway, and nothing else refers to it.
            unsafe { libc::close(copies[n]) };
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls and allocates
    // nothing: the pairs are copied into a fixed array before the fork.
    unsafe { cmd.pre_exec(hook) };
    Ok(())
}

/// The uid of the process at the other end of a Unix stream socket
/// (SO_PEERCRED: the credentials it had when it connected).
pub fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: zeroed ucred is a valid value of this plain C struct.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `cred`, which lives through the
    // call; the kernel writes at most `len` bytes into it.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// Makes the child of `cmd` the leader of a new session, with no
/// controlling terminal (`patiencectl up -d`).
pub fn detach(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and allocates nothing; it cannot
    // fail in a child that is not a group leader, which a fresh fork is not.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
}
