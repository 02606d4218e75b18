//! The child's output through patience: inherited without patterns, through
//! the capture path with them, byte for byte and live; a closed stdout; a
//! grandchild holding the pipes; held output (`--output final|failure`);
//! `--stdin replay|null`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// `n` pseudo-random bytes (xorshift), the same every time.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Writes `data` to a file in `dir` and returns its path as a string.
fn data_file(dir: &TempDir, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path.to_string_lossy().into_owned()
}

/// `sh -c SCRIPT` with `$0` set to the patience binary and the same clean
/// environment as `patience(dir)`, for shell pipelines around patience.
fn shell(dir: &TempDir, script: &str) -> std::process::Command {
    let mut sh = around_patience("sh", dir);
    sh.args(["-c", script, patience_bin()]);
    sh
}

#[test]
fn binary_output_passes_byte_identical_through_the_capture_path() {
    let dir = TempDir::new("out-binary");
    // 5 MiB of random bytes, not ending in a newline.
    let mut data = random_bytes(5 << 20, 0x9e37_79b9_7f4a_7c15);
    *data.last_mut().unwrap() = b'x';
    let file = data_file(&dir, "data", &data);
    for mode in ["live", "final"] {
        let out = run(
            &dir,
            &[
                "--output",
                mode,
                "--failure-pattern",
                "never-in-random-data-QQQ",
                "--",
                "sh",
                "-c",
                r#"cat "$1"; cat "$1" >&2"#,
                "sh",
                &file,
            ],
        );
        assert_eq!(code(&out), 0, "{mode}: {}", stderr(&out).len());
        assert!(
            out.stdout == data,
            "{mode}: stdout differs ({} bytes)",
            out.stdout.len()
        );
        assert!(
            out.stderr == data,
            "{mode}: stderr differs ({} bytes)",
            out.stderr.len()
        );
    }
}

#[test]
fn without_patterns_the_child_inherits_the_descriptors() {
    let dir = TempDir::new("out-inherit");
    let target = dir.join("out.txt");
    let fd1 = |args: &[&str]| {
        let f = std::fs::File::create(&target).unwrap();
        let child = patience(&dir)
            .args(args)
            .args(["--", "readlink", "/proc/self/fd/1"])
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Guard::new(child).wait_output(Duration::from_secs(30));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        std::fs::read_to_string(&target).unwrap()
    };
    // Zero copy: the child writes straight into patience's stdout.
    assert_eq!(fd1(&[]).trim(), target.to_string_lossy());
    // Through a pipe when a pattern must read it...
    assert!(fd1(&["--failure-pattern", "x"]).starts_with("pipe:"));
    // ...but only the stream the patterns read.
    assert_eq!(
        fd1(&["--failure-pattern", "x", "--match-stream", "stderr"]).trim(),
        target.to_string_lossy()
    );
}

#[test]
fn the_child_gets_no_other_end_of_its_pipes() {
    let dir = TempDir::new("out-fds");
    let out = run(
        &dir,
        &[
            "--failure-pattern",
            "never-QQQ",
            "--",
            "sh",
            "-c",
            "ls -l /proc/$$/fd",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let links: Vec<(String, String)> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(left, target)| (left.rsplit(' ').next().unwrap().to_string(), target.to_string()))
        .collect();
    let target_of = |fd: &str| {
        links
            .iter()
            .find(|(f, _)| f == fd)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    for fd in ["1", "2"] {
        let t = target_of(fd);
        assert!(t.starts_with("pipe:"), "fd {fd}: {t}");
        // The read end shares the pipe's inode: it must not be here.
        let holders: Vec<_> = links.iter().filter(|(_, x)| *x == t).collect();
        assert_eq!(
            holders.len(),
            1,
            "fd {fd}'s pipe is open more than once in the child: {links:?}"
        );
    }
}

#[test]
fn output_is_forwarded_live() {
    let dir = TempDir::new("out-live");
    let child = patience(&dir)
        .args([
            "--failure-pattern",
            "x",
            "--",
            "sh",
            "-c",
            "echo early; sleep 2; echo late",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    let start = Instant::now();
    let mut reader = BufReader::new(guard.child().stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let arrived = start.elapsed();
    assert_eq!(line, "early\n");
    assert!(
        guard.child().try_wait().unwrap().is_none(),
        "the line only came at the end"
    );
    assert!(arrived < Duration::from_millis(1500), "the line took {arrived:?}");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "late\n");
    assert!(guard.wait_status(Duration::from_secs(30)).success());
}

#[test]
fn a_closed_stdout_gives_the_child_sigpipe_and_patience_ends() {
    let dir = TempDir::new("out-epipe");
    // The shell form: `patience --failure-pattern x -- yes | head -1`.
    let start = Instant::now();
    let child = shell(&dir, r#""$0" --failure-pattern x -- yes | head -1"#)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Guard::new(child).wait_output(Duration::from_secs(30));
    assert_eq!(stdout(&out), "y\n");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );

    // The exit status, seen directly: yes died of SIGPIPE, a final failure.
    let child = patience(&dir)
        .args(["--failure-pattern", "x", "-a", "5", "--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    let mut first = String::new();
    BufReader::new(guard.child().stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "y\n");
    // The read end is dropped here.
    let status = guard.wait_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + 13), "{status:?}");
    let mut err = String::new();
    guard
        .child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("failed after 1 attempt"), "{err}");
}

#[test]
fn a_closed_stdout_is_final_even_when_the_child_ignores_sigpipe() {
    let dir = TempDir::new("out-epipe-ign");
    // With SIGPIPE ignored (kept so for the child), `yes` fails on EPIPE
    // with exit code 1: patience saw the EPIPE and does not retry into the
    // same closed pipe.
    let start = Instant::now();
    let child = shell(
        &dir,
        r#"trap '' PIPE; "$0" -a 5 --failure-pattern x -- yes | head -1; exit 0"#,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = Guard::new(child).wait_output(Duration::from_secs(30));
    assert_eq!(stdout(&out), "y\n");
    let err = stderr(&out);
    assert!(err.contains("failed after 1 attempt"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_grandchild_holding_the_pipes_does_not_make_patience_wait() {
    let dir = TempDir::new("out-grandchild");
    for (how, script) in [
        // In the attempt's process group: cleaned up with it.
        ("background", "sleep {S} & echo done"),
        // In a session of its own: out of reach, so patience stops waiting.
        // (The shell waits until setsid has happened, or the group cleanup
        // could catch the grandchild first.)
        (
            "setsid",
            "setsid sh -c 'echo $$ > \"$0\"; exec sleep {S}' {F} & \
             while [ ! -s {F} ]; do sleep 0.01; done; echo done",
        ),
    ] {
        let secs = unique_sleep_secs();
        let flag = dir.join(format!("{how}.pid"));
        let script = script
            .replace("{S}", &secs)
            .replace("{F}", &flag.to_string_lossy());
        let start = Instant::now();
        let out = run(&dir, &["--failure-pattern", "x", "--", "sh", "-c", &script]);
        let took = start.elapsed();
        for pid in processes_matching(&format!("sleep {secs}")) {
            send_signal(pid, "KILL");
        }
        assert_eq!(code(&out), 0, "{how}: {}", stderr(&out));
        assert_eq!(stdout(&out), "done\n", "{how}");
        assert!(took < Duration::from_secs(5), "{how}: took {took:?}");
    }
}

#[test]
fn hold_output_is_silent_on_success() {
    let dir = TempDir::new("out-hold-ok");
    let data = random_bytes(3 << 20, 7);
    let file = data_file(&dir, "data", &data);
    let out = run(
        &dir,
        &[
            "--hold-output",
            "--",
            "sh",
            "-c",
            r#"cat "$1"; cat "$1" >&2"#,
            "sh",
            &file,
        ],
    );
    assert_eq!(code(&out), 0);
    assert!(out.stdout.is_empty(), "{} bytes on stdout", out.stdout.len());
    assert!(out.stderr.is_empty(), "{} bytes on stderr", out.stderr.len());

    // A success after failures is just as silent (cron mails any output).
    let out = run(
        &dir,
        &[
            "--hold-output",
            "-a",
            "3",
            "-d",
            "0",
            "--",
            "sh",
            "-c",
            "echo noise; [ $PATIENCE_ATTEMPT = 2 ]",
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
}

#[test]
fn hold_output_shows_the_last_attempt_complete_on_failure() {
    let dir = TempDir::new("out-hold-fail");
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let data = random_bytes(3 << 20, 11);
    let file = data_file(&dir, "data", &data);
    let child = patience(&dir)
        .env("TMPDIR", &tmp)
        .args([
            "--hold-output",
            "-a",
            "2",
            "-d",
            "0",
            "--",
            "sh",
            "-c",
            r#"echo "attempt $PATIENCE_ATTEMPT" >&2; cat "$1"; cat "$1" >&2; sleep 1; exit 3"#,
            "sh",
            &file,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Guard::new(child);
    // Beyond 1 MiB, held output is in an unlinked file under $TMPDIR.
    let fd_dir = format!("/proc/{}/fd", guard.id());
    let tmp_text = tmp.to_string_lossy().into_owned();
    let spilled = eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&fd_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let t = std::fs::read_link(e.path()).unwrap_or_default();
                let t = t.to_string_lossy();
                t.starts_with(&tmp_text) && t.ends_with("(deleted)")
            })
    });
    let out = guard.wait_output(Duration::from_secs(60));
    assert!(spilled, "no unlinked spool file seen under {tmp_text}");
    assert_eq!(code(&out), 3, "{}", stderr(&out).len());
    assert!(out.stdout == data, "stdout: {} bytes", out.stdout.len());
    let mut expect_err = b"attempt 2\n".to_vec();
    expect_err.extend_from_slice(&data);
    assert!(
        out.stderr.starts_with(&expect_err),
        "stderr: {} bytes",
        out.stderr.len()
    );
    let tail = String::from_utf8_lossy(&out.stderr[expect_err.len()..]).into_owned();
    assert!(tail.starts_with("[patience] failed after 2 attempts"), "{tail}");
    assert!(!tail.contains("attempt 1/2 failed"), "{tail}");
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn output_final_holds_stdout_only_and_every_stderr_stays_live() {
    let dir = TempDir::new("out-final");
    let out = run(
        &dir,
        &[
            "--output",
            "final",
            "-a",
            "5",
            "-d",
            "0",
            "--",
            "sh",
            "-c",
            r#"echo "out $PATIENCE_ATTEMPT"; echo "err $PATIENCE_ATTEMPT" >&2; [ $PATIENCE_ATTEMPT -ge 3 ]"#,
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "out 3\n");
    // Every attempt's stderr, once each, as it came: attempt 1's error
    // before patience's line about attempt 1, not replayed at the end.
    let err = stderr(&out);
    for n in 1..=3 {
        assert_eq!(err.matches(&format!("err {n}\n")).count(), 1, "{err}");
    }
    let first_error = err.find("err 1").unwrap();
    let first_verdict = err.find("attempt 1/5 failed").expect("a retry line");
    assert!(first_error < first_verdict, "{err}");

    // Whatever its result.
    let out = run(
        &dir,
        &[
            "--output",
            "final",
            "-a",
            "2",
            "-d",
            "0",
            "--",
            "sh",
            "-c",
            "echo $PATIENCE_ATTEMPT; exit 4",
        ],
    );
    assert_eq!(code(&out), 4);
    assert_eq!(stdout(&out), "2\n");

    // --output failure (chronic) still holds both streams.
    let script = r#"echo "out $PATIENCE_ATTEMPT"; echo "err $PATIENCE_ATTEMPT" >&2; exit 4"#;
    let out = run(
        &dir,
        &[
            "--output", "failure", "-a", "2", "-d", "0", "--", "sh", "-c", script,
        ],
    );
    assert_eq!(code(&out), 4);
    assert_eq!(stdout(&out), "out 2\n");
    let err = stderr(&out);
    assert!(err.contains("err 2\n") && !err.contains("err 1"), "{err}");
}

fn with_stdin(dir: &TempDir, args: &[&str], input: &[u8]) -> std::process::Output {
    let child = patience(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard::new(child);
    let mut stdin = guard.child().stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    guard.wait_output(Duration::from_secs(30))
}

#[test]
fn stdin_replay_gives_every_attempt_the_same_bytes() {
    let dir = TempDir::new("out-stdin");
    let script = r#"printf '[%s]' "$(cat)"; exit 1"#;
    let args = |mode: &'static str| vec!["--stdin", mode, "-a", "3", "-d", "0", "--", "sh", "-c", script];
    let out = with_stdin(&dir, &args("replay"), b"abc");
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "[abc][abc][abc]");
    // By default the first attempt consumes it.
    let out = with_stdin(&dir, &args("inherit"), b"abc");
    assert_eq!(stdout(&out), "[abc][][]");
    let out = with_stdin(&dir, &args("null"), b"abc");
    assert_eq!(stdout(&out), "[][][]");
    // An attempt that reads only part of it does not shift the next one.
    let out = with_stdin(
        &dir,
        &[
            "--stdin",
            "replay",
            "-a",
            "2",
            "-d",
            "0",
            "--",
            "sh",
            "-c",
            "head -c 2; exit 1",
        ],
        b"xyz",
    );
    assert_eq!(stdout(&out), "xyxy");
}

#[test]
fn memory_stays_flat_on_one_huge_line() {
    let dir = TempDir::new("out-rss");
    let child = patience(&dir)
        .args([
            "--failure-pattern",
            "zzz",
            "--",
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tr '\\0' a; echo; echo zzz; sleep 1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = Guard::new(child);
    let status_file = format!("/proc/{}/status", guard.id());
    let mut peak_kb = 0u64;
    let mut seen = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let Ok(status) = std::fs::read_to_string(&status_file) else {
            break;
        };
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            peak_kb = kb;
            seen = true;
        }
        if status.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = guard.wait_output(Duration::from_secs(60));
    assert!(seen, "could not read {status_file}");
    // 200 MB went through; patience's peak stays at its own few MB.
    assert!(peak_kb < 24_000, "peak RSS {peak_kb} kB");
    // The pattern on the line after the huge one was still seen.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

#[test]
fn a_closed_stderr_changes_nothing_but_the_messages() {
    let dir = TempDir::new("out-closed-stderr");
    // `2>&-`: patience reopens fd 2 on /dev/null, so the captured stderr and
    // its own messages go nowhere, and the run goes on as usual.
    let script =
        r#"exec 2>&-; "$0" -a 2 -d 0 --failure-pattern never-QQQ -- sh -c 'echo out; echo err >&2; exit 3'"#;
    let child = shell(&dir, script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Guard::new(child).wait_output(Duration::from_secs(30));
    assert_eq!(code(&out), 3);
    assert_eq!(stdout(&out), "out\nout\n");
    assert_eq!(stderr(&out), "");
}
