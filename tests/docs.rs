//! The manual pages stay in step with the programs: every option that
//! `patience --help` and `patienced --help` list is documented in its page,
//! every exit status too, every setting has its key in patience.toml(5),
//! each page has the sections a reader looks for, and the pages are clean
//! under `man --warnings` and `mandoc -T lint`. The README shows the
//! container example's Dockerfile as it is.

mod common;

use common::*;
use std::process::Command;

const PAGES: [&str; 5] = [
    "patience.1",
    "patience.toml.5",
    "patienced.8",
    "patience-services.5",
    "patiencectl.1",
];

fn page(name: &str) -> String {
    std::fs::read_to_string(format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// An option as roff spells it: `\-\-kill\-after`.
fn roff(option: &str) -> String {
    option.replace('-', "\\-")
}

/// The text of section `name` of a page (from its `.SH` to the next).
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!("\n.SH {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}"));
    let rest = &page[start + 1..];
    let end = rest[4..].find("\n.SH ").map_or(rest.len(), |e| e + 4);
    &rest[..end]
}

/// True when `text` names `option` as a whole word (not `--state` inside
/// `--state\-file`).
fn names_option(text: &str, option: &str) -> bool {
    let needle = roff(option);
    text.match_indices(&needle).any(|(i, _)| {
        let after = &text[i + needle.len()..];
        !(after.starts_with("\\-") || after.starts_with(|c: char| c.is_ascii_alphanumeric()))
    })
}

fn help(bin: &str) -> String {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_help_option_is_in_the_man_page() {
    for (bin, name, least) in [
        (patience_bin(), "patience.1", 50),
        (patienced_bin(), "patienced.8", 9),
    ] {
        let options = help_options(&help(bin));
        assert!(
            options.len() >= least,
            "parsed too few options out of {bin} --help: {options:?}"
        );
        let man = page(name);
        let documented = section(&man, "OPTIONS");
        for option in &options {
            assert!(
                names_option(documented, option),
                "{name} OPTIONS does not document {option}"
            );
        }
        // And nothing the page documents as an option is missing from --help.
        for line in documented.lines().filter(|l| l.starts_with(".B")) {
            let first = line.split_whitespace().nth(1).unwrap_or("").trim_matches('"');
            if let Some(option) = first.strip_prefix("\\-").map(|o| o.replace("\\-", "-")) {
                let option = format!("-{option}");
                assert!(
                    options.contains(&option),
                    "{name} documents {option}, which --help lacks"
                );
            }
        }
    }
}

/// The text of the entry of `option` in a page's OPTIONS, with `\-` as `-`:
/// from its `.TP` to the next entry of an option.
fn entry(page: &str, option: &str) -> Option<String> {
    let options = section(page, "OPTIONS");
    let tags: Vec<usize> = options
        .match_indices("\n.TP\n.B")
        .map(|(i, _)| i + 1)
        .filter(|&i| options[i..].lines().nth(1).is_some_and(|l| l.contains(" \\-")))
        .collect();
    tags.iter().enumerate().find_map(|(n, &start)| {
        let end = tags.get(n + 1).copied().unwrap_or(options.len());
        let tag = options[start..].lines().nth(1)?;
        names_option(tag, option).then(|| options[start..end].replace("\\-", "-"))
    })
}

#[test]
fn every_default_of_help_is_the_man_page_default() {
    let help = help(patience_bin());
    let mut checked = 0;
    for line in help
        .lines()
        .filter(|l| l.trim_start().starts_with('-') && l.ends_with(']'))
    {
        let Some(option) = help_options(line).into_iter().find(|o| o.starts_with("--")) else {
            continue;
        };
        let default = &line[line.rfind('[').unwrap() + 1..line.len() - 1];
        // `--profile`'s brackets name a table, not a default.
        if default.starts_with("defaults") {
            continue;
        }
        let text = entry(&page("patience.1"), &option).unwrap_or_else(|| panic!("no entry for {option}"));
        let said = match default {
            "all" => "Default: every failing code".to_string(),
            d => format!("Default: {d}"),
        };
        assert!(
            text.contains(&said) || text.contains(default) && text.contains("(the default)"),
            "patience.1 does not give {option} the default [{default}] of --help:\n{text}"
        );
        checked += 1;
    }
    assert!(checked > 20, "checked only {checked} defaults");
}

#[test]
fn every_exit_status_of_help_is_in_the_man_page() {
    let help = help(patience_bin());
    let tail = &help[help.find("Exit status:").expect("no exit status in --help")..];
    let tail = &tail[..tail.find("\n\n").unwrap_or(tail.len())];
    let codes: Vec<&str> = tail
        .split(|c: char| !c.is_ascii_digit() && c != '+')
        .filter(|w| !w.is_empty() && w.chars().next().unwrap().is_ascii_digit())
        .collect();
    assert!(codes.len() >= 7, "{codes:?}");
    let man = page("patience.1");
    let statuses = section(&man, "EXIT STATUS");
    for code in codes {
        let code = code.trim_end_matches('+');
        assert!(
            statuses.contains(&format!(".B {code}\n")) || statuses.contains(&format!(".BI {code}+ N")),
            "patience.1 EXIT STATUS lacks {code}"
        );
    }
    // patienced: a usage error and --help exit with statuses its page lists.
    let man = page("patienced.8");
    let statuses = section(&man, "EXIT STATUS");
    for args in [&["--no-such-option"][..], &["--help"], &["--max-series", "0"]] {
        let out = Command::new(patienced_bin()).args(args).output().unwrap();
        let code = out.status.code().unwrap();
        assert!(
            statuses.contains(&format!(".B {code}\n")),
            "patienced.8 lacks status {code} ({args:?})"
        );
    }
}

#[test]
fn every_setting_has_its_key_in_patience_toml_5() {
    let man = page("patience.toml.5");
    let settings = section(&man, "SETTINGS");
    // The options that only make sense on a command line, and say so there.
    let cli_only = [
        "--config",
        "--no-config",
        "--profile",
        "--dry-run",
        "--state",
        "--reset-state",
        "--services",
        "--help",
        "--version",
    ];
    for option in help_options(&help(patience_bin())) {
        let Some(key) = option.strip_prefix("--") else {
            continue;
        };
        if cli_only.contains(&option.as_str()) {
            assert!(
                names_option(settings, &option),
                "patience.toml.5 does not say {option} is no key"
            );
        } else {
            let entry = format!("\n.BR {} ", roff(key));
            let pair = format!("\n.BR {} \", \" ", roff(key));
            let second = format!("\", \" {} \"", roff(key));
            assert!(
                settings.contains(&entry) || settings.contains(&pair) || settings.contains(&second),
                "patience.toml.5 has no key {key}"
            );
        }
    }
    let daemon = section(&man, "DAEMON SETTINGS");
    for key in patience::config::DAEMON_KEYS {
        assert!(
            daemon.contains(&format!("\n.BR {} ", roff(key))),
            "patience.toml.5 lacks [daemon] {key}"
        );
    }
}

#[test]
fn every_services_key_is_in_patience_services_5() {
    use patience::services::file::{SERVICE_KEYS, SUPERVISOR_KEYS};
    let man = page("patience-services.5");
    for key in SERVICE_KEYS.iter().chain(SUPERVISOR_KEYS) {
        assert!(
            man.contains(&format!(".B {}\n", roff(key))) || man.contains(&format!(".BI {} ", roff(key))),
            "patience-services.5 has no entry for key {key}"
        );
    }
    for state in [
        "waiting",
        "starting",
        "ready",
        "backoff",
        "stopping",
        "stopped",
        "succeeded",
        "failed",
        "blocked",
    ] {
        assert!(
            section(&man, "STATES").contains(&format!(".B {state}\n")),
            "no state {state}"
        );
    }
    for cond in ["started", "ready", "succeeded", "ended"] {
        assert!(
            section(&man, "DEPENDENCIES").contains(&format!(".B {cond}\n")),
            "no condition {cond}"
        );
    }
    for status in ["0", "124", "125", "128+N"] {
        assert!(
            section(&man, "EXIT STATUS").contains(&format!(".B {status}\n")),
            "no status {status}"
        );
    }
    let examples = section(&man, "EXAMPLES");
    assert!(
        examples.contains("ENTRYPOINT") && examples.contains("crontab"),
        "a container and a cron example"
    );
    assert!(names_option(&page("patience.1"), "--services"));
}

#[test]
fn pages_have_the_sections_a_reader_looks_for() {
    for name in PAGES {
        let man = page(name);
        let mut wanted = vec![
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ];
        if !name.ends_with(".5") {
            wanted.extend(["OPTIONS", "EXIT STATUS"]);
        }
        for s in wanted {
            section(&man, s);
        }
        let see_also = section(&man, "SEE ALSO");
        for other in PAGES.iter().filter(|&&p| p != name) {
            let (base, num) = other.rsplit_once('.').unwrap();
            assert!(
                see_also.contains(&format!("{} ({num})", roff(base))),
                "{name}: SEE ALSO lacks {other}"
            );
        }
    }
    let see_also = section(&page("patience.1"), "SEE ALSO").to_string();
    for peer in ["timeout (1)", "flock (1)", "chronic (1)", "kill (1)"] {
        assert!(see_also.contains(peer), "patience.1: SEE ALSO lacks {peer}");
    }
}

/// True when `tool` runs here; otherwise the test is skipped.
fn available(tool: &str, arg: &str) -> bool {
    have_tool(tool, arg, tool)
}

#[test]
fn man_pages_render_without_warnings() {
    if !available("man", "--version") {
        return;
    }
    // In the C locale man renders for an ASCII terminal, where a glyph such
    // as \(OK does not exist: a warning there but not under UTF-8.
    for (name, locale) in PAGES.iter().flat_map(|n| ["C", "C.UTF-8"].map(|l| (n, l))) {
        let path = format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("man")
            .args(["--warnings", "-l", &path])
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .env("LC_ALL", locale)
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} ({locale}): {warnings}");
        assert!(warnings.trim().is_empty(), "{name} ({locale}): {warnings}");
        assert!(out.stdout.len() > 500, "{name} renders almost nothing");
    }
}

#[test]
fn man_pages_pass_mandoc_lint() {
    if !available("mandoc", "-V") {
        return;
    }
    for name in PAGES {
        let path = format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("mandoc")
            .args(["-T", "lint", &path])
            .output()
            .unwrap();
        let messages = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && messages.trim().is_empty(),
            "mandoc -T lint {name}:\n{messages}"
        );
    }
}

#[test]
fn every_verb_and_exit_status_of_patiencectl_is_in_its_page_and_every_method_in_patience_services_5() {
    let dir = TempDir::new("docs-ctl");
    let mut c = patience(&dir);
    c.args(["--ctl", "--help"]);
    let help = stdout(&output(c));
    let man = page("patiencectl.1");
    let verbs = section(&man, "VERBS");
    let listed: Vec<String> = ctl_verbs(&dir)
        .into_iter()
        .filter_map(|names| names.into_iter().next())
        .collect();
    assert!(listed.len() >= 11, "{listed:?}");
    for verb in listed {
        assert!(
            verbs.contains(&format!(".B {verb}"))
                || verbs.contains(&format!(".BR {verb} "))
                || verbs.contains(&format!(".BI {verb} ")),
            "patiencectl.1 lacks verb {verb}"
        );
    }
    let exit = section(&man, "EXIT STATUS");
    for code in ["0", "1", "3", "4", "124", "125"] {
        assert!(
            exit.contains(&format!(".B {code}\n")),
            "patiencectl.1 lacks exit status {code}"
        );
        assert!(
            help.contains(&format!("{code} ")),
            "--help lacks exit status {code}"
        );
    }
    let services = page("patience-services.5");
    let control = section(&services, "CONTROL");
    for method in patience::services::control::METHODS {
        assert!(
            control.contains(&format!(".TP\n.B {method}\n")),
            "patience-services.5 lacks method {method}"
        );
    }
    for code in [
        "32700", "32600", "32601", "32602", "32001", "32002", "32003", "32004", "32005",
    ] {
        assert!(control.contains(code), "patience-services.5 lacks error {code}");
    }
}

/// The README shows contrib/container/Dockerfile as it is (its
/// instructions, the comments left out), and the stack that image runs is
/// valid, in the order the README gives (tests/services_pid1.rs runs it).
#[test]
fn the_readme_shows_the_container_dockerfile_and_its_stack_is_valid() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{repo}/{p}")).unwrap();
    let dockerfile: String = read("contrib/container/Dockerfile")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        read("README.md").contains(&format!("```dockerfile\n{dockerfile}```\n")),
        "README.md does not show contrib/container/Dockerfile as it is:\n{dockerfile}"
    );
    let out = Command::new(patience_bin())
        .args(["--no-config", "--services"])
        .arg(format!("{repo}/contrib/container/services.toml"))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\nstart order: db, migrate, app\n"),
        "{}",
        stdout(&out)
    );
}
