#!/usr/bin/env bash
# luks benchmark (see bench.py): builds blockd, then compares its luks
# driver with qemu-storage-daemon's on the same image.
#   bench/luks/run.sh [--size 512M] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-luks-bench ./cmd/blockd
exec python3 bench/luks/bench.py /tmp/blockd-luks-bench "$@"
