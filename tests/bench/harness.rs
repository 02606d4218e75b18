//! The timing harness behind `make bench`: runs several commands in turn,
//! interleaved (A B C A B C ...) so that a drift in machine speed hits them
//! all alike, and prints the median, min and max wall time of each and the
//! ratio of medians against the first command that is not the baseline.
//!
//! Usage: bench-harness RUNS 'label=command arg...' ...
//! Commands are split on whitespace; no shell is involved. With
//! `BENCH_RECORD=FILE`, each command's label and median (ms) are also
//! appended to FILE, one tab-separated line each, for a report.

use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .and_then(|r| r.parse().ok())
        .expect("usage: bench-harness RUNS 'label=cmd' ...");
    let cmds: Vec<(String, Vec<String>)> = args
        .map(|a| {
            let (label, cmd) = a.split_once('=').expect("label=command");
            (
                label.to_string(),
                cmd.split_whitespace().map(String::from).collect(),
            )
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cmds.len()];
    // One warm-up round, not counted.
    for round in 0..=runs {
        for (i, (_, cmd)) in cmds.iter().enumerate() {
            let start = Instant::now();
            let status = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("spawn");
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            // GNU `timeout -k` ends by SIGKILLing its own process group,
            // itself included; any other death is a broken benchmark.
            if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
                assert!(
                    sig == 9 && cmd[0].ends_with("timeout"),
                    "{cmd:?} died: {status:?}"
                );
            }
            if round > 0 {
                times[i].push(ms);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "command (wall ms)", "median", "min", "max"
    );
    for (i, (label, _)) in cmds.iter().enumerate() {
        let v = &times[i];
        println!(
            "{label:<28} {:>10.3} {:>10.3} {:>10.3}",
            medians[i],
            v[0],
            v[v.len() - 1]
        );
    }
    if let Some(path) = std::env::var_os("BENCH_RECORD") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("BENCH_RECORD");
        for (i, (label, _)) in cmds.iter().enumerate() {
            writeln!(f, "{label}\t{:.3}", medians[i]).expect("BENCH_RECORD");
        }
    }
    for (i, (label, _)) in cmds.iter().enumerate().skip(1) {
        println!("ratio {} / {label}: {:.2}", cmds[0].0, medians[0] / medians[i]);
    }
}
