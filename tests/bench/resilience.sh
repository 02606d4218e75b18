#!/bin/sh
# Added cost per run of the shared state (--key K --breaker 5
# --rate-limit 1000/1s --max-concurrent 8) against a run without it, with
# 8 processes running patience in parallel, each RUNS times in a row.
#
#   sh tests/bench/resilience.sh            (after `make build`)
#   RUNS=200 PATIENCE=path/to/patience sh tests/bench/resilience.sh
#
# Uses hyperfine (installed from Debian with apt-get if missing and
# possible), else a plain loop timed with date(1). Target: under 1 ms.
set -eu

BIN=${PATIENCE:-target/release/patience}
RUNS=${RUNS:-100}
WORKERS=8
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if ! command -v hyperfine >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq hyperfine >/dev/null 2>&1 || true
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
export PATIENCE_STATE_DIR="$WORK/state"
export PATIENCE_SOCKET="$WORK/no-daemon.sock"

# batch.sh MODE: WORKERS loops of RUNS runs each, in parallel.
cat >"$WORK/batch.sh" <<SCRIPT
#!/bin/sh
if [ "\$1" = state ]; then
    set -- --key bench --breaker 5 --rate-limit 1000/1s --max-concurrent $WORKERS
else
    set --
fi
w=0
while [ \$w -lt $WORKERS ]; do
    (
        n=0
        while [ \$n -lt $RUNS ]; do
            "$BIN" -a 1 "\$@" true || echo "patience exited \$?" >&2
            n=\$((n + 1))
        done
    ) &
    w=\$((w + 1))
done
wait
SCRIPT

echo "patience: $BIN"
echo "$WORKERS workers x $RUNS runs, state dir on $(df -T "$WORK" | awk 'NR==2 {print $2}')"

if command -v hyperfine >/dev/null 2>&1; then
    hyperfine --warmup 1 --runs "${BATCHES:-10}" --export-json "$WORK/h.json" \
        -n none "sh $WORK/batch.sh none" -n state "sh $WORK/batch.sh state" >&2
    # Mean batch times and CPU times (user + system) in seconds, from
    # hyperfine's JSON (one "mean", "user", "system" per command, in order).
    field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$WORK/h.json" | sed -n "$2p"; }
    none=$(field mean 1)
    state=$(field mean 2)
    cpu_none=$(awk -v u="$(field user 1)" -v s="$(field system 1)" 'BEGIN { print u + s }')
    cpu_state=$(awk -v u="$(field user 2)" -v s="$(field system 2)" 'BEGIN { print u + s }')
else
    now() { date +%s.%N; }
    sh "$WORK/batch.sh" none
    t0=$(now); sh "$WORK/batch.sh" none; t1=$(now)
    sh "$WORK/batch.sh" state; t2=$(now)
    none=$(echo "$t1 - $t0" | bc -l)
    state=$(echo "$t2 - $t1" | bc -l)
fi

awk -v none="$none" -v state="$state" -v runs="$RUNS" -v workers="$WORKERS" \
    -v cpu_none="${cpu_none:-}" -v cpu_state="${cpu_state:-}" 'BEGIN {
    lat_none = none / runs * 1000; lat_state = state / runs * 1000
    printf "per run, as seen by each of the %d parallel loops: %.3f ms without, %.3f ms with the shared state\n", workers, lat_none, lat_state
    printf "added latency per run: %.3f ms (target < 1 ms)\n", lat_state - lat_none
    printf "added machine time per run (batch time / %d runs): %.3f ms\n", runs * workers, (state - none) / (runs * workers) * 1000
    if (cpu_none != "")
        printf "added CPU time (user + system) per run: %.3f ms\n", (cpu_state - cpu_none) / (runs * workers) * 1000
}'
