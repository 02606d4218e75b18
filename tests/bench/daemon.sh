#!/bin/sh
# patienced benchmark. Targets:
#  - >= 100,000 datagrams/s ingested with none lost (blocking sends from one
#    client), under 1 KiB of memory per series;
#  - a scrape of 10,000 series <= 10 ms, of 100,000 series <= 100 ms;
#  - 0 datagrams lost by a non-blocking sender (as patience sends) at
#    100,000 series while a client scrapes in a loop;
#  - peak RSS under 64 MB during 16 concurrent scrapes of 10,000 series
#    with names of 250 bytes.
#
#   sh tests/bench/daemon.sh [DATAGRAMS]        (default 1,000,000)
set -eu
cd "$(dirname "$0")/../.."

DATAGRAMS=${1:-1000000}
NAMES=1428          # 7 series per name: 10,000 series
SCRAPES=50
LOSSY_RATE=${LOSSY_RATE:-1000}   # datagrams/s, non-blocking: far above what cron jobs send

cargo build --release --locked --quiet --bin patienced --example daemon_flood --example daemon_scrape
T=${CARGO_TARGET_DIR:-target}
bin=$T/release/patienced
flood=$T/release/examples/daemon_flood
scrape=$T/release/examples/daemon_scrape

dir=$(mktemp -d "${TMPDIR:-/tmp}/patienced-bench.XXXXXX")
pid=""
stop_daemon() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=""
}
cleanup() {
    stop_daemon
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# start_daemon TAG MAX_SERIES: starts patienced, sets pid and addr.
start_daemon() {
    rm -f "$dir/$1.sock"
    "$bin" --no-config --socket "$dir/$1.sock" --listen 127.0.0.1:0 --max-series "$2" 2>"$dir/$1.log" &
    pid=$!
    i=0
    while ! grep -q 'listening on' "$dir/$1.log" 2>/dev/null; do
        i=$((i + 1)); [ "$i" -lt 500 ] || { cat "$dir/$1.log"; exit 1; }
        sleep 0.01
    done
    addr=$(sed -n 's|.*listening on http://\([^/]*\)/metrics.*|\1|p' "$dir/$1.log")
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status"; }

start_daemon a 20000
before=$(rss_kib)
echo "patienced $("$bin" --version | cut -d' ' -f2), $(nproc) CPUs, net.unix.max_dgram_qlen=$(cat /proc/sys/net/unix/max_dgram_qlen 2>/dev/null || echo '?')"
"$flood" "$dir/a.sock" "$addr" "$DATAGRAMS" "$NAMES" "$SCRAPES" | tee "$dir/out"
after=$(rss_kib)
per_series=$(( (after - before) * 1024 / (NAMES * 7) ))
echo "memory: RSS ${before} KiB empty, ${after} KiB with $((NAMES * 7)) series:" \
     "$per_series bytes per series"
stop_daemon

start_daemon b 200000
"$scrape" fill "$dir/b.sock" "$addr" 14286 24
echo "100000 series:"
"$scrape" time "$addr" 20 | sed 's/^scrape/scrape100k/' | tee -a "$dir/out"
# The same sends without, then with, a client scraping in a loop: what the
# second loses more, scraping made intake lose.
"$scrape" lossy "$dir/b.sock" "$addr" "$LOSSY_RATE" 3 14286 24 0 | sed 's/^lossy/idle/' || true
"$scrape" lossy "$dir/b.sock" "$addr" "$LOSSY_RATE" 3 14286 24 1 | tee -a "$dir/out" || true
stop_daemon

start_daemon c 20000
"$scrape" fill "$dir/c.sock" "$addr" 1428 250
base_hwm=$(hwm_kib)
"$scrape" concurrent "$addr" 16
peak=$(hwm_kib)
echo "peak: VmHWM ${base_hwm} KiB before, ${peak} KiB after 16 concurrent scrapes of 10000 series (names of 250 bytes)" | tee -a "$dir/out"
stop_daemon

awk -v per="$per_series" '
    /ingest rate/ { rate = $(NF - 1) }
    /^scrape:/ { for (i = 1; i < NF; i++) if ($i == "median") median = $(i + 1) }
    /^scrape100k:/ { for (i = 1; i < NF; i++) if ($i == "median") median100 = $(i + 1) }
    /^lossy:/ { for (i = 1; i < NF; i++) if ($i == "lost") lost = $(i - 1) }
    /^peak:/ { for (i = 1; i < NF; i++) if ($i == "after") peak = $(i - 2) }
    END {
        ok = rate >= 100000 && median != "" && median <= 10 && median100 != "" && median100 <= 100 \
             && per < 1024 && lost == "0" && peak != "" && peak < 65536
        printf "targets: >= 100000 datagrams/s (%d), scrape 10k <= 10 ms (%s), 100k <= 100 ms (%s), < 1024 bytes per series (%d), 0 lost while scraping (%s), peak RSS < 65536 KiB (%s): %s\n",
            rate, median, median100, per, lost, peak, ok ? "PASS" : "FAIL"
        exit ok ? 0 : 1
    }' "$dir/out"
