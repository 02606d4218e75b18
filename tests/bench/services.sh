#!/usr/bin/env bash
# `patience --services` (issue 14): what a stack costs beyond its commands.
#
#   bash tests/bench/services.sh                  (after `make build`)
#   RUNS=3 SIZE=64M PATIENCE=path/to/patience bash tests/bench/services.sh
#
# 1. memory: PSS (Pss of /proc/PID/smaps_rollup) of the supervisor plus the
#    shims of 10 idle services (`sleep`), the sleeps themselves not counted.
#    Target <= 15 MB.
# 2. start: from launching the stack to the moment a final service that
#    depends on all 10 (`ready`; they have no readiness check, so ready =
#    started) runs `date +%s%N`, minus the same for one plain
#    `patience -- sh -c 'date +%s%N'` (the commands' own time). Target
#    <= 50 ms (median).
# 3. output: SIZE bytes of 60-byte lines (`yes LINE | head -c SIZE`) from one
#    service, prefixed `out | ` by the supervisor, into `wc -c`, against the
#    same through one `cat` hop. Target >= 0.7x the cat hop (median).
# 4. shutdown: SIGTERM to a stack of 10 `sleep`s (which die at once) until
#    the supervisor has exited, minus the same for one plain
#    `patience -- sleep` (that exit's own time). Target <= 100 ms (median).
#
# Each figure is the median of RUNS runs, the runs of the two sides
# interleaved so that load on a shared machine falls on both; the best run
# is shown too. Exits 1 when a target is missed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@" # run.sh starts us with sh
set -eu # no pipefail: `yes | head` ends by SIGPIPE

cd "$(dirname "$0")/../.."
BIN=${PATIENCE:-${PATIENCE_BIN:-${CARGO_TARGET_DIR:-target}/release/patience}}
RUNS=${RUNS:-5}
SIZE=${SIZE:-256M}
N=10
[ -x "$BIN" ] || { echo "no $BIN: run 'make build' first" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patience-bench.XXXXXX")
SUP=""
cleanup() {
    if [ -n "$SUP" ]; then kill -KILL "$SUP" 2>/dev/null || true; wait "$SUP" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export PATIENCE_STATE_DIR=$WORK/state
export PATIENCE_SOCKET=$WORK/no-daemon.sock
export PATIENCE_CONFIG=/dev/null
export XDG_RUNTIME_DIR=$WORK/run
export NO_COLOR=1
mkdir -p "$WORK/run"

# Microseconds since the epoch, without a fork.
now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }

median() { sort -n | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
best() { sort -n | head -1; }
worst() { sort -n | tail -1; }

# idle_stack FILE MARKER: N services `sleep MARKER`, nothing else.
idle_stack() {
    : >"$1"
    for i in $(seq "$N"); do
        printf '[service.s%d]\ncommand = ["sleep", "%s"]\nkill-after = "5s"\n' "$i" "$2" >>"$1"
    done
}

# sleeps MARKER: how many `sleep MARKER` processes run.
sleeps() { ps -eo comm=,args= | awk -v m="sleep $1" '$1 == "sleep" && index($0, m) { n++ } END { print n + 0 }'; }

# up MARKER: waits (10 s at most) until all N sleeps run.
up() {
    local i
    for ((i = 0; i < 1000; i++)); do
        [ "$(sleeps "$1")" = "$N" ] && return 0
        sleep 0.01
    done
    echo "services.sh: the $N services did not start" >&2
    return 1
}

pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

echo "patience: $BIN"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $RUNS runs each (a shared machine: figures move with its load)"
fail=""

# ---- 1. memory ----
marker=1000.$$
idle_stack "$WORK/idle.toml" "$marker"
: >"$WORK/pss"
for ((r = 0; r < RUNS; r++)); do
    "$BIN" --services "$WORK/idle.toml" >/dev/null 2>&1 &
    SUP=$!
    up "$marker"
    sleep 0.3 # the shims settle (their threads started, nothing more to load)
    shims=$(ps -o pid= --ppid "$SUP")
    sup_kb=$(pss_kb "$SUP")
    shim_kb=0
    for p in $shims; do shim_kb=$((shim_kb + $(pss_kb "$p"))); done
    echo "$((sup_kb + shim_kb)) $sup_kb $shim_kb $(echo "$shims" | wc -w)" >>"$WORK/pss"
    kill -TERM "$SUP"
    wait "$SUP" || true
    SUP=""
done
awk -v n="$N" '{ t[NR] = $1; s[NR] = $2; h[NR] = $3; c = $4 } END {
    # median by total
    for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) if (t[j] < t[i]) { x = t[i]; t[i] = t[j]; t[j] = x; x = s[i]; s[i] = s[j]; s[j] = x; x = h[i]; h[i] = h[j]; h[j] = x }
    m = int((NR + 1) / 2)
    printf "memory: supervisor + %d shims: %.1f MB PSS (supervisor %.1f MB, shims %.1f MB, %.2f MB each; %d shims seen)\n", n, t[m] / 1024, s[m] / 1024, h[m] / 1024, h[m] / 1024 / n, c
}' "$WORK/pss"
pss_med=$(awk '{ print $1 }' "$WORK/pss" | median)
awk -v k="$pss_med" 'BEGIN { exit !(k / 1024 <= 15) }' || fail="$fail memory"

# ---- 2. start to all ready ----
marker=1001.$$
idle_stack "$WORK/start.toml" "$marker"
{
    printf '[supervisor]\nmain = "final"\n[service.final]\ncommand = ["sh", "-c", "date +%%s%%N > %s"]\ndepends-on = {' "$WORK/stamp"
    for i in $(seq "$N"); do printf '%s s%d = "ready"' "$([ "$i" = 1 ] || echo ,)" "$i"; done
    printf ' }\n'
} >>"$WORK/start.toml"
: >"$WORK/start-stack"
: >"$WORK/start-plain"
: >"$WORK/true"
: >"$WORK/parallel"
for ((r = 0; r < RUNS; r++)); do
    rm -f "$WORK/stamp"
    t0=$(now_us)
    "$BIN" --services "$WORK/start.toml" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    echo $(($(cat "$WORK/stamp") / 1000 - t0)) >>"$WORK/start-stack"
    rm -f "$WORK/stamp"
    t0=$(now_us)
    "$BIN" -q -- sh -c "date +%s%N > $WORK/stamp"
    echo $(($(cat "$WORK/stamp") / 1000 - t0)) >>"$WORK/start-plain"
    t0=$(now_us)
    "$BIN" -q -- true
    echo $(($(now_us) - t0)) >>"$WORK/true"
    # For scale: as many plain patience processes as the stack has shims,
    # started at once by the shell, until the last has run its command.
    rm -f "$WORK/stamps"
    t0=$(now_us)
    for i in $(seq $((N + 1))); do "$BIN" -q -- sh -c "date +%s%N >> $WORK/stamps" & done
    wait
    echo $(($(sort -n "$WORK/stamps" | tail -1) / 1000 - t0)) >>"$WORK/parallel"
done
s=$(median <"$WORK/start-stack")
p=$(median <"$WORK/start-plain")
awk -v s="$s" -v p="$p" -v sb="$(best <"$WORK/start-stack")" -v pb="$(best <"$WORK/start-plain")" \
    -v t="$(median <"$WORK/true")" -v q="$(median <"$WORK/parallel")" -v n="$N" 'BEGIN {
    printf "start: %d services ready and a dependent running: %.1f ms (best %.1f); one plain patience running the same command: %.1f ms (best %.1f); `patience -- true`: %.1f ms\n", n, s / 1000, sb / 1000, p / 1000, pb / 1000, t / 1000
    printf "start: for scale, %d plain patience started at once by the shell: %.1f ms\n", n + 1, q / 1000
    printf "start: beyond the commands'"'"' own time: %.1f ms (target <= 50 ms)\n", (s - p) / 1000
    exit !((s - p) / 1000 <= 50)
}' || fail="$fail start"

# ---- 3. prefixed output against a cat hop ----
line='some line of about sixty bytes, the kind a service logs ...'
printf '[service.out]\ncommand = ["sh", "-c", "yes %s | head -c %s"]\n' "'$line'" "$SIZE" >"$WORK/out.toml"
bytes=$(yes "$line" | head -c "$SIZE" | wc -c)
lines=$(yes "$line" | head -c "$SIZE" | wc -l)
# "out | " before each line; the last, cut by head mid-line, is written
# as a line of its own (a newline added).
if [ "$(yes "$line" | head -c "$SIZE" | tail -c 1 | od -An -c | tr -d ' ')" = '\n' ]; then
    want=$((bytes + lines * 6))
else
    want=$((bytes + (lines + 1) * 6 + 1))
fi
: >"$WORK/out-stack"
: >"$WORK/out-cat"
for ((r = 0; r < RUNS; r++)); do
    t0=$(now_us)
    got=$(yes "$line" | head -c "$SIZE" | cat | wc -c)
    echo $(($(now_us) - t0)) >>"$WORK/out-cat"
    [ "$got" = "$bytes" ] || { echo "cat hop: $got bytes, not $bytes" >&2; exit 1; }
    t0=$(now_us)
    got=$("$BIN" --services "$WORK/out.toml" | wc -c)
    echo $(($(now_us) - t0)) >>"$WORK/out-stack"
    [ "$got" = "$want" ] || { echo "services: $got bytes, not $want" >&2; exit 1; }
done
awk -v b="$bytes" -v s="$(median <"$WORK/out-stack")" -v c="$(median <"$WORK/out-cat")" \
    -v sb="$(best <"$WORK/out-stack")" -v cb="$(best <"$WORK/out-cat")" -v l="$lines" 'BEGIN {
    mib = b / 1048576
    printf "output: %d MiB in %d lines of %d bytes (median, best)\n", mib, l, b / l
    printf "output: cat hop:          %7.0f MiB/s  %7.0f MiB/s\n", mib / (c / 1e6), mib / (cb / 1e6)
    printf "output: prefixed by --services: %7.0f MiB/s  %7.0f MiB/s\n", mib / (s / 1e6), mib / (sb / 1e6)
    printf "output: ratio to the cat hop: %.2fx (target >= 0.7x)\n", c / s
    exit !(c / s >= 0.7)
}' || fail="$fail output"

# ---- 4. shutdown ----
marker=1002.$$
idle_stack "$WORK/stop.toml" "$marker"
: >"$WORK/stop-stack"
: >"$WORK/stop-plain"
for ((r = 0; r < RUNS; r++)); do
    "$BIN" --services "$WORK/stop.toml" >/dev/null 2>&1 &
    SUP=$!
    up "$marker"
    sleep 0.2
    t0=$(now_us)
    kill -TERM "$SUP"
    wait "$SUP" || true
    echo $(($(now_us) - t0)) >>"$WORK/stop-stack"
    SUP=""
    [ "$(sleeps "$marker")" = 0 ] || { echo "services.sh: sleeps survived the stop" >&2; exit 1; }
    "$BIN" -q -- sleep "$marker" 2>/dev/null &
    SUP=$!
    for ((i = 0; i < 1000; i++)); do [ "$(sleeps "$marker")" = 1 ] && break; sleep 0.01; done
    sleep 0.2
    t0=$(now_us)
    kill -TERM "$SUP"
    wait "$SUP" || true
    echo $(($(now_us) - t0)) >>"$WORK/stop-plain"
    SUP=""
done
awk -v s="$(median <"$WORK/stop-stack")" -v p="$(median <"$WORK/stop-plain")" \
    -v sw="$(worst <"$WORK/stop-stack")" -v n="$N" 'BEGIN {
    printf "shutdown: SIGTERM to exit, %d services: %.1f ms (worst %.1f); one plain patience: %.1f ms\n", n, s / 1000, sw / 1000, p / 1000
    printf "shutdown: beyond their own exit: %.1f ms (target <= 100 ms)\n", (s - p) / 1000
    exit !((s - p) / 1000 <= 100)
}' || fail="$fail shutdown"

if [ -n "$fail" ]; then
    echo "services.sh: missed:$fail" >&2
    exit 1
fi
echo "services.sh: every target met"
