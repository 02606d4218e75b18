//! patience's own lines on stderr, each prefixed `[patience]`. Every module
//! that has something to tell the user while a run goes on (a warning about
//! the state file, a held output that could not be kept whole) says it
//! through here; what the run as a whole says is the report's.

use std::io::Write;

/// Writes one `[patience]` line to stderr, ignoring errors (EPIPE, EBADF).
/// The line goes out in one write, so it never interleaves with the
/// child's own stderr mid-line.
pub fn say(line: &str) {
    // A `--services` shim tells its supervisor, which names the service.
    if crate::services::shim::say(line) {
        return;
    }
    let text = format!("[patience] {line}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
