#!/bin/sh
# Throttle rates of blockd and qemu-storage-daemon against their limits.
set -e
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-bench-throttle ./cmd/blockd
exec python3 bench/throttle/bench.py /tmp/blockd-bench-throttle "$@"
