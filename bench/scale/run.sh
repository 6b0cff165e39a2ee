#!/usr/bin/env bash
# Graph scale benchmark (see bench.py): builds blockd, then compares it
# with qemu-storage-daemon on deep chains, many nodes and reopen.
#   bench/scale/run.sh [--depths 25,50,100,200,500] [--runs 3] [--nodes 10000] [--no-strace]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-bench-scale ./cmd/blockd
exec python3 bench/scale/bench.py /tmp/blockd-bench-scale "$@"
