//! Load generator for `tests/bench/daemon.sh` (not part of the product).
//!
//!     daemon_flood SOCKET HTTP_ADDR DATAGRAMS NAMES SCRAPES
//!
//! Sends DATAGRAMS protocol-v1 datagrams to patienced at SOCKET with
//! blocking sends from one thread (so the kernel never drops one), spread
//! over NAMES commands: each name gets one attempt and one run event first,
//! which is seven series per name. Then it waits until patienced counts every
//! datagram as accepted, and reports the rate. Finally it times SCRAPES
//! `GET /metrics` and reports their median and worst latency and size.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

fn accepted(addr: &str) -> (u64, u64) {
    let text = get(addr, "/metrics");
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let rejected: u64 = text
        .lines()
        .filter(|l| l.starts_with("patienced_datagrams_total{result=\"rejected\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    (
        value("patienced_datagrams_total{result=\"accepted\"}"),
        value("patienced_datagrams_total{result=\"dropped\"}") + rejected,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: daemon_flood SOCKET HTTP_ADDR DATAGRAMS NAMES SCRAPES");
        std::process::exit(2);
    }
    let (socket, addr) = (&args[0], &args[1]);
    let total: u64 = args[2].parse().expect("DATAGRAMS");
    let names: u64 = args[3].parse().expect("NAMES");
    let scrapes: usize = args[4].parse().expect("SCRAPES");
    let (base, _) = accepted(addr);

    // Pre-encode, so the timing measures the daemon and not this client.
    let datagrams: Vec<Vec<u8>> = (0..total)
        .map(|i| {
            let n = i % names;
            let name = format!("bench-job-{n:06}");
            if (i / names) % 2 == 0 {
                format!(
                    r#"{{"v":1,"event":"attempt","name":"{name}","attempt":1,"exit_code":0,"signal":null,"timed_out":false,"duration_s":0.{:03},"ts":1764000000.5}}"#,
                    i % 1000
                )
            } else {
                format!(
                    r#"{{"v":1,"event":"run","name":"{name}","status":"succeeded","attempts":1,"exit_code":0,"duration_s":1.{:03},"ts":1764000000.5}}"#,
                    i % 1000
                )
            }
            .into_bytes()
        })
        .collect();
    let sender = UnixDatagram::unbound().expect("socket");
    sender.connect(socket).expect("connect to patienced's socket");
    let start = Instant::now();
    for d in &datagrams {
        sender.send(d).expect("blocking send");
    }
    let sent = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut lost) = accepted(addr);
    while ok - base < total && lost == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        (ok, lost) = accepted(addr);
    }
    let ingested = start.elapsed();
    let ok = ok - base;
    println!(
        "datagrams: {total} sent in {:.3}s, {ok} accepted, {} not accepted; ingest rate {:.0} datagrams/s",
        sent.as_secs_f64(),
        total - ok.min(total),
        ok as f64 / ingested.as_secs_f64()
    );

    let mut times = Vec::with_capacity(scrapes);
    let mut text = get(addr, "/metrics");
    for _ in 0..scrapes {
        let t = Instant::now();
        text = get(addr, "/metrics");
        times.push(t.elapsed());
    }
    let size = text.len();
    let series = text
        .lines()
        .find_map(|l| l.strip_prefix("patienced_series "))
        .unwrap_or("?");
    println!("series: {series} held by patienced");
    times.sort();
    if let (Some(median), Some(worst)) = (times.get(times.len() / 2), times.last()) {
        println!(
            "scrape: {scrapes} scrapes of {size} bytes, median {:.1} ms, worst {:.1} ms",
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    if ok < total {
        std::process::exit(1);
    }
}
