#!/usr/bin/env bash
# NBD export benchmark (see bench.py): builds blockd, then compares its
# NBD export with qemu-storage-daemon's on the same qcow2 image.
#   bench/nbd/run.sh [--size 1G] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-nbd-bench ./cmd/blockd
exec python3 bench/nbd/bench.py /tmp/blockd-nbd-bench "$@"
