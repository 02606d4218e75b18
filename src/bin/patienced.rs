//! The `patienced` binary: everything is in `patience::daemon`.

fn main() {
    let args = std::env::args_os().skip(1).collect();
    std::process::exit(patience::daemon::main(args));
}
