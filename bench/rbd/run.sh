#!/usr/bin/env bash
# rbd benchmark (see bench.py): builds blockd, uses the cluster of
# tests/ceph (started here unless BLOCKD_CEPH_CONF names a running one,
# and then stopped again), and compares blockd's NBD export of an rbd
# image with qemu-storage-daemon's.
#   bench/rbd/run.sh [--size 256M] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o /tmp/blockd-rbd-bench ./cmd/blockd
conf=${BLOCKD_CEPH_CONF:-}
if [ -z "$conf" ]; then
  conf=$(tests/ceph/start.sh)
  trap tests/ceph/stop.sh EXIT
fi
python3 bench/rbd/bench.py /tmp/blockd-rbd-bench "$conf" "$@"
