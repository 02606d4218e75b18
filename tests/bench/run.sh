#!/bin/sh
# `make bench`: runs every benchmark script in this directory, in turn.
set -eu
cd "$(dirname "$0")"
for script in ./*.sh; do
    [ "$script" = ./run.sh ] && continue
    echo "== ${script#./}"
    sh "$script"
done
