#!/bin/sh
# patience's own footprint: peak RSS of `patience -t 10s -- true` (GNU time,
# the largest of 5 runs) and the size of the stripped release binary.
# Targets: peak RSS < 3 MB, binary < 1 MB. Exits 1 when one is missed.
# (Its start-up time against GNU timeout is in peers.sh.)
set -eu
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}
P=$T/release/patience
[ -x "$P" ] || cargo build --release --locked --quiet
TRUE=$(command -v true)
if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }
fi

max=0
for _ in 1 2 3 4 5; do
    r=$(/usr/bin/time -f %M "$P" -t 10s -- "$TRUE" 2>&1 >/dev/null | tail -1)
    [ "$r" -gt "$max" ] && max=$r
done
size=$(wc -c <"$P")
awk -v rss="$max" -v size="$size" 'BEGIN {
    printf "patience -t 10s -- true: peak RSS %d KiB (%.2f MB; target < 3 MB)\n", rss, rss * 1024 / 1e6
    printf "stripped release binary: %d bytes (%.2f MB; target < 1 MB)\n", size, size / 1e6
    ok = rss * 1024 < 3e6 && size < 1e6
    print ok ? "PASS" : "FAIL"
    exit ok ? 0 : 1
}'
