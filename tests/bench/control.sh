#!/usr/bin/env bash
# The control side of a stack: `patiencectl status` round trip, `logs -f`
# latency from a service's write to the client, and the supervisor's RSS
# with 10 services whose 1000-line ring buffers are full.
#
#   bash tests/bench/control.sh            (after `make build`)
#   RUNS=200 PATIENCE=path/to/patience bash tests/bench/control.sh
#
# Round trip: hyperfine (when installed, else a shell loop) times
# `patience --ctl -s SOCK status`, a whole client process, against
# `patience --version`, the same process doing nothing: the difference is
# the request. Latency: a service prints its clock (`date +%s%N`) every
# 50 ms; a follower (python3, one JSON-RPC connection) takes its own clock
# as each line arrives. Targets: round trip median <= 5 ms, latency median
# <= 20 ms.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -euo pipefail

BIN=${PATIENCE:-${CARGO_TARGET_DIR:-target}/release/patience}
RUNS=${RUNS:-100}
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "no python3 for the follower" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench.XXXXXX")
SUP=
cleanup() {
    [ -n "$SUP" ] && kill -KILL "$SUP" 2>/dev/null && wait "$SUP" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export PATIENCE_STATE_DIR=$WORK/state PATIENCE_SOCKET=$WORK/no-daemon.sock PATIENCE_CONFIG=/dev/null
SOCK=$WORK/c.sock
{
    echo "[supervisor]"
    echo "control-socket = \"$SOCK\""
    for i in 0 1 2 3 4 5 6 7 8 9; do
        echo "[service.s$i]"
        # 1000 lines of 100 bytes fill the ring, then it idles.
        echo "command = [\"sh\", \"-c\", \"i=0; while [ \$i -lt 1000 ]; do printf '%099d\\\\n' \$i; i=\$((i+1)); done; exec sleep 100000\"]"
        echo 'restart = "always"'
        echo 'forever = true'
    done
    echo "[service.clock]"
    echo "command = [\"sh\", \"-c\", \"while :; do date +%s%N; sleep 0.05; done\"]"
    echo 'restart = "always"'
    echo 'forever = true'
} > "$WORK/services.toml"
"$BIN" --no-config --services "$WORK/services.toml" > /dev/null 2>&1 &
SUP=$!
for _ in $(seq 200); do "$BIN" --ctl -s "$SOCK" status > /dev/null 2>&1 && break; sleep 0.05; done
sleep 2

echo "status round trip (${RUNS} runs):"
if command -v hyperfine > /dev/null; then
    hyperfine -N -w 10 -r "$RUNS" --export-json "$WORK/h.json" \
        "$BIN --version" "$BIN --ctl -s $SOCK status" > /dev/null
    python3 - "$WORK/h.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base, st = r[0]["median"] * 1000, r[1]["median"] * 1000
print(f"  patience --version        median {base:.2f} ms")
print(f"  patiencectl status        median {st:.2f} ms  (the request: {st - base:.2f} ms; target <= 5 ms)")
PY
else
    python3 - "$BIN" "$SOCK" "$RUNS" <<'PY'
import subprocess, sys, time, statistics
b, s, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = []
for _ in range(n):
    a = time.perf_counter(); subprocess.run([b, "--ctl", "-s", s, "status"], stdout=subprocess.DEVNULL); t.append(time.perf_counter() - a)
print(f"  patiencectl status        median {statistics.median(t)*1000:.2f} ms (target <= 5 ms)")
PY
fi

echo "logs -f latency, service write to client:"
python3 - "$SOCK" <<'PY'
import json, socket, statistics, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"logs","params":{"services":["clock"],"lines":0,"follow":true}}\n')
f = s.makefile("rb")
f.readline()
lat = []
while len(lat) < 100:
    v = json.loads(f.readline())
    now = time.time_ns()
    lat.append((now - int(v["params"]["text"])) / 1e6)
lat.sort()
print(f"  median {statistics.median(lat):.2f} ms, p90 {lat[89]:.2f} ms, max {lat[-1]:.2f} ms (100 lines; target median <= 20 ms)")
PY

rss=$(awk '/^VmRSS/ {print $2}' /proc/$SUP/status)
lines=$("$BIN" --ctl -s "$SOCK" logs -n 100000 s0 | wc -l)
echo "supervisor RSS with 11 services, ring buffers full ($lines lines kept of s0): $((rss / 1024)).$(( (rss % 1024) * 10 / 1024 )) MB"
