//! The `patience` binary.
//!
//! `main` is the C entry point rather than Rust's: Rust's runtime sets
//! SIGPIPE to ignored before `fn main`, which would hide whether the caller
//! had it ignored, and the child must inherit exactly that (GNU's test
//! `(trap '' PIPE && timeout 10 yes | :)` expects "Broken pipe").
#![no_main]

use patience::{app, child::Inherited, sys};

#[no_mangle]
pub extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    sys::sanitize_standard_fds();
    let inherited = Inherited::capture_and_prepare();
    // std captures argv itself on Linux, with or without its runtime.
    let args = std::env::args_os().skip(1).collect();
    app::main(args, inherited)
}
