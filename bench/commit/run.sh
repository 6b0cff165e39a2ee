#!/usr/bin/env bash
# Commit benchmark (see bench.py): builds blockd, then compares it with
# qemu-storage-daemon and qemu-img commit on the same images.
#   bench/commit/run.sh [--data 1G] [--base 2G] [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-bench ./cmd/blockd
exec python3 bench/commit/bench.py /tmp/blockd-bench "$@"
