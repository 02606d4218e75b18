//! The manual pages stay in step with the program: every option `--help`
//! lists is documented in patience(1), and the pages render without
//! warnings.

mod common;

use common::*;

fn page(name: &str) -> String {
    std::fs::read_to_string(format!("{}/man/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_help_option_is_in_the_man_page() {
    let dir = TempDir::new("docs");
    let help = stdout(&run(&dir, &["--help"]));
    let man = page("patience.1");
    let mut seen = 0;
    for word in help.split_whitespace() {
        let Some(long) = word.strip_prefix("--") else {
            continue;
        };
        let long = long.trim_end_matches(',');
        if long.is_empty() || !long.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        seen += 1;
        let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
        assert!(man.contains(&roff), "patience(1) does not document --{long}");
    }
    assert!(seen > 20, "parsed too few options out of --help");
}

#[test]
fn man_pages_render_without_warnings() {
    let man_available = std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_ok();
    if !man_available {
        assert!(std::env::var_os("CI").is_none(), "man(1) is required under CI");
        eprintln!("skipped: man(1) is not installed");
        return;
    }
    for entry in std::fs::read_dir(format!("{}/man", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "part") {
            continue;
        }
        let out = std::process::Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{}: {warnings}", path.display());
        assert!(
            out.stdout.len() > 500,
            "{} renders almost nothing",
            path.display()
        );
    }
}
