#!/usr/bin/env bash
# What the Redis store of --state-url adds to a run, against the file store:
# `patience -a 1 --key bench --breaker 5 --rate-limit 100000/1s
# --max-concurrent 8 true` with no shared state, with the files (a state
# dir on the temp dir's filesystem), and with a redis-server of its own on
# loopback TCP and on a Unix socket. hyperfine (-N, no shell) takes the
# median of RUNS runs of each, after a warm-up.
#
#   bash tests/bench/fleet.sh                 (after `make build`)
#   RUNS=500 PATIENCE=path/to/patience bash tests/bench/fleet.sh
#
# Target: the Redis store on loopback adds at most 2 ms per run (against
# no shared state, so also against the files). Skips, with a line saying
# so, when redis-server or hyperfine is missing or patience was built
# without the redis feature.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -euo pipefail

BIN=${PATIENCE:-${CARGO_TARGET_DIR:-target}/release/patience}
RUNS=${RUNS:-300}
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
hyperfine -N --warmup 20 --runs "$RUNS" --style none --export-csv "$WORK/times.csv" \
    -n none "$BIN -a 1 true" \
    -n files "env PATIENCE_STATE_URL= $BIN $ARGS" \
    -n redis-tcp "env PATIENCE_STATE_URL=$TCP $BIN $ARGS" \
    -n redis-unix "env PATIENCE_STATE_URL=$UNIX $BIN $ARGS" >/dev/null
awk -F, -v target="$TARGET_MS" -v runs="$RUNS" '
    NR > 1 { median[$1] = $4 * 1000 }
    END {
        printf "median of %d runs each (ms):\n", runs
        printf "  no shared state:          %.3f\n", median["none"]
        printf "  file store:               %.3f (+%.3f)\n", median["files"], median["files"] - median["none"]
        printf "  redis, loopback TCP:      %.3f (+%.3f; +%.3f over the files)\n", median["redis-tcp"], median["redis-tcp"] - median["none"], median["redis-tcp"] - median["files"]
        printf "  redis, Unix socket:       %.3f (+%.3f; +%.3f over the files)\n", median["redis-unix"], median["redis-unix"] - median["none"], median["redis-unix"] - median["files"]
        added = median["redis-tcp"] - median["none"]
        if (added > target) { printf "FAIL: the Redis store on loopback adds %.3f ms (target <= %s ms)\n", added, target; exit 1 }
        printf "ok: the Redis store on loopback adds %.3f ms (target <= %s ms)\n", added, target
    }' "$WORK/times.csv"
