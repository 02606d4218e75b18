//! The config loader: whatever the file holds, it is accepted or refused
//! with a message that names the file; never a panic. The first byte picks
//! the profile (none, or `a`), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let profile = (pick & 1 == 1).then_some("a");
    let path = Path::new("/fuzz/config.toml");
    if let Err(e) = patience::config::resolve_text(path, text, profile) {
        let msg = e.to_string();
        assert!(
            msg.contains("/fuzz/config.toml"),
            "the error does not name the file: {msg}"
        );
    }
});
