//! The `patienced` binary (to come: see the daemon issue).

fn main() {
    eprintln!("usage: patienced [--socket PATH] [--listen ADDR:PORT]");
    std::process::exit(2);
}
