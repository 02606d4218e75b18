#!/bin/sh
# make bench: every benchmark script in this directory, in turn, peers.sh
# first (its table goes to $CARGO_TARGET_DIR/bench.md, else target/bench.md).
# A script that misses its target does not stop the others; the run fails
# at the end, naming them.
set -u
dir=$(dirname "$0")
failed=""
for script in "$dir"/peers.sh "$dir"/executor.sh "$dir"/capture.sh "$dir"/daemon.sh "$dir"/resilience.sh "$dir"/slotwait.sh "$dir"/control.sh "$dir"/services.sh "$dir"/health.sh "$dir"/fleet.sh; do
    echo "#### $(basename "$script")"
    sh "$script" || failed="$failed $(basename "$script")"
done
for script in "$dir"/*.sh; do
    case " peers.sh executor.sh capture.sh daemon.sh resilience.sh slotwait.sh control.sh services.sh health.sh fleet.sh run.sh " in
        *" $(basename "$script") "*) ;;
        *) echo "run.sh: $script is not run; add it to the list" >&2; failed="$failed $(basename "$script")" ;;
    esac
done
if [ -n "$failed" ]; then
    echo "#### failed:$failed" >&2
    exit 1
fi
