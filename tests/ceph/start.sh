#!/usr/bin/env bash
# Start a throw-away single-node Ceph cluster for the rbd tests: one
# monitor and one memstore OSD (no manager, no systemd), a pool "rbd"
# initialised for images. Everything lives in $BLOCKD_CEPH_DIR (default
# /tmp/blockd-ceph), which this script wipes first; clients use
# $BLOCKD_CEPH_DIR/ceph.conf, which it prints on success.
#
# The monitor listens on 127.0.0.1:3300 (msgr2 only, the port is fixed),
# so only one such cluster runs on a machine at a time.
set -euo pipefail

dir=${BLOCKD_CEPH_DIR:-/tmp/blockd-ceph}
for tool in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "start.sh: $tool not installed (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common)" >&2
    exit 2
  fi
done
"$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir/mon.a" "$dir/osd.0" "$dir/run"
conf=$dir/ceph.conf
fsid=$(cat /proc/sys/kernel/random/uuid)

# Small and quiet: memstore keeps the data in the OSD's memory (capped at
# 1 GiB), one shard and few threads keep its CPU use down on a shared
# machine; clients get no admin socket (several clients would collide on
# one) and no log file.
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:3300
mon initial members = a
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
log file = $dir/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
mon osd initial require min compat client = mimic
ms async op threads = 1

[mon]
mon data = $dir/mon.\$id
admin socket = $dir/run/\$name.asok

[osd]
osd data = $dir/osd.\$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd op num shards = 1
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
admin socket = $dir/run/\$name.asok

[client]
admin socket =
log file =
CONF

ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
monmaptool --create --addv a '[v2:127.0.0.1:3300]' --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -c "$conf" -i a

c() { timeout 60 ceph -c "$conf" "$@"; }

osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_key=$(ceph-authtool --gen-print-key)
id=$(echo "{\"cephx_secret\": \"$osd_key\"}" | c osd new "$osd_uuid" -i -)
printf '[osd.%s]\n\tkey = %s\n' "$id" "$osd_key" >"$dir/osd.$id/keyring"
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" --keyring "$dir/osd.$id/keyring" 2>/dev/null
ceph-osd -c "$conf" -i "$id" --keyring "$dir/osd.$id/keyring"

c osd pool create rbd 8 >/dev/null 2>&1
# rbd pool init writes to the pool: it returns once the OSD is up and
# the placement groups are active.
for _ in $(seq 60); do
  if c osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1'; then break; fi
  sleep 0.5
done
timeout 60 rbd -c "$conf" pool init rbd
echo "$conf"
