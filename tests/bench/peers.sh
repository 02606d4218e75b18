#!/bin/sh
# patience against the tools a user would otherwise pick, in one run, each
# pair interleaved by the harness (A B A B ...) so that a drift in machine
# speed hits both alike:
#   GNU timeout       start-up overhead, timeout precision, kill-after
#   Debian's retry    a retry loop: 5 tries of `false`, no delay
#   moreutils chronic held output, on success and on failure
#   util-linux flock  a concurrency limit of 1 (`flock -n`)
# Peers missing here are installed from Debian (as root). Prints a table of
# medians, ratios (patience / peer) and peak RSS, and writes it to OUT
# (default $CARGO_TARGET_DIR/bench.md, else target/bench.md).
#
#   sh tests/bench/peers.sh             (RUNS=50 SLOW_RUNS=5 for a quick look)
set -eu
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:-target}
RUNS=${RUNS:-200}          # each fast command, per pair
SLOW_RUNS=${SLOW_RUNS:-20} # each command that waits for a timeout
OUT=${OUT:-$T/bench.md}
P=$T/release/patience
[ -x "$P" ] || cargo build --release --locked --quiet
cargo build --release --locked --quiet --example bench-harness
H=$T/release/examples/bench-harness

# need COMMAND PACKAGE: install PACKAGE from Debian if COMMAND is missing.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "peers.sh: $1 is missing (apt-get install $2, as root)" >&2
        exit 1
    fi
    echo "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
need timeout coreutils
need retry retry
need chronic moreutils
need flock util-linux
need /usr/bin/time time

tmp=$(mktemp -d "${TMPDIR:-/tmp}/patience-peers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
export PATIENCE_STATE_DIR="$tmp/state" PATIENCE_SOCKET="$tmp/no-daemon.sock" PATIENCE_CONFIG=/dev/null
# A command that ignores SIGTERM (and so does its sleep), for kill-after.
printf '#!/bin/sh\ntrap "" TERM\nsleep 5\n' >"$tmp/stubborn"
# A command that prints 10,000 lines and fails, for held output.
printf '#!/bin/sh\nseq 10000\nexit 1\n' >"$tmp/noisy-fail"
chmod +x "$tmp/stubborn" "$tmp/noisy-fail"
TRUE=$(command -v true)

# rss COMMAND...: the largest peak RSS (KiB) of 3 runs.
rss() {
    max=0
    for _ in 1 2 3; do
        r=$(/usr/bin/time -f %M -o "$tmp/rss" "$@" >/dev/null 2>&1 || true; tail -1 "$tmp/rss")
        [ "$r" -gt "$max" ] && max=$r
    done
    echo "$max"
}

: >"$tmp/rows"
# pair WHAT RUNS PEER 'patience command' 'peer command': one row of the table.
pair() {
    what=$1 runs=$2 peer=$3 pcmd=$4 qcmd=$5
    echo "== $what"
    rm -f "$tmp/record"
    BENCH_RECORD="$tmp/record" "$H" "$runs" "patience=$pcmd" "$peer=$qcmd"
    pm=$(sed -n '1s/.*\t//p' "$tmp/record")
    qm=$(sed -n '2s/.*\t//p' "$tmp/record")
    # shellcheck disable=SC2086 # the commands are word lists on purpose
    prss=$(rss $pcmd)
    # shellcheck disable=SC2086
    qrss=$(rss $qcmd)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$what" "$(echo "$pcmd" | sed "s|^$P|patience|; s|$tmp/||g")" \
        "$(echo "$qcmd" | sed "s|$tmp/||g")" "$pm" "$qm" "$prss" "$qrss" >>"$tmp/rows"
}

pair "start-up, 10 s limit" "$RUNS" timeout "$P -t 10s -- $TRUE" "timeout 10 $TRUE"
pair "timeout 0.2 s (sleep 5)" "$SLOW_RUNS" timeout "$P -a 1 -t 0.2s -- sleep 5" "timeout 0.2 sleep 5"
pair "kill-after 0.2 s (TERM ignored)" "$SLOW_RUNS" timeout \
    "$P -a 1 -t 0.2s -k 0.2s -- $tmp/stubborn" "timeout -k 0.2 0.2 $tmp/stubborn"
pair "retry loop, 5 tries, no delay" "$RUNS" retry "$P -a 5 -d 0 -- false" "retry --times=5 --delay=0 -- false"
pair "held output, success (seq 100000)" "$RUNS" chronic "$P --hold-output -a 1 -- seq 100000" "chronic seq 100000"
pair "held output, failure (10,000 lines)" "$RUNS" chronic \
    "$P --hold-output -a 1 -- $tmp/noisy-fail" "chronic $tmp/noisy-fail"
pair "concurrency limit 1" "$RUNS" flock "$P --max-concurrent 1 --key bench -- $TRUE" "flock -n $tmp/lock $TRUE"
echo "== baseline"
rm -f "$tmp/record"
BENCH_RECORD="$tmp/record" "$H" "$RUNS" "true=$TRUE"
base=$(sed -n '1s/.*\t//p' "$tmp/record")

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
    echo "patience $("$P" --version | cut -d' ' -f2) against its peers, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs, ${cpu:-unknown CPU}, Linux $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "median wall time of $RUNS interleaved runs ($SLOW_RUNS for the timeouts); bare \`true\`: $base ms"
    echo
    echo "| what | patience | peer | patience ms | peer ms | patience / peer | peak RSS KiB (patience / peer) |"
    echo "|---|---|---|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | `%s` | `%s` | %.2f | %.2f | %.2f | %d / %d |\n", $1, $2, $3, $4, $5, $4 / $5, $6, $7 }' "$tmp/rows"
} >"$tmp/table"
mkdir -p "$(dirname "$OUT")"
cp "$tmp/table" "$OUT"
echo
cat "$OUT"
echo
echo "(written to $OUT)"
