#!/usr/bin/env bash
# Copy-job benchmark (see bench.py): builds blockd, then compares stream,
# mirror, backup and commit with qemu-storage-daemon on the same images.
#   bench/copyjobs/run.sh [--data 1G] [--runs 3] [--only stream,mirror]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)/blockd
go build -o "$bin" ./cmd/blockd
python3 bench/copyjobs/bench.py "$bin" "$@"
