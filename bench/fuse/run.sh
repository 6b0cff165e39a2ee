#!/usr/bin/env bash
# FUSE export benchmark: dd through blockd's FUSE export and through
# qemu-storage-daemon's (--export type=fuse) of the same kind of qcow2
# image, in the same run, alternating which goes first.
#   bench/fuse/run.sh [--size-mib 1024] [--runs 3]
# Both daemons get the same command line (--blockdev file + qcow2,
# --export type=fuse). Direct I/O (iflag/oflag=direct) keeps the page
# cache of the exported file out of the figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=1024 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v qemu-storage-daemon >/dev/null || { echo "qemu-storage-daemon is required" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "fusermount3 is required" >&2; exit 1; }
go build -o /tmp/blockd-bench ./cmd/blockd
work=$(mktemp -d /var/tmp/fusebench.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  fusermount3 -u -z "$work/mp" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
touch "$work/mp"

# start DAEMON IMAGE: exports IMAGE on $work/mp, writable.
start() {
  local before
  before=$(stat -c %d "$work/mp")
  local bin=qemu-storage-daemon
  [ "$1" = blockd ] && bin=/tmp/blockd-bench
  "$bin" --chardev socket,id=m,path="$work/qmp.sock",server=on,wait=off --monitor chardev=m \
    --blockdev file,node-name=f,filename="$2" --blockdev qcow2,node-name=q,file=f \
    --export type=fuse,id=e,node-name=q,mountpoint="$work/mp",writable=on >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [ "$(stat -c %d "$work/mp")" != "$before" ] && return 0
    sleep 0.05
  done
  echo "$1 did not mount" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# MiB/s of one dd run (dd's own figure, converted).
ddrate() {
  dd "$@" 2>&1 | awk '/copied/ { v=$(NF-1); u=$NF;
    if (u=="GB/s") v*=1000; else if (u=="kB/s") v/=1000; else if (u=="B/s") v/=1e6;
    printf "%.1f\n", v*1e6/1048576 }'
}

small=$(( size / 16 ))
declare -A res
tests=(seqwrite seqread randwrite4k randread4k)
for r in $(seq "$runs"); do
  order="blockd qsd"; [ $((r % 2)) = 0 ] && order="qsd blockd"
  for d in $order; do
    img="$work/$d.qcow2"
    rm -f "$img"; qemu-img create -q -f qcow2 "$img" "${size}M"
    start "$d" "$img"
    res[$d,seqwrite]+="$(ddrate if=/dev/zero of="$work/mp" bs=1M count="$size" oflag=direct conv=notrunc) "
    res[$d,seqread]+="$(ddrate if="$work/mp" of=/dev/null bs=1M count="$size" iflag=direct) "
    res[$d,randwrite4k]+="$(ddrate if=/dev/zero of="$work/mp" bs=4k count=$(( small * 256 )) oflag=direct conv=notrunc) "
    res[$d,randread4k]+="$(ddrate if="$work/mp" of=/dev/null bs=4k count=$(( small * 256 )) iflag=direct) "
    stop
    qemu-img check -q "$img" || { echo "qemu-img check failed on $d's image" >&2; exit 1; }
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| dd through the FUSE export | blockd MiB/s | qemu-storage-daemon MiB/s | blockd / QSD |\n|---|---:|---:|---:|\n'
declare -A names=([seqwrite]="write ${size} MiB, bs=1M, oflag=direct" [seqread]="read ${size} MiB, bs=1M, iflag=direct"
       [randwrite4k]="write ${small} MiB, bs=4k, oflag=direct" [randread4k]="read ${small} MiB, bs=4k, iflag=direct")
for t in "${tests[@]}"; do
  b=$(echo "${res[blockd,$t]}" | median); q=$(echo "${res[qsd,$t]}" | median)
  printf '| %s | %s | %s | %.2f |\n' "${names[$t]}" "$b" "$q" "$(echo "$b / $q" | bc -l)"
done
echo "(median of $runs runs; all runs: $(for t in "${tests[@]}"; do echo -n "$t blockd[${res[blockd,$t]}] qsd[${res[qsd,$t]}] "; done))"
