#!/bin/sh
# patienced benchmark: datagrams ingested per second with none lost (blocking
# sends from one client), scrape latency and daemon memory with 10,000
# series. Targets: >= 100,000 datagrams/s, a scrape of 10,000 series under
# 50 ms, under 1 KiB of memory per series.
#
#   sh tests/bench/daemon.sh [DATAGRAMS]        (default 1,000,000)
set -eu
cd "$(dirname "$0")/../.."

DATAGRAMS=${1:-1000000}
NAMES=2000          # 5 series per name: 10,000 series
SCRAPES=50

cargo build --release --locked --quiet --bin patienced --example daemon_flood
T=${CARGO_TARGET_DIR:-target}
bin=$T/release/patienced
flood=$T/release/examples/daemon_flood

dir=$(mktemp -d "${TMPDIR:-/tmp}/patienced-bench.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"$bin" --no-config --socket "$dir/d.sock" --listen 127.0.0.1:0 --max-series 20000 2>"$dir/log" &
pid=$!
i=0
while ! grep -q 'listening on' "$dir/log" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -lt 500 ] || { cat "$dir/log"; exit 1; }
    sleep 0.01
done
addr=$(sed -n 's|.*listening on http://\([^/]*\)/metrics.*|\1|p' "$dir/log")

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
before=$(rss_kib)

echo "patienced $("$bin" --version | cut -d' ' -f2), $(nproc) CPUs, net.unix.max_dgram_qlen=$(cat /proc/sys/net/unix/max_dgram_qlen 2>/dev/null || echo '?')"
"$flood" "$dir/d.sock" "$addr" "$DATAGRAMS" "$NAMES" "$SCRAPES" | tee "$dir/out"

after=$(rss_kib)
per_series=$(( (after - before) * 1024 / (NAMES * 5) ))
echo "memory: RSS ${before} KiB empty, ${after} KiB with $((NAMES * 5)) series:" \
     "$per_series bytes per series"
awk -v per="$per_series" '
    /ingest rate/ { rate = $(NF - 1) }
    /^scrape:/ { for (i = 1; i < NF; i++) if ($i == "median") median = $(i + 1) }
    END {
        ok = rate >= 100000 && median != "" && median < 50 && per < 1024
        printf "targets: >= 100000 datagrams/s (%d), scrape < 50 ms (%s), < 1024 bytes per series (%d): %s\n",
            rate, median, per, ok ? "PASS" : "FAIL"
        exit ok ? 0 : 1
    }' "$dir/out"
