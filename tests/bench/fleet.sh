#!/usr/bin/env bash
# What the Redis store of --state-url adds to a run, against the file store:
# `patience -a 1 --key bench --breaker 5 --rate-limit 100000/1s
# --max-concurrent 8 true` with no shared state, with the files (a state
# dir on the temp dir's filesystem), and with a redis-server of its own on
# loopback TCP and on a Unix socket. hyperfine (-N, no shell; every
# command through env(1) alike) takes the median of RUNS runs of each, in
# ROUNDS alternating rounds.
#
#   bash tests/bench/fleet.sh                 (after `make build`)
#   ROUNDS=20 RUNS=100 PATIENCE=path/to/patience bash tests/bench/fleet.sh
#
# Target: a run with the Redis store on loopback TCP takes at most 2 ms
# longer than with the file store (the median of the per-round differences). Skips, with a line saying
# so, when redis-server or hyperfine is missing or patience was built
# without the redis feature.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -euo pipefail

BIN=${PATIENCE:-${CARGO_TARGET_DIR:-target}/release/patience}
RUNS=${RUNS:-40}
ROUNDS=${ROUNDS:-10}
TARGET_MS=${TARGET_MS:-2}
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for tool in redis-server hyperfine; do
    command -v "$tool" >/dev/null 2>&1 || { echo "fleet.sh: skipped: needs $tool"; exit 0; }
done
if "$BIN" --no-config --state-url unix:///nonexistent --dry-run true 2>&1 | grep -q 'without Redis support'; then
    echo "fleet.sh: skipped: $BIN was built without the redis feature"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench-fleet.XXXXXX")
SERVER=""
cleanup() {
    [ -z "$SERVER" ] || { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --unixsocket "$WORK/r.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do [ -S "$WORK/r.sock" ] && break; sleep 0.05; done
[ -S "$WORK/r.sock" ] || { echo "redis-server did not start:" >&2; cat "$WORK/redis.log" >&2; exit 1; }

export PATIENCE_STATE_DIR=$WORK/state PATIENCE_SOCKET=$WORK/no-daemon.sock PATIENCE_CONFIG=/dev/null
unset PATIENCE_STATE_URL
ARGS="-a 1 --key bench --breaker 5 --rate-limit 100000/1s --max-concurrent 8 true"
TCP="redis://127.0.0.1:$PORT/0"
UNIX="unix://$WORK/r.sock"
# Each must run clean: a warning would mean a run that failed open.
for url in "" "$TCP" "$UNIX"; do
    out=$(env PATIENCE_STATE_URL="$url" "$BIN" $ARGS 2>&1)
    [ -z "$out" ] || { echo "fleet.sh: a run said: $out" >&2; exit 1; }
done

echo "patience: $BIN"
echo "redis: $(redis-server --version | cut -d' ' -f3); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shared state: $ARGS"
# Rounds of the four, alternating, so that load from other processes on the
# machine hits them alike; the median of the per-round differences is the
# figure (as resilience.sh does).
: > "$WORK/rounds"
for ((r = 0; r < ROUNDS; r++)); do
    hyperfine -N --warmup 5 --runs "$RUNS" --style none --export-csv "$WORK/round.csv" \
        -n none "env PATIENCE_STATE_URL= $BIN -a 1 true" \
        -n files "env PATIENCE_STATE_URL= $BIN $ARGS" \
        -n redis-tcp "env PATIENCE_STATE_URL=$TCP $BIN $ARGS" \
        -n redis-unix "env PATIENCE_STATE_URL=$UNIX $BIN $ARGS" >/dev/null 2>&1
    # Per command: median wall time, mean user + system time (ms).
    awk -F, 'NR > 1 { printf "%s %s ", $4 * 1000, ($5 + $6) * 1000 } END { print "" }' "$WORK/round.csv" >>"$WORK/rounds"
done
awk -v target="$TARGET_MS" -v runs="$RUNS" '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
        return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    {
        n++; none[n] = $1; files[n] = $3 - $1; tcp[n] = $5 - $1; unix[n] = $7 - $1; tf[n] = $5 - $3; uf[n] = $7 - $3
        cnone[n] = $2; cfiles[n] = $4 - $2; ctcp[n] = $6 - $2; cunix[n] = $8 - $2
    }
    END {
        printf "median over %d rounds of %d runs each (ms; wall is the median of a round, CPU its mean user + system):\n", n, runs
        printf "  no shared state:          wall %.3f, CPU %.3f\n", median(none, n), median(cnone, n)
        printf "  file store adds:          wall %.3f, CPU %.3f\n", median(files, n), median(cfiles, n)
        printf "  redis, loopback TCP adds: wall %.3f (%+.3f against the files), CPU %.3f\n", median(tcp, n), median(tf, n), median(ctcp, n)
        printf "  redis, Unix socket adds:  wall %.3f (%+.3f against the files), CPU %.3f\n", median(unix, n), median(uf, n), median(cunix, n)
        added = median(tf, n)
        if (added > target) { printf "FAIL: the Redis store on loopback adds %.3f ms to a run against the file store (target <= %s ms)\n", added, target; exit 1 }
        printf "ok: the Redis store on loopback adds %.3f ms to a run against the file store (target <= %s ms)\n", added, target
    }' "$WORK/rounds"
