#!/usr/bin/env bash
# Stop the cluster start.sh started (the OSD before the monitor, so that
# the OSD does not wait for a monitor that is gone) and remove its files.
set -u
dir=${BLOCKD_CEPH_DIR:-/tmp/blockd-ceph}
stop() {
  local pidfile=$dir/run/$1.pid
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null
}
stop osd.0
stop mon.a
rm -rf "$dir"
