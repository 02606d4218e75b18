#!/bin/sh
# Capture-path benchmark (issue 3): SIZE bytes (default 1G) through
#   patience --failure-pattern ZZZ -- head -c SIZE /dev/zero | wc -c
# against the same bytes through one extra `cat` hop
#   head -c SIZE /dev/zero | cat | wc -c
# and patience's peak RSS meanwhile (GNU time -v).
# Targets: throughput >= 80 % of the cat hop's (median of RUNS interleaved
# runs), peak RSS < 8 MB. Exits 1 when a target is missed.
#
# Usage: sh tests/bench/capture.sh   (SIZE=256M RUNS=3 for a quick look)
set -eu

cd "$(dirname "$0")/../.."
SIZE=${SIZE:-1G}
RUNS=${RUNS:-5}
BIN=${PATIENCE_BIN:-${CARGO_TARGET_DIR:-target}/release/patience}

if [ ! -x "$BIN" ]; then
    cargo build --release --locked
fi

# GNU time (Debian package `time`) for the peak RSS.
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq time >/dev/null
    else
        sudo -n apt-get install -y -qq time >/dev/null
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

now_ns() { date +%s%N; }

# Runs "$@" (a shell snippet) once; prints elapsed nanoseconds, checks the count.
bytes=$(head -c "$SIZE" /dev/zero | wc -c)
timed() {
    start=$(now_ns)
    count=$(sh -c "$1")
    end=$(now_ns)
    if [ "$count" != "$bytes" ]; then
        echo "byte count mismatch: got $count, expected $bytes ($1)" >&2
        exit 1
    fi
    echo $((end - start))
}

cat_cmd="head -c $SIZE /dev/zero | cat | wc -c"
pat_cmd="$BIN --failure-pattern ZZZ -- head -c $SIZE /dev/zero | wc -c"

: >"$tmp/cat"
: >"$tmp/pat"
i=0
while [ "$i" -lt "$RUNS" ]; do
    timed "$cat_cmd" >>"$tmp/cat"
    timed "$pat_cmd" >>"$tmp/pat"
    i=$((i + 1))
done

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
best() { sort -n "$1" | head -1; }

# patience alone, on the left of the pipe (time -v reports the largest RSS
# of patience and of head, whichever is larger: both are small).
/usr/bin/time -v -o "$tmp/rss-p" "$BIN" --failure-pattern ZZZ -- head -c "$SIZE" /dev/zero | wc -c >/dev/null
rss_kb=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$tmp/rss-p")

awk -v bytes="$bytes" -v cm="$(median "$tmp/cat")" -v pm="$(median "$tmp/pat")" \
    -v cb="$(best "$tmp/cat")" -v pb="$(best "$tmp/pat")" -v rss="$rss_kb" -v runs="$RUNS" '
BEGIN {
    mib = bytes / 1048576
    printf "bytes: %d, runs: %d (median, best)\n", bytes, runs
    printf "cat hop:       %7.0f MiB/s  %7.0f MiB/s\n", mib / (cm / 1e9), mib / (cb / 1e9)
    printf "capture path:  %7.0f MiB/s  %7.0f MiB/s\n", mib / (pm / 1e9), mib / (pb / 1e9)
    ratio = cm / pm * 100
    printf "throughput vs cat hop: %.0f %% (target >= 80 %%)\n", ratio
    printf "patience peak RSS: %.1f MB (target < 8 MB)\n", rss / 1000
    ok = ratio >= 80 && rss < 8000
    print ok ? "PASS" : "FAIL"
    exit ok ? 0 : 1
}'
