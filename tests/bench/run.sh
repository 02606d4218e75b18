#!/bin/sh
# make bench: every benchmark script in this directory, in turn.
set -eu
dir=$(dirname "$0")
for script in "$dir"/*.sh; do
    [ "$(basename "$script")" = run.sh ] && continue
    echo "#### $(basename "$script")"
    sh "$script"
done
