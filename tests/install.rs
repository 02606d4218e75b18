//! `make install` and `make uninstall` into a temporary DESTDIR, as a distro
//! packager runs them: every file lands where it should with the right mode,
//! and uninstall leaves nothing behind.

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
    if Command::new("make").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "make is required under CI");
        eprintln!("skipped: make is not installed");
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
    for expected in [
        "usr/bin/patience",
        "usr/bin/patienced",
        "usr/share/man/man1/patience.1",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not installed: {files:?}"
        );
    }
    assert!(
        files.iter().any(|f| f.starts_with("usr/share/man/man5/")),
        "{files:?}"
    );
    let mode = std::fs::metadata(dest.join("usr/bin/patience"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let mode = std::fs::metadata(dest.join("usr/share/man/man1/patience.1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    let installed = dest.join("usr/bin/patience");
    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("patience "));
    make("uninstall");
    assert_eq!(
        files_under(&dest),
        Vec::<String>::new(),
        "uninstall left files behind"
    );
}
