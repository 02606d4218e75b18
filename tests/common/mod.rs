//! Shared support for the integration tests: the real binaries, temp dirs
//! removed on drop, and spawned processes killed and reaped on drop, so a
//! failing assertion leaves nothing behind.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Path of the `patience` binary under test.
pub fn patience_bin() -> &'static str {
    env!("CARGO_BIN_EXE_patience")
}

/// Path of the `patienced` binary under test.
pub fn patienced_bin() -> &'static str {
    env!("CARGO_BIN_EXE_patienced")
}

/// A `patience` command with a clean environment: no config files (the
/// system file is moved into `dir` through the test-only
/// PATIENCE_SYSTEM_CONFIG, so the machine's /etc is never read), no metrics
/// socket, no colour, a private state dir.
pub fn patience(dir: &TempDir) -> Command {
    default_stop_signals();
    // The runtime directory a login would have (the stack's control
    // socket goes under it), private as systemd makes it.
    let run = dir.path().join("run");
    if !run.exists() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&run);
    }
    let mut c = Command::new(patience_bin());
    c.env_remove("PATIENCE_CONFIG")
        .env_remove("PATIENCE_PROFILE")
        .env(
            "PATIENCE_SYSTEM_CONFIG",
            dir.path().join("etc/patience/config.toml"),
        )
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .env("PATIENCE_SOCKET", dir.path().join("no-daemon.sock"))
        .env("PATIENCE_STATE_DIR", dir.path().join("state-dir"))
        .env("HOME", dir.path());
    c
}

/// A test run started as a background job of a non-interactive shell
/// (`cargo test &`) has SIGINT and SIGQUIT ignored, under nohup SIGHUP too,
/// and patience rightly keeps an ignored signal ignored, for itself and its
/// child (RELIABILITY C.19). The tests that send those signals need them at
/// their defaults, so the test process gives them back once; tests of the
/// ignored case ignore them explicitly (`trap '' INT`).
fn default_stop_signals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            if patience::sys::is_ignored(sig) {
                patience::sys::set_default(sig);
            }
        }
    });
}

/// True once process `pid` has a handler for signal `sig` (its SigCgt mask
/// in /proc), so a test can signal it knowing the signal will be handled
/// rather than kill it with the default action.
pub fn catches(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// A command for `program` (sh, strace, script) that runs patience
/// somewhere below it, with the environment `patience(dir)` would have.
pub fn around_patience(program: &str, dir: &TempDir) -> Command {
    let mut c = Command::new(program);
    for (k, v) in patience(dir).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Runs `patience ARGS` to completion with stdin closed.
pub fn run(dir: &TempDir, args: &[&str]) -> Output {
    let mut c = patience(dir);
    c.args(args);
    output(c)
}

/// Runs a prepared command to completion (stdin closed, output captured,
/// killed if it runs over a minute).
pub fn output(mut c: Command) -> Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    Guard::new(child).wait_output(Duration::from_secs(60))
}

/// Starts `patience ARGS` in the background, stdin closed, output captured.
pub fn spawn(dir: &TempDir, args: &[&str]) -> Guard {
    let mut c = patience(dir);
    c.args(args);
    spawn_command(c)
}

/// Starts a prepared command in the background, stdin closed, output
/// captured, killed and reaped on drop.
pub fn spawn_command(mut c: Command) -> Guard {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    Guard::new(child)
}

/// Exit code of an output, panicking with stderr if it was a signal.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}\nstderr: {}", out.status, stderr(out)))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory removed (recursively) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        let p = base.join(format!(
            "patience-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spawned process that is killed (SIGKILL) and reaped on drop.
pub struct Guard(Option<Child>);

impl Guard {
    pub fn new(child: Child) -> Guard {
        Guard(Some(child))
    }

    pub fn id(&self) -> i32 {
        self.0.as_ref().expect("child").id() as i32
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child")
    }

    /// Waits for the exit with a bound; kills the process if it is exceeded.
    pub fn wait_output(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("child");
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let read = |s: Option<std::process::ChildStdout>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut s) = s {
                    let _ = std::io::Read::read_to_end(&mut s, &mut v);
                }
                v
            })
        };
        let out_t = read(stdout);
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut s) = stderr {
                let _ = std::io::Read::read_to_end(&mut s, &mut v);
            }
            v
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let st = child.wait().expect("wait");
                let err = err_t.join().unwrap_or_default();
                panic!(
                    "process ran over {limit:?} ({st:?}); stderr: {}",
                    String::from_utf8_lossy(&err)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        }
    }

    /// Waits for the exit with a bound (no output capture).
    pub fn wait_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let st = child.wait();
                panic!("process ran over {limit:?}: {st:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `sig` to `pid` (via kill(1), to keep tests free of unsafe).
pub fn send_signal(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1)");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Pids of live (non-zombie) processes whose command line starts with `needle`.
pub fn processes_matching(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with(needle) {
            found.push(pid);
        }
    }
    found
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A unique marker for process-tree tests: `sleep` with an odd duration that
/// no other process on the machine uses, found later in /proc.
pub fn unique_sleep_secs() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}.{:03}{:04}",
        300 + std::process::id() % 500,
        N.fetch_add(1, Ordering::Relaxed),
        std::process::id() % 9973
    )
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The options a `--help` text lists, short (`-a`) and long (`--attempts`),
/// in order: the words of its option lines that start with a dash.
pub fn help_options(help: &str) -> Vec<String> {
    let mut opts = Vec::new();
    for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
        for word in line.split_whitespace() {
            let word = word.trim_end_matches(',');
            let name = word.trim_start_matches('-');
            if !word.starts_with('-') || name.is_empty() {
                break;
            }
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                opts.push(word.to_string());
            }
        }
    }
    opts
}

/// True when strace is installed; otherwise the test is skipped.
pub fn have_strace() -> bool {
    have_tool("strace", "-V", "strace (Debian package strace)")
}

/// Whether `program ARG` can be run here (its exit status aside); if not,
/// the calling test is skipped with "needs WHAT".
pub fn have_tool(program: &str, arg: &str, what: &str) -> bool {
    let found = Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        skip(&format!("needs {what}"));
    }
    found
}

/// Says that the calling test cannot run here and why; the caller then
/// returns. Under `CI=true`, where .ci/run provides every tool, it fails.
pub fn skip(why: &str) {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    skip_test(thread.name().unwrap_or("a test"), why);
}

/// `skip` for a test named explicitly.
pub fn skip_test(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run under CI=true: {why}");
    }
    let line = format!("skipped: {test}: {why}\n");
    // eprintln! is captured by libtest and shown only for a failing test;
    // a write to the stderr handle itself is not, so the line always shows.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    // One line per skip (a single O_APPEND write, so test binaries running
    // side by side do not interleave); `make test` empties it first and
    // prints the count at the end.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips_file())
    {
        let _ = std::io::Write::write_all(&mut f, line.as_bytes());
    }
}

/// Where skips are counted: `test-skips` in the target directory
/// (CARGO_TARGET_DIR or target/), the parent of the binaries' profile dir.
pub fn skips_file() -> PathBuf {
    let bin = Path::new(patience_bin());
    bin.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("test-skips")
}

/// Whether the tests run as root (namespaces, chroot, other uids).
pub fn is_root() -> bool {
    patience::sys::getuid() == 0
}

/// Whether `unshare --fork --pid --mount-proc` works here; the reason if not.
pub fn namespaces(test: &str) -> bool {
    if !is_root() {
        skip_test(test, "needs root for unshare --pid --mount-proc");
        return false;
    }
    match Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            skip_test(
                test,
                &format!("unshare --pid fails here: {}", stderr(&out).trim()),
            );
            false
        }
        Err(e) => {
            skip_test(test, &format!("no unshare(1): {e}"));
            false
        }
    }
}

/// The `make static` binary, if it was built and is newer than the sources.
pub fn static_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The target directory (CARGO_TARGET_DIR or target/) holds the binary
    // under test in debug/; `make static` writes to TRIPLE/release/ there.
    let target = Path::new(patience_bin()).parent().and_then(Path::parent).unwrap();
    let bin = target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release/patience");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).map_err(|e| {
        format!(
            "no static build at {} ({e}); run `make static` first",
            bin.display()
        )
    })?;
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut stack = vec![root.join("src"), root.join("Cargo.toml"), root.join("Cargo.lock")];
    while let Some(p) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&p) {
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    if built < newest {
        return Err(format!(
            "{} is older than the sources; run `make static` again",
            bin.display()
        ));
    }
    Ok(bin)
}

/// The verbs `patiencectl --help` lists, a line each: the verb and its
/// aliases (`status, ps`).
pub fn ctl_verbs(dir: &TempDir) -> Vec<Vec<String>> {
    let mut c = patience(dir);
    c.args(["--ctl", "--help"]);
    let help = stdout(&output(c));
    help.split("Verbs:")
        .nth(1)
        .and_then(|t| t.split("Options:").next())
        .expect("a Verbs: section before Options:")
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| {
            l.split_whitespace()
                .take_while(|w| w.ends_with(',') || !w.starts_with(['[', '-']))
                .take(2)
                .map(|w| w.trim_end_matches(',').to_string())
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .collect()
        })
        .collect()
}
