#!/usr/bin/env bash
# Convert benchmark (see bench.py): builds blockd, then times
# `blockd img convert` against `qemu-img convert` on the same image.
#   bench/convert/run.sh [--size 2G] [--runs 7]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-bench ./cmd/blockd
exec python3 bench/convert/bench.py /tmp/blockd-bench "$@"
