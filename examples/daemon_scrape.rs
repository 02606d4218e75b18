//! Scrape load for `tests/bench/daemon.sh` (not part of the product).
//!
//!     daemon_scrape fill SOCKET HTTP_ADDR NAMES NAME_LEN
//!     daemon_scrape time HTTP_ADDR SCRAPES
//!     daemon_scrape concurrent HTTP_ADDR CLIENTS
//!     daemon_scrape lossy SOCKET HTTP_ADDR RATE SECONDS NAMES NAME_LEN SCRAPERS
//!
//! `fill` gives NAMES commands seven series each (one attempt, one run),
//! with names NAME_LEN bytes long, by blocking sends. `time` reports the
//! median and worst latency of SCRAPES scrapes. `concurrent` has CLIENTS
//! scrapes in flight at once, read in full. `lossy` sends RATE datagrams a
//! second for SECONDS with non-blocking sends, as patience does, to known
//! commands, while SCRAPERS clients scrape in a loop; it reports how many sends
//! failed (EAGAIN: the daemon's queue was full) and how many the daemon
//! counted, and exits 1 when one was lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn get(addr: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("read");
    body
}

/// One scrape, read and counted but not kept: the latency is the daemon's.
fn get_len(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 18];
    let mut n = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn accepted(addr: &str) -> u64 {
    let text = String::from_utf8_lossy(&get(addr)).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("patienced_datagrams_total{result=\"accepted\"}")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0) as u64
}

fn name(n: u64, len: usize) -> String {
    let mut s = format!("bench-job-{n:06}-");
    while s.len() < len {
        s.push('x');
    }
    s
}

fn datagram(name: &str, run: bool, i: u64) -> Vec<u8> {
    if run {
        format!(
            r#"{{"v":1,"event":"run","name":"{name}","status":"succeeded","attempts":1,"exit_code":0,"duration_s":1.{:03},"ts":1764000000.5}}"#,
            i % 1000
        )
    } else {
        format!(
            r#"{{"v":1,"event":"attempt","name":"{name}","attempt":1,"exit_code":0,"duration_s":0.{:03},"ts":1764000000.5}}"#,
            i % 1000
        )
    }
    .into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> u64 { args[i].parse().expect("a number") };
    match args.first().map(String::as_str) {
        Some("fill") => {
            let (socket, addr, names, len) = (&args[1], &args[2], arg(3), arg(4) as usize);
            let base = accepted(addr);
            let s = UnixDatagram::unbound().unwrap();
            s.connect(socket).expect("connect");
            for n in 0..names {
                let nm = name(n, len);
                s.send(&datagram(&nm, false, n)).expect("send");
                s.send(&datagram(&nm, true, n)).expect("send");
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while accepted(addr) < base + 2 * names && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some("time") => {
            let (addr, scrapes) = (&args[1], arg(2) as usize);
            let mut size = get_len(addr);
            let mut times: Vec<Duration> = (0..scrapes)
                .map(|_| {
                    let t = Instant::now();
                    size = get_len(addr);
                    t.elapsed()
                })
                .collect();
            times.sort();
            println!(
                "scrape: {scrapes} scrapes of {size} bytes, median {:.1} ms, worst {:.1} ms",
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3
            );
        }
        Some("concurrent") => {
            let (addr, clients) = (args[1].clone(), arg(2));
            let t = Instant::now();
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    let addr = addr.clone();
                    std::thread::spawn(move || get_len(&addr))
                })
                .collect();
            let sizes: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            println!(
                "concurrent: {clients} scrapes of {} bytes in {:.0} ms",
                sizes.iter().max().unwrap_or(&0),
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        Some("lossy") => {
            let (socket, addr) = (&args[1], args[2].clone());
            let (rate, secs, names, len) = (arg(3), arg(4), arg(5), arg(6) as usize);
            let scrapers = arg(7);
            let base = accepted(&addr);
            let stop = Arc::new(AtomicBool::new(false));
            let scrapes = Arc::new(AtomicU64::new(0));
            let scraper: Vec<_> = (0..scrapers)
                .map(|_| {
                    let (stop, scrapes, addr) = (stop.clone(), scrapes.clone(), addr.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            get_len(&addr);
                            scrapes.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let total = rate * secs;
            let dgrams: Vec<Vec<u8>> = (0..total)
                .map(|i| datagram(&name(i % names, len), i % 2 == 1, i))
                .collect();
            let s = UnixDatagram::unbound().unwrap();
            s.connect(socket).expect("connect");
            s.set_nonblocking(true).unwrap();
            // Let a scrape begin first.
            std::thread::sleep(Duration::from_millis(50));
            let start = Instant::now();
            let mut failed = 0u64;
            for (i, d) in dgrams.iter().enumerate() {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if s.send(d).is_err() {
                    failed += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, Ordering::Relaxed);
            for s in scraper {
                s.join().unwrap();
            }
            let got = accepted(&addr) - base;
            println!(
                "lossy: {scrapers} scrapers, {total} sent non-blocking at {rate}/s during {} scrapes: {failed} sends failed, {got} accepted, {} lost ({:.1} %)",
                scrapes.load(Ordering::Relaxed),
                total - got.min(total),
                100.0 * (total - got.min(total)) as f64 / total as f64
            );
            if got < total {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: see the top of examples/daemon_scrape.rs");
            std::process::exit(2);
        }
    }
}
