#!/bin/sh
# Overhead of patience against GNU timeout and the bare command, interleaved
# in one run; then peak RSS (GNU time) and the stripped binary size.
set -eu
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-300}
P=target/release/patience
cargo build --release --quiet --example bench-harness
H=target/release/examples/bench-harness
TRUE=$(command -v true)
TIMEOUT=$(command -v timeout)
if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }
fi

echo "== startup overhead: patience -t 10s -- true ($RUNS runs each, interleaved)"
$H "$RUNS" "patience=$P -t 10s -- $TRUE" "timeout=$TIMEOUT 10 $TRUE" "true=$TRUE"

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
echo "== peak RSS (KiB, max of 5 runs)"
for label in patience timeout; do
    max=0
    for _ in 1 2 3 4 5; do
        if [ $label = patience ]; then r=$(rss $P -t 10s -- "$TRUE"); else r=$(rss "$TIMEOUT" 10 "$TRUE"); fi
        [ "$r" -gt "$max" ] && max=$r
    done
    echo "$label: $max"
done
echo "== binary size (bytes, stripped release)"
wc -c < $P
