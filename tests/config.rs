//! Config files, profiles and the environment, through the real binary: each
//! test gets a temporary config home (XDG_CONFIG_HOME and HOME inside its
//! TempDir) and a temporary system file (PATIENCE_SYSTEM_CONFIG, set by
//! `common::patience`), so nothing on the machine is read or written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{code, output, stderr, stdout, TempDir};

fn user_file(dir: &TempDir) -> PathBuf {
    dir.join("config/patience/config.toml")
}

fn system_file(dir: &TempDir) -> PathBuf {
    dir.join("etc/patience/config.toml")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write config");
}

/// `patience --dry-run ARGS true`, with extra environment.
fn dry(dir: &TempDir, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = common::patience(dir);
    c.envs(env.iter().copied())
        .arg("--dry-run")
        .args(args)
        .arg("true");
    output(c)
}

/// The value and source of one setting in `--dry-run` output.
fn row(out: &Output, key: &str) -> (String, String) {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row '{key}' in:\n{text}\nstderr: {}", stderr(out)));
    let rest = line[key.len()..].trim();
    let open = rest.rfind(" (").expect("source in parentheses");
    (
        rest[..open].trim().to_string(),
        rest[open + 2..].trim_end_matches(')').to_string(),
    )
}

fn ok(out: &Output) {
    assert_eq!(code(out), 0, "stderr: {}", stderr(out));
}

/// Asserts a 125 whose single message names the file, the line and the key.
fn fails_at(out: &Output, file: &Path, line: usize, key: &str) -> String {
    let err = stderr(out);
    assert_eq!(code(out), 125, "stderr: {err}");
    let at = format!("patience: {}:{line}:", file.display());
    assert!(err.starts_with(&at), "expected '{at}' in: {err}");
    assert!(
        err.contains(&format!("'{key}'")),
        "expected key '{key}' in: {err}"
    );
    assert!(stdout(out).is_empty(), "nothing on stdout: {}", stdout(out));
    err
}

#[test]
fn defaults_from_the_user_file() {
    let dir = TempDir::new("cfg-user");
    write(
        &user_file(&dir),
        "[defaults]\nattempts = 2\ndelay = \"10ms\"\ntimeout = \"30s\"\n",
    );
    let out = dry(&dir, &[], &[]);
    ok(&out);
    let file = user_file(&dir).display().to_string();
    assert_eq!(row(&out, "attempts"), ("2".into(), file.clone()));
    assert_eq!(row(&out, "timeout"), ("30s".into(), file));
    assert_eq!(row(&out, "kill-after"), ("5s".into(), "default".into()));
    // And the run really uses them: two attempts, not the built-in three.
    let log = dir.join("log");
    let script = format!("echo x >> '{}'; exit 3", log.display());
    let out = common::run(&dir, &["sh", "-c", &script]);
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}

#[test]
fn a_profile_over_defaults() {
    let dir = TempDir::new("cfg-profile");
    write(
        &user_file(&dir),
        "[defaults]\nattempts = 5\ndelay = \"2s\"\n\n[profile.quick]\nattempts = 2\n",
    );
    let file = user_file(&dir).display().to_string();
    let profile = format!("profile quick in {file}");
    for (env, args) in [
        (&[][..], &["-p", "quick"][..]),
        (&[][..], &["--profile=quick"][..]),
        (&[("PATIENCE_PROFILE", "quick")][..], &[][..]),
    ] {
        let out = dry(&dir, env, args);
        ok(&out);
        assert_eq!(row(&out, "attempts"), ("2".into(), profile.clone()), "{args:?}");
        assert_eq!(row(&out, "delay"), ("2s".into(), file.clone()));
    }
    // Without it, [defaults] alone.
    assert_eq!(row(&dry(&dir, &[], &[]), "attempts"), ("5".into(), file));
    // The command line's profile beats the environment's.
    write(
        &user_file(&dir),
        "[defaults]\nattempts = 5\n[profile.quick]\nattempts = 2\n[profile.slow]\nattempts = 9\n",
    );
    let out = dry(&dir, &[("PATIENCE_PROFILE", "slow")], &["-p", "quick"]);
    assert_eq!(row(&out, "attempts").0, "2");
    assert!(
        stdout(&out).contains("profile: quick (command line)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_command_line_over_file_and_profile() {
    let dir = TempDir::new("cfg-cli");
    write(
        &user_file(&dir),
        "[defaults]\nattempts = 5\ntimeout = \"9s\"\n[profile.q]\nattempts = 2\n",
    );
    let out = dry(&dir, &[], &["-p", "q", "-a", "7", "--timeout", "1s"]);
    ok(&out);
    assert_eq!(row(&out, "attempts"), ("7".into(), "command line".into()));
    assert_eq!(row(&out, "timeout"), ("1s".into(), "command line".into()));
}

#[test]
fn the_environment_over_the_file() {
    let dir = TempDir::new("cfg-env");
    write(
        &user_file(&dir),
        "[defaults]\ncolor = \"always\"\nsocket = \"/file/p.sock\"\nstate-dir = \"/file/state\"\n",
    );
    let file = user_file(&dir).display().to_string();
    // common::patience sets NO_COLOR=1, PATIENCE_SOCKET and PATIENCE_STATE_DIR.
    let out = dry(&dir, &[], &[]);
    ok(&out);
    assert_eq!(row(&out, "color"), ("never".into(), "env NO_COLOR".into()));
    let sock = dir.join("no-daemon.sock").display().to_string();
    assert_eq!(row(&out, "socket"), (sock, "env PATIENCE_SOCKET".into()));
    let state = dir.join("state-dir").display().to_string();
    assert_eq!(row(&out, "state-dir"), (state, "env PATIENCE_STATE_DIR".into()));
    // Without them the file's values show; an empty NO_COLOR counts as unset.
    let mut c = common::patience(&dir);
    c.env_remove("PATIENCE_SOCKET")
        .env_remove("PATIENCE_STATE_DIR")
        .env("NO_COLOR", "")
        .args(["--dry-run", "true"]);
    let out = output(c);
    ok(&out);
    assert_eq!(row(&out, "color"), ("always".into(), file.clone()));
    assert_eq!(row(&out, "socket"), ("/file/p.sock".into(), file.clone()));
    assert_eq!(row(&out, "state-dir"), ("/file/state".into(), file));
    // The command line still beats NO_COLOR.
    let out = dry(&dir, &[], &["--color", "always"]);
    assert_eq!(row(&out, "color"), ("always".into(), "command line".into()));
}

#[test]
fn no_config_reads_nothing() {
    let dir = TempDir::new("cfg-none");
    write(&system_file(&dir), "[defaults]\nattempts = 4\n");
    write(&user_file(&dir), "this is [not toml\n");
    let out = dry(&dir, &[], &["--no-config"]);
    ok(&out);
    assert_eq!(row(&out, "attempts"), ("3".into(), "default".into()));
    assert!(
        stdout(&out).contains("config: none (--no-config)"),
        "{}",
        stdout(&out)
    );
    // It beats PATIENCE_CONFIG; a PATIENCE_PROFILE has nothing to select and
    // is ignored; a -p on the same command line is a contradiction.
    let env = [
        ("PATIENCE_CONFIG", "/nonexistent.toml"),
        ("PATIENCE_PROFILE", "quick"),
    ];
    ok(&dry(&dir, &env, &["--no-config"]));
    let out = dry(&dir, &[], &["--no-config", "-p", "quick"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("--profile"), "{}", stderr(&out));
}

#[test]
fn config_replaces_the_search() {
    let dir = TempDir::new("cfg-explicit");
    write(&system_file(&dir), "broken = [\n");
    write(&user_file(&dir), "[defaults]\nattempts = 9\ntimeout = \"9s\"\n");
    let other = dir.join("other.toml");
    write(&other, "[defaults]\nattempts = 4\n");
    let shown = other.display().to_string();
    let out = dry(&dir, &[], &["--config", &shown]);
    ok(&out);
    assert_eq!(row(&out, "attempts"), ("4".into(), shown.clone()));
    // Nothing from the user file, which was not read at all.
    assert_eq!(row(&out, "timeout"), ("none".into(), "default".into()));
    assert!(!stdout(&out).contains("config/patience"), "{}", stdout(&out));
    // PATIENCE_CONFIG does the same, and --config beats it.
    let out = dry(&dir, &[("PATIENCE_CONFIG", &shown)], &[]);
    assert_eq!(row(&out, "attempts"), ("4".into(), shown.clone()));
    let user = user_file(&dir).display().to_string();
    let out = dry(&dir, &[("PATIENCE_CONFIG", &user)], &["--config", &shown]);
    assert_eq!(row(&out, "attempts").0, "4");
}

#[test]
fn the_system_file_when_there_is_no_user_file() {
    let dir = TempDir::new("cfg-system");
    write(&system_file(&dir), "[defaults]\nattempts = 6\ntimeout = \"8s\"\n");
    let sys = system_file(&dir).display().to_string();
    let out = dry(&dir, &[], &[]);
    ok(&out);
    assert_eq!(row(&out, "attempts"), ("6".into(), sys.clone()));
    assert!(
        stdout(&out).contains(&format!("config: {sys} (read)")),
        "{}",
        stdout(&out)
    );
    // With a user file, the user file wins key by key.
    write(&user_file(&dir), "[defaults]\nattempts = 2\n");
    let out = dry(&dir, &[], &[]);
    assert_eq!(
        row(&out, "attempts"),
        ("2".into(), user_file(&dir).display().to_string())
    );
    assert_eq!(row(&out, "timeout"), ("8s".into(), sys));
}

#[test]
fn missing_default_files_and_no_home_are_fine() {
    let dir = TempDir::new("cfg-nohome");
    let mut c = common::patience(&dir);
    c.env_remove("HOME")
        .env_remove("XDG_CONFIG_HOME")
        .args(["-a", "1", "true"]);
    let out = output(c);
    ok(&out);
    assert!(stderr(&out).is_empty(), "silent: {}", stderr(&out));
    let out = dry(&dir, &[], &[]);
    ok(&out);
    assert!(stdout(&out).contains("(not found)"), "{}", stdout(&out));
}

#[test]
fn a_missing_config_file_or_profile_is_an_error() {
    let dir = TempDir::new("cfg-missing");
    let missing = dir.join("missing.toml").display().to_string();
    for env in [&[][..], &[("PATIENCE_CONFIG", missing.as_str())][..]] {
        let args: &[&str] = if env.is_empty() {
            &["--config", &missing]
        } else {
            &[]
        };
        let out = dry(&dir, env, args);
        assert_eq!(code(&out), 125);
        assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    }
    write(&user_file(&dir), "[profile.quick]\nattempts = 1\n");
    let out = dry(&dir, &[], &["-p", "quikc"]);
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(
        err.contains("unknown profile 'quikc'") && err.contains("did you mean 'quick'"),
        "{err}"
    );
    // A directory where the user file should be is not silently skipped.
    std::fs::remove_file(user_file(&dir)).unwrap();
    std::fs::create_dir_all(user_file(&dir)).unwrap();
    let out = dry(&dir, &[], &[]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
}

#[test]
fn an_unknown_key_names_file_line_key_and_a_near_name() {
    let dir = TempDir::new("cfg-unknown");
    let f = user_file(&dir);
    write(&f, "# comment\n[defaults]\nattempts = 2\nmax_delay = \"5s\"\n");
    let err = fails_at(&dry(&dir, &[], &[]), &f, 4, "max_delay");
    assert!(err.contains("did you mean 'max-delay'?"), "{err}");
    write(&f, "[profile.q]\nzzz = 1\n");
    let err = fails_at(&dry(&dir, &[], &[]), &f, 2, "zzz");
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn a_wrong_type_names_file_line_and_key() {
    let dir = TempDir::new("cfg-type");
    let f = user_file(&dir);
    for (text, line, key, what) in [
        (
            "[defaults]\n\nattempts = \"five\"\n",
            3,
            "attempts",
            "expected an integer, found a string",
        ),
        (
            "[defaults]\nquiet = \"yes\"\n",
            2,
            "quiet",
            "expected true or false",
        ),
        ("[defaults]\ntimeout = true\n", 2, "timeout", "found a boolean"),
        (
            "[defaults]\nmultiplier = [2]\n",
            2,
            "multiplier",
            "expected a number",
        ),
        ("[profile.x]\ndelay = { s = 1 }\n", 2, "delay", "found a table"),
        (
            "[daemon]\nmax-series = \"many\"\n",
            2,
            "max-series",
            "expected an integer",
        ),
    ] {
        write(&f, text);
        let err = fails_at(&dry(&dir, &[], &[]), &f, line, key);
        assert!(err.contains(what), "{text}: {err}");
    }
}

#[test]
fn a_bad_value_names_file_line_and_key() {
    let dir = TempDir::new("cfg-value");
    let f = user_file(&dir);
    for (text, line, key, what) in [
        (
            "[defaults]\ntimeout = \"5 parsecs\"\n",
            2,
            "timeout",
            "invalid duration",
        ),
        (
            "[defaults]\nattempts = -1\n",
            2,
            "attempts",
            "invalid number of attempts",
        ),
        ("[defaults]\nbackoff = \"slowly\"\n", 2, "backoff", "pick from"),
        // A profile nobody asked for is checked all the same.
        (
            "[defaults]\n[profile.unused]\nsignal = \"NOPE\"\n",
            3,
            "signal",
            "invalid signal",
        ),
        ("[daemon]\nsocket-mode = 660\n", 2, "socket-mode", "octal"),
        (
            "[daemon]\nbuckets = [\n  0.5,\n  0.1,\n]\n",
            4,
            "buckets",
            "increasing",
        ),
    ] {
        write(&f, text);
        let err = fails_at(&dry(&dir, &[], &[]), &f, line, key);
        assert!(err.contains(what), "{text}: {err}");
    }
}

#[test]
fn bad_regexes_and_code_sets_name_file_line_and_key() {
    let dir = TempDir::new("cfg-rules");
    let f = user_file(&dir);
    write(&f, "[defaults]\nsuccess-exit = [0, 2]\n");
    let out = common::run(&dir, &["sh", "-c", "exit 2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    write(&f, "[defaults]\nsuccess-exit = \"0,2\"\n");
    ok(&dry(&dir, &[], &[]));
    write(&f, "[defaults]\n\nsuccess-exit = \"0,x\"\n");
    fails_at(&dry(&dir, &[], &[]), &f, 3, "success-exit");
    write(&f, "[defaults]\nretry-pattern = [\n  \"ok\",\n  \"(\",\n]\n");
    fails_at(&dry(&dir, &[], &[]), &f, 4, "retry-pattern");
}

#[test]
fn a_syntax_error_shows_the_line() {
    let dir = TempDir::new("cfg-syntax");
    let f = user_file(&dir);
    write(&f, "[defaults]\nattempts = 2\ntimeout = \"5s\n");
    let out = dry(&dir, &[], &[]);
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.starts_with(&format!("patience: {}:3:", f.display())), "{err}");
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains("3 | timeout = \"5s"), "the line itself: {err}");
}

#[test]
fn dry_run_shows_sources_and_the_schedule_and_runs_nothing() {
    let dir = TempDir::new("cfg-dry");
    write(
        &user_file(&dir),
        "[defaults]\nattempts = 4\ndelay = \"1s\"\n[profile.j]\nbackoff = \"jitter\"\n",
    );
    let marker = dir.join("ran");
    let script = format!("touch '{}'", marker.display());
    let mut c = common::patience(&dir);
    c.args(["--dry-run", "-b", "exponential", "sh", "-c", &script]);
    let out = output(c);
    ok(&out);
    let text = stdout(&out);
    assert!(!marker.exists(), "--dry-run ran the command");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(
        row(&out, "backoff"),
        ("exponential".into(), "command line".into())
    );
    assert!(text.contains("after attempt 1: 1s\n"), "{text}");
    assert!(text.contains("after attempt 2: 2s\n"), "{text}");
    assert!(text.contains("after attempt 3: 4s\n"), "{text}");
    assert!(
        !text.contains("after attempt 4"),
        "only delays between 4 attempts: {text}"
    );
    // Jitter: ranges.
    let out = dry(&dir, &[], &["-p", "j"]);
    let text = stdout(&out);
    assert!(text.contains("after attempt 1: 0ms to 1s\n"), "{text}");
    assert!(text.contains("after attempt 3: 0ms to 4s\n"), "{text}");
    // Delays that would reach --deadline: the schedule ends there.
    let out = dry(&dir, &[], &["--deadline", "3s", "-a", "6"]);
    let text = stdout(&out);
    assert!(
        text.contains("after attempt 2: 2s would reach --deadline 3s: the run ends here at the latest\n"),
        "{text}"
    );
    assert!(!text.contains("after attempt 3"), "{text}");
    // The socket and the state directory as they are found, not "none".
    let socket = dir.join("no-daemon.sock").display().to_string();
    assert_eq!(row(&out, "socket"), (socket, "env PATIENCE_SOCKET".into()));
    let state = row(&out, "state-dir").0;
    assert_eq!(state, dir.join("state-dir").display().to_string());
}

/// The text of man/patience.toml.5 with roff's `\-` turned back into `-`.
fn man_page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/patience.toml.5");
    std::fs::read_to_string(path)
        .expect("man/patience.toml.5")
        .replace("\\-", "-")
}

#[test]
fn the_man_page_example_is_valid_and_means_what_it_says() {
    let dir = TempDir::new("cfg-man");
    let page = man_page();
    let start = page.find(".SH EXAMPLES\n.EX\n").expect("EXAMPLES section") + ".SH EXAMPLES\n.EX\n".len();
    let len = page[start..].find("\n.EE").expect("end of example");
    let example = dir.join("example.toml");
    write(&example, &page[start..start + len]);
    let shown = example.display().to_string();
    // "patience -p quick -a 2 make test makes at most two attempts (the
    // command line wins), 200 ms apart (the profile), each limited to 30
    // seconds (the defaults)."
    let mut c = common::patience(&dir);
    c.args([
        "--config",
        &shown,
        "--dry-run",
        "-p",
        "quick",
        "-a",
        "2",
        "make",
        "test",
    ]);
    let out = output(c);
    ok(&out);
    assert_eq!(row(&out, "attempts"), ("2".into(), "command line".into()));
    assert_eq!(
        row(&out, "delay"),
        ("200ms".into(), format!("profile quick in {shown}"))
    );
    assert_eq!(row(&out, "timeout"), ("30s".into(), shown.clone()));
    assert_eq!(row(&out, "verbosity").0, "verbose");
    assert!(
        stdout(&out).contains("after attempt 1: 200ms\n"),
        "{}",
        stdout(&out)
    );
    let daemon = patience::config::load_daemon(&example).expect("[daemon] of the example");
    assert_eq!(daemon.socket_mode, Some(0o660));
}

#[test]
fn the_man_page_documents_every_key() {
    let page = man_page();
    let settings = patience::settings::OPTIONS
        .iter()
        .chain(patience::settings::CONFIG_ONLY);
    let keys = settings
        .map(|o| o.long)
        .chain(patience::config::DAEMON_KEYS.iter().copied());
    for key in keys {
        let tagged = page.lines().any(|l| {
            l.strip_prefix(".BR ")
                .is_some_and(|rest| rest.split([' ', '"', ',']).any(|w| w == key))
        });
        assert!(tagged, "man/patience.toml.5 has no '.BR {key} ...' entry");
    }
}
