#!/usr/bin/env bash
# Added cost per run of the shared state: `--key K --breaker 5
# --rate-limit 1000/1s --max-concurrent 8` against no shared state, for
# `patience -a 1 true`, with WORKERS processes running patience in
# parallel (each RUNS times in a row), and once with a single process.
#
#   bash tests/bench/resilience.sh            (after `make build`)
#   ROUNDS=20 RUNS=100 PATIENCE=path/to/patience bash tests/bench/resilience.sh
#   STATE_DIR=/some/dir ...                   (the state directory's filesystem matters)
#
# Batches with and without the shared state alternate, ROUNDS times, and
# the median of the per-round differences is reported, so that load from
# other processes on the machine cancels out as far as it can. Timing is
# bash's `time` (wall, user and system time of the batch and its children).
# Target: under 1 ms per run.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -euo pipefail

BIN=${PATIENCE:-${CARGO_TARGET_DIR:-target}/release/patience}
RUNS=${RUNS:-50}
ROUNDS=${ROUNDS:-10}
WORKERS=${WORKERS:-8}
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PATIENCE_STATE_DIR=${STATE_DIR:-$WORK/state}
export PATIENCE_SOCKET="$WORK/no-daemon.sock"
export PATIENCE_CONFIG=/dev/null

STATE_ARGS=(--key bench --breaker 5 --rate-limit 1000/1s --max-concurrent "$WORKERS")

# batch MODE PARALLEL: PARALLEL loops of RUNS runs each.
batch() {
    local mode=$1 parallel=$2 w n
    local args=()
    [ "$mode" = state ] && args=("${STATE_ARGS[@]}")
    for ((w = 0; w < parallel; w++)); do
        (
            for ((n = 0; n < RUNS; n++)); do
                "$BIN" -a 1 "${args[@]}" true || echo "patience exited $?" >&2
            done
        ) &
    done
    wait
}

# measure PARALLEL: prints "wall user sys" deltas (state - none) per round.
measure() {
    local parallel=$1 r none state
    local TIMEFORMAT='%3R %3U %3S'
    batch none "$parallel"
    batch state "$parallel" # warm-up: creates the state files
    for ((r = 0; r < ROUNDS; r++)); do
        none=$({ time batch none "$parallel" >/dev/null; } 2>&1 | tail -1)
        state=$({ time batch state "$parallel" >/dev/null; } 2>&1 | tail -1)
        echo "$none $state"
    done
}

# report LABEL PARALLEL < rounds
report() {
    awk -v label="$1" -v par="$2" -v runs="$RUNS" '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
            return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
        }
        { n++; base[n] = $1; wall[n] = $4 - $1; cpu[n] = ($5 + $6) - ($2 + $3) }
        END {
            b = median(base, n); w = median(wall, n); c = median(cpu, n)
            printf "%s (%d x %d runs, median of %d rounds):\n", label, par, runs, n
            printf "  per run without shared state: %.3f ms\n", b / runs * 1000
            printf "  added latency per run:        %.3f ms\n", w / runs * 1000
            printf "  added machine time per run:   %.3f ms (batch time / %d runs)\n", w / (runs * par) * 1000, runs * par
            printf "  added CPU per run:            %.3f ms (user + system)\n", c / (runs * par) * 1000
        }'
}

echo "patience: $BIN"
fs=$(df -T "$(dirname "$PATIENCE_STATE_DIR")" | awk 'NR==2 {print $2}')
echo "state dir: $PATIENCE_STATE_DIR ($fs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shared state: ${STATE_ARGS[*]}"
measure 1 | report "one process at a time" 1
measure "$WORKERS" | report "$WORKERS processes in parallel" "$WORKERS"
