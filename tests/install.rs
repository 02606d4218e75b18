//! `make install` and `make uninstall` into a temporary DESTDIR, as a distro
//! packager runs them: every file lands where it should with the right mode,
//! and uninstall leaves nothing behind. The shell completions it installs
//! know every option of `--help`, pass their shell's syntax check, and (bash
//! and fish, which can be driven from a script) complete options, their
//! values, and the command after the options.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_and_uninstall_into_destdir() {
    if !have_tool("make", "--version", "make") {
        return;
    }
    let dir = TempDir::new("install");
    let dest = dir.join("dest");
    let build_dir = Path::new(patience_bin()).parent().unwrap();
    let make = |target: &str| {
        let out = Command::new("make")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg(format!("DESTDIR={}", dest.display()))
            .arg("PREFIX=/usr")
            .arg(format!("BUILD_DIR={}", build_dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    make("install");
    let files = files_under(&dest);
    let expected = [
        ("usr/bin/patience", 0o755),
        ("usr/bin/patienced", 0o755),
        ("usr/bin/patiencectl", 0o755),
        ("usr/share/man/man1/patience.1", 0o644),
        ("usr/share/man/man1/patiencectl.1", 0o644),
        ("usr/share/man/man5/patience-services.5", 0o644),
        ("usr/share/man/man5/patience.toml.5", 0o644),
        ("usr/share/man/man8/patienced.8", 0o644),
        ("usr/share/bash-completion/completions/patience", 0o644),
        ("usr/share/bash-completion/completions/patiencectl", 0o644),
        ("usr/share/zsh/site-functions/_patience", 0o644),
        ("usr/share/zsh/site-functions/_patiencectl", 0o644),
        ("usr/share/fish/vendor_completions.d/patience.fish", 0o644),
        ("usr/share/fish/vendor_completions.d/patiencectl.fish", 0o644),
        ("usr/lib/systemd/system/patienced.service", 0o644),
        ("usr/lib/systemd/system/patience-services@.service", 0o644),
    ];
    let mut names: Vec<&str> = expected.iter().map(|(f, _)| *f).collect();
    names.sort();
    assert_eq!(files, names, "installed files");
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, mode) in expected {
        let path = dest.join(file);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        if mode == 0o644 {
            let name = path.file_name().unwrap().to_str().unwrap();
            let source = match name {
                "patience" => "completions/patience.bash".to_string(),
                "patiencectl" => "completions/patiencectl.bash".to_string(),
                "_patience" | "patience.fish" | "_patiencectl" | "patiencectl.fish" => {
                    format!("completions/{name}")
                }
                n if n.ends_with(".service") => format!("contrib/systemd/{name}"),
                _ => format!("man/{name}"),
            };
            let mut want = std::fs::read(Path::new(root).join(source)).unwrap();
            if name.ends_with(".service") {
                // The units name the installed binaries.
                want = String::from_utf8(want)
                    .unwrap()
                    .replace("@BINDIR@", "/usr/bin")
                    .into_bytes();
            }
            assert_eq!(std::fs::read(&path).unwrap(), want, "{file}");
        }
    }
    let installed = dest.join("usr/bin/patience");
    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("patience "));
    let out = Command::new(dest.join("usr/bin/patienced"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("patienced "));
    // patiencectl is a relative symlink to patience: it survives DESTDIR.
    let ctl = dest.join("usr/bin/patiencectl");
    assert_eq!(std::fs::read_link(&ctl).unwrap(), Path::new("patience"));
    let out = Command::new(&ctl).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: patiencectl"));
    make("uninstall");
    assert_eq!(
        files_under(&dest),
        Vec::<String>::new(),
        "uninstall left files behind"
    );
}

#[test]
fn install_directories_can_be_moved_one_by_one() {
    if !have_tool("make", "--version", "make") {
        return;
    }
    let dir = TempDir::new("install-dirs");
    let dest = dir.join("dest");
    let build_dir = Path::new(patience_bin()).parent().unwrap();
    let make = |target: &str| {
        let out = Command::new("make")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg(format!("DESTDIR={}", dest.display()))
            .args([
                "PREFIX=/opt/p",
                "BINDIR=/sbin",
                "MANDIR=/man",
                "BASHCOMPDIR=/c/bash",
                "ZSHCOMPDIR=/c/zsh",
                "FISHCOMPDIR=/c/fish",
                "SYSTEMDUNITDIR=/units",
            ])
            .arg(format!("BUILD_DIR={}", build_dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    make("install");
    assert_eq!(
        files_under(&dest),
        [
            "c/bash/patience",
            "c/bash/patiencectl",
            "c/fish/patience.fish",
            "c/fish/patiencectl.fish",
            "c/zsh/_patience",
            "c/zsh/_patiencectl",
            "man/man1/patience.1",
            "man/man1/patiencectl.1",
            "man/man5/patience-services.5",
            "man/man5/patience.toml.5",
            "man/man8/patienced.8",
            "sbin/patience",
            "sbin/patiencectl",
            "sbin/patienced",
            "units/patience-services@.service",
            "units/patienced.service",
        ]
    );
    let unit = std::fs::read_to_string(dest.join("units/patience-services@.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/sbin/patience --services /etc/patience/services.d/%i.toml\n"),
        "{unit}"
    );
    make("uninstall");
    assert_eq!(
        files_under(&dest),
        Vec::<String>::new(),
        "uninstall left files behind"
    );
}

fn completion(file: &str) -> String {
    std::fs::read_to_string(format!("{}/completions/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn have(shell: &str) -> bool {
    Command::new(shell)
        .args(["-c", "exit 0"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completions_know_every_long_option_of_help() {
    let dir = TempDir::new("completions");
    let help = stdout(&run(&dir, &["--help"]));
    let longs: Vec<String> = help_options(&help)
        .into_iter()
        .filter(|o| o.starts_with("--"))
        .collect();
    assert!(
        longs.len() > 40,
        "parsed too few options out of --help: {longs:?}"
    );
    for file in ["patience.bash", "_patience", "patience.fish"] {
        let text = completion(file);
        for long in &longs {
            let found = if file == "patience.fish" {
                text.contains(&format!("-l {} ", &long[2..]))
            } else {
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .any(|w| w == long)
            };
            assert!(found, "{file} does not know {long}");
        }
    }
}

#[test]
fn completions_pass_their_shells_syntax_check() {
    let mut checked = 0;
    for (shell, file) in [
        ("bash", "patience.bash"),
        ("zsh", "_patience"),
        ("fish", "patience.fish"),
        ("bash", "patiencectl.bash"),
        ("zsh", "_patiencectl"),
        ("fish", "patiencectl.fish"),
    ] {
        if !have(shell) {
            skip(&format!("needs {shell} to check {file}"));
            continue;
        }
        let path = format!("{}/completions/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{shell} -n {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked > 0, "no shell to check the completions with");
}

/// What the bash completion offers for the words of a command line (the
/// last one being completed), as bash would call it.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let path = format!("{}/completions/patience.bash", env!("CARGO_MANIFEST_DIR"));
    let script = r#"source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _patience; printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["--norc", "-c", script, "bash", &path])
        .args(words)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_options_values_and_the_command() {
    if !have("bash") {
        skip("needs bash");
        return;
    }
    assert_eq!(bash_complete(&["patience", "--back"]), ["--backoff"]);
    assert_eq!(
        bash_complete(&["patience", "-a", "3", "--max-c"]),
        ["--max-concurrent"]
    );
    assert_eq!(bash_complete(&["patience", "-b", "fi"]), ["fixed", "fibonacci"]);
    // bash splits --opt=value at the `=`.
    assert_eq!(
        bash_complete(&["patience", "--output", "=", "f"]),
        ["final", "failure"]
    );
    assert_eq!(
        bash_complete(&["patience", "--restart", ""]),
        ["on-failure", "always", "on-success"]
    );
    // After the options, commands; `-t 5` is an option and its value.
    let commands = bash_complete(&["patience", "-t", "5", "--hold-output", "tru"]);
    assert!(commands.iter().any(|c| c == "true"), "{commands:?}");
    let commands = bash_complete(&["patience", "--", "tru"]);
    assert!(commands.iter().any(|c| c == "true"), "{commands:?}");
    // The command's own arguments are not patience's options.
    let args = bash_complete(&["patience", "-a", "2", "sh", "--back"]);
    assert!(!args.iter().any(|a| a == "--backoff"), "{args:?}");
    let args = bash_complete(&["patience", "--name=x", "sh", "--back"]);
    assert!(!args.iter().any(|a| a == "--backoff"), "{args:?}");
}

/// What the fish completion offers for a command line.
fn fish_complete(line: &str) -> Vec<String> {
    let path = format!("{}/completions/patience.fish", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("fish")
        .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
        .arg(&path)
        .arg(line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

#[test]
fn fish_completes_options_values_and_the_command() {
    if !have("fish") {
        skip("needs fish");
        return;
    }
    assert_eq!(fish_complete("patience --back"), ["--backoff"]);
    assert_eq!(fish_complete("patience --restart on-s"), ["on-success"]);
    let commands = fish_complete("patience -a 3 -t 10s tru");
    assert!(commands.iter().any(|c| c == "true"), "{commands:?}");
    let commands = fish_complete("patience -- tru");
    assert!(commands.iter().any(|c| c == "true"), "{commands:?}");
    let args = fish_complete("patience -a 2 sh --back");
    assert!(!args.iter().any(|a| a == "--backoff"), "{args:?}");
}

/// `make ARGS` in the source tree with no make or target-dir settings
/// inherited from an outer `make test`, its output captured.
fn make_here(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("BUILD_DIR")
        .env_remove("CARGO_TARGET_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    output(c)
}

/// A fake build: `release/NAME` scripts that say where they came from.
fn fake_build(target: &Path, names: &[&str]) {
    std::fs::create_dir_all(target.join("release")).unwrap();
    for name in names {
        let path = target.join("release").join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho {name} from the fake build\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn install_takes_the_binaries_from_cargo_target_dir() {
    if !have_tool("make", "--version", "make") {
        return;
    }
    // A package build that sets CARGO_TARGET_DIR (as `make static` honours
    // it) installs what it built there, not a stale target/release.
    let dir = TempDir::new("install-ctd");
    let target = dir.join("elsewhere");
    fake_build(&target, &["patience", "patienced"]);
    let dest = dir.join("dest");
    let destdir = format!("DESTDIR={}", dest.display());
    let out = make_here(
        &["install", &destdir, "PREFIX=/usr"],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for name in ["patience", "patienced"] {
        assert_eq!(
            std::fs::read(dest.join("usr/bin").join(name)).unwrap(),
            std::fs::read(target.join("release").join(name)).unwrap(),
            "{name} did not come from CARGO_TARGET_DIR"
        );
    }
}

#[test]
fn install_fails_and_copies_nothing_when_a_binary_is_missing() {
    if !have_tool("make", "--version", "make") {
        return;
    }
    let dir = TempDir::new("install-missing");
    let target = dir.join("target");
    fake_build(&target, &["patienced"]);
    let dest = dir.join("dest");
    let destdir = format!("DESTDIR={}", dest.display());
    let build_dir = format!("BUILD_DIR={}", target.join("release").display());
    let out = make_here(&["install", &destdir, "PREFIX=/usr", &build_dir], &[]);
    assert_ne!(code(&out), 0, "make install succeeded without patience");
    let err = stderr(&out);
    assert!(err.contains("release/patience is missing"), "{err}");
    let installed = if dest.exists() {
        files_under(&dest)
    } else {
        Vec::new()
    };
    assert_eq!(installed, Vec::<String>::new(), "a partial install");
}

#[test]
fn release_builds_embed_no_builder_paths() {
    if !have_tool("make", "--version", "make") {
        return;
    }
    let source = env!("CARGO_MANIFEST_DIR");
    // Both release builds remap the cargo home (from CARGO_HOME) and the
    // source directory, so panic locations name neither.
    let home = Path::new("/nonexistent/cargo-home");
    let out = make_here(&["-n", "build", "static"], &[("CARGO_HOME", home)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = stdout(&out);
    let builds: Vec<&str> = plan.lines().filter(|l| l.contains("cargo build")).collect();
    assert_eq!(builds.len(), 2, "{plan}");
    for line in builds {
        for from in [home.to_str().unwrap(), source] {
            assert!(
                line.contains(&format!("--remap-path-prefix={from}=")),
                "{from} is not remapped: {line}"
            );
        }
    }
    // And the shipped bytes of `make static` (built by .ci/run before the
    // tests) contain neither path: the cheap stand-in for building twice
    // with different CARGO_HOMEs and comparing.
    let target = Path::new(patience_bin()).parent().and_then(Path::parent).unwrap();
    let release = target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into());
    for name in ["patience", "patienced"] {
        let bin = release.join(name);
        let Ok(bytes) = std::fs::read(&bin) else {
            return skip(&format!("no static build at {}: run make static", bin.display()));
        };
        for path in [cargo_home.to_str().unwrap(), source, "/.cargo/registry/"] {
            // A build from before the remap differs in RUSTFLAGS, so
            // `make static` rebuilds it.
            assert!(
                !bytes.windows(path.len()).any(|w| w == path.as_bytes()),
                "{} names the builder path {path} (run make static again)",
                bin.display()
            );
        }
    }
}

/// The systemd units `make install` writes pass `systemd-analyze verify`
/// with nothing to say: the template as an instance, with ExecStart= on the
/// binaries under test (verify checks that the command exists).
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !have_tool(
        "systemd-analyze",
        "--version",
        "systemd-analyze (Debian package systemd)",
    ) {
        return;
    }
    let dir = TempDir::new("install-units");
    let dest = dir.join("dest");
    let build_dir = Path::new(patience_bin()).parent().unwrap();
    let out = make_here(
        &[
            "install",
            &format!("DESTDIR={}", dest.display()),
            &format!("BINDIR={}", build_dir.display()),
            "SYSTEMDUNITDIR=/units",
            &format!("BUILD_DIR={}", build_dir.display()),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "make install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = dest.join("units");
    let template = std::fs::read_to_string(units.join("patience-services@.service")).unwrap();
    assert!(template.contains("\nType=notify\n"), "{template}");
    std::fs::write(units.join("patience-services@shop.service"), &template).unwrap();
    let verify = |unit: &str| {
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", unit])
            .current_dir(&units)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap()
    };
    for unit in ["./patienced.service", "./patience-services@shop.service"] {
        let out = verify(unit);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{unit}: {err}");
    }
    // A unit it finds fault with does not pass (the check can fail).
    std::fs::write(
        units.join("patience-services@bad.service"),
        template.replace("Type=notify", "Type=notifyy"),
    )
    .unwrap();
    let out = verify("./patience-services@bad.service");
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}

#[test]
fn patiencectl_completions_know_every_verb_and_the_services_of_the_file() {
    let dir = TempDir::new("ctl-completions");
    let verbs: Vec<String> = ctl_verbs(&dir).into_iter().flatten().collect();
    assert!(verbs.len() >= 12, "{verbs:?}");
    for file in ["patiencectl.bash", "_patiencectl", "patiencectl.fish"] {
        let text = completion(file);
        for v in &verbs {
            assert!(
                text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == v),
                "{file} lacks verb {v}"
            );
        }
    }
    let file = dir.join("stack.toml");
    std::fs::write(
        &file,
        "[supervisor]\nname = \"x\"\n[service.db]\ncommand = [\"true\"]\n  [service.web-1] # the app\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    if have("bash") {
        let path = format!("{}/completions/patiencectl.bash", env!("CARGO_MANIFEST_DIR"));
        let script = r#"source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _patiencectl; printf '%s\n' "${COMPREPLY[@]}""#;
        let complete = |words: &[&str]| {
            let out = Command::new("bash")
                .args(["--norc", "-c", script, "bash", &path])
                .args(words)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            complete(&["patiencectl", "-f", file, "stop", ""]),
            ["db", "web-1"]
        );
        assert_eq!(complete(&["patiencectl", "-f", file, "re"]), ["restart", "reset"]);
        assert_eq!(complete(&["patiencectl", "logs", "--fo"]), ["--follow"]);
        assert_eq!(
            complete(&["patiencectl", "-f", file, "status", ""]),
            Vec::<String>::new()
        );
    } else {
        skip("needs bash");
    }
    if have("fish") {
        let path = format!("{}/completions/patiencectl.fish", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("fish")
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(&path)
            .arg(format!("patiencectl -f {file} restart "))
            .output()
            .unwrap();
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        assert!(
            got.contains(&"db".to_string()) && got.contains(&"web-1".to_string()),
            "{got:?}"
        );
    } else {
        skip("needs fish");
    }
}
