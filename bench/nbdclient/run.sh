#!/usr/bin/env bash
# nbd client benchmark (see bench.py): builds blockd, then compares its
# nbd block driver with qemu-storage-daemon's against the same qemu-nbd.
#   bench/nbdclient/run.sh [--size 512M] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-nbdclient-bench ./cmd/blockd
exec python3 bench/nbdclient/bench.py /tmp/blockd-nbdclient-bench "$@"
