#!/usr/bin/env bash
# How late `--slot-wait` takes a slot that was freed, against `flock -w`.
#
#   bash tests/bench/slotwait.sh              (after `make build`)
#   ROUNDS=40 HOLD=0.2 PATIENCE=path/to/patience bash tests/bench/slotwait.sh
#
# Each round, a holder takes the only slot (`--max-concurrent 1`) and runs
# `sleep HOLD; date +%s%N` (HOLD to twice HOLD); a second run, started while the first holds
# the slot, waits with `--slot-wait` and runs `date +%s%N`. The lateness is
# the second time minus the first: the holder giving the slot back, the
# waiter noticing and taking it, and one exec of date. The same rounds with
# `flock F` and `flock -w F` give the reference. Medians are reported, and
# the ratio patience / flock.
# Target: a median under 10 ms.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -euo pipefail

BIN=${PATIENCE:-${CARGO_TARGET_DIR:-target}/release/patience}
ROUNDS=${ROUNDS:-20}
HOLD=${HOLD:-0.2}
TARGET_MS=10
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
command -v flock >/dev/null || { echo "no flock(1) (util-linux) to compare with" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PATIENCE_STATE_DIR=$WORK/state
export PATIENCE_SOCKET=$WORK/no-daemon.sock
export PATIENCE_CONFIG=/dev/null

# round TOOL HOLD: prints the lateness of one hand-over in microseconds.
round() {
    local tool=$1 hold=$2 held=$WORK/held waited=$WORK/waited
    rm -f "$held" "$waited"
    if [ "$tool" = patience ]; then
        "$BIN" -a 1 -q --key bench --max-concurrent 1 -- sh -c "sleep $hold; date +%s%N" >"$held" &
    else
        flock "$WORK/lock" sh -c "sleep $hold; date +%s%N" >"$held" &
    fi
    local holder=$!
    # The waiter starts once the holder holds the slot, well before it ends.
    sleep "$(awk -v h="$hold" 'BEGIN { print h / 4 }')"
    if [ "$tool" = patience ]; then
        "$BIN" -a 1 -q --key bench --max-concurrent 1 --slot-wait 10s -- date +%s%N >"$waited"
    else
        flock -w 10 "$WORK/lock" date +%s%N >"$waited"
    fi
    wait "$holder"
    echo $((($(cat "$waited") - $(cat "$held")) / 1000))
}

# median: of the numbers on stdin.
median() {
    sort -n | awk '{ a[NR] = $1 } END { print NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'
}

echo "patience: $BIN"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds, slot held ${HOLD}s"
# Rounds of the two tools alternate, so that load on the machine falls on both.
# The hold varies from round to round (HOLD to twice HOLD), so that a
# waiter that polls is not measured at one lucky phase of its polling.
for ((r = 0; r < ROUNDS; r++)); do
    hold=$(awk -v h="$HOLD" -v r="$r" 'BEGIN { print h * (1 + (r * 7 % 10) / 10) }')
    echo "patience $(round patience "$hold")"
    echo "flock $(round flock "$hold")"
done >"$WORK/rounds"
p=$(awk '$1 == "patience" { print $2 }' "$WORK/rounds" | median)
f=$(awk '$1 == "flock" { print $2 }' "$WORK/rounds" | median)
pmax=$(awk '$1 == "patience" { print $2 }' "$WORK/rounds" | sort -n | tail -1)
fmax=$(awk '$1 == "flock" { print $2 }' "$WORK/rounds" | sort -n | tail -1)
awk -v p="$p" -v f="$f" -v pm="$pmax" -v fm="$fmax" -v t="$TARGET_MS" 'BEGIN {
    printf "slot hand-over, --slot-wait:  median %.2f ms (max %.2f ms)\n", p / 1000, pm / 1000
    printf "lock hand-over, flock -w:     median %.2f ms (max %.2f ms)\n", f / 1000, fm / 1000
    printf "ratio patience / flock:       %.1f\n", (f > 0 ? p / f : 0)
    if (p / 1000 >= t) { printf "slotwait.sh: median %.2f ms is over the %d ms target\n", p / 1000, t > "/dev/stderr"; exit 1 }
}'
