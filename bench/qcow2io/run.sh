#!/usr/bin/env bash
# qcow2 I/O: `blockd io` against `qemu-io` on the same images with the same
# commands. See docs/benchmarks.md ("qcow2 I/O: blockd io vs qemu-io").
#
# Both tools read the same command file on standard input (one request a
# line, `read -q`/`write -q` so that neither prints a report), open the
# image the same way (-f qcow2 -t writeback: page cache, write-back, no
# flush per write) and flush it when they close it. The wall time of the
# whole process is measured: start, open, every request, close.
#
# Benchmarks, each on a fresh 1 GiB qcow2 image (64 KiB clusters):
#   seq-write     1024 x 1 MiB writes, in order, on an empty image
#   seq-read      1024 x 1 MiB reads, in order, on a fully written image
#   rand-read     RAND_READS x 4 KiB reads at random 4 KiB-aligned offsets,
#                 on a fully written image
#   rand-write    RAND_WRITES x 4 KiB writes at random offsets on an empty
#                 image (every first write to a cluster allocates it)
#   rand-rewrite  the same writes on a fully written image (in place)
# Read benchmarks run on a page-cached image (it is read once before).
#
# For reference, `qemu-img bench` (QEMU's own block-layer benchmark: no
# command parsing, one buffer, queue depth 1 here) runs the same requests,
# except that its "random" offsets are a stride (100003 x 4 KiB modulo
# the image size), since it has no random mode.
#
# Each run does every benchmark with the three tools, rotating which one
# goes first; `sync` runs before every timed command so that the dirty
# pages of one step are not written back during the next.
#
# Usage: bench/qcow2io/run.sh            (RUNS=3 by default)
# Env:   RUNS, RAND_READS (50000), RAND_WRITES (20000), WORK (scratch dir,
#        default a new directory under /var/tmp), QEMU_IO (qemu-io),
#        QEMU_IMG (qemu-img), BLOCKD (a blockd binary; built if unset).
set -euo pipefail

RUNS=${RUNS:-3}
RAND_READS=${RAND_READS:-50000}
RAND_WRITES=${RAND_WRITES:-20000}
QEMU_IO=${QEMU_IO:-qemu-io}
QEMU_IMG=${QEMU_IMG:-qemu-img}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-$(mktemp -d /var/tmp/blockd-qcow2io.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -f "$WORK"/*.qcow2' EXIT

if [ -z "${BLOCKD:-}" ]; then
	BLOCKD=$WORK/blockd
	(cd "$ROOT" && go build -o "$BLOCKD" ./cmd/blockd)
fi
command -v "$QEMU_IO" >/dev/null || { echo "qemu-io not found" >&2; exit 1; }

# Command files: the same for both tools.
awk 'BEGIN { for (i = 0; i < 1024; i++) printf "write -q -P 1 %d 1M\n", i * 1048576 }' >"$WORK/seq-write.cmd"
awk 'BEGIN { for (i = 0; i < 1024; i++) printf "read -q %d 1M\n", i * 1048576 }' >"$WORK/seq-read.cmd"
awk -v n="$RAND_READS" 'BEGIN { srand(1); for (i = 0; i < n; i++) printf "read -q %d 4k\n", int(rand() * 262144) * 4096 }' >"$WORK/rand-read.cmd"
awk -v n="$RAND_WRITES" 'BEGIN { srand(2); for (i = 0; i < n; i++) printf "write -q -P 2 %d 4k\n", int(rand() * 262144) * 4096 }' >"$WORK/rand-write.cmd"
cp "$WORK/rand-write.cmd" "$WORK/rand-rewrite.cmd"

empty() { rm -f "$1"; "$QEMU_IMG" create -q -f qcow2 "$1" 1G; }
filled() {
	empty "$1"
	"$QEMU_IO" -f qcow2 -t writeback -c 'write -q -P 3 0 1G' "$1" >/dev/null
	cat "$1" >/dev/null
}

STRIDE=$((4096 * 100003))
# bench_args BENCH: the qemu-img bench options doing BENCH's requests.
bench_args() {
	case $1 in
	seq-write) echo "-w -c 1024 -s 1M -S 1M --pattern=1" ;;
	seq-read) echo "-c 1024 -s 1M -S 1M" ;;
	rand-read) echo "-c $RAND_READS -s 4k -S $STRIDE" ;;
	rand-write | rand-rewrite) echo "-w -c $RAND_WRITES -s 4k -S $STRIDE --pattern=2" ;;
	esac
}

# run TOOL BENCH IMAGE: prints the wall time in seconds.
run() {
	local tool=$1 bench=$2 image=$3 start end
	sync
	start=$(date +%s.%N)
	case $tool in
	qemu-io) "$QEMU_IO" -f qcow2 -t writeback "$image" <"$WORK/$bench.cmd" >/dev/null ;;
	blockd) "$BLOCKD" io -f qcow2 -t writeback "$image" <"$WORK/$bench.cmd" >/dev/null ;;
	qemu-img-bench) # shellcheck disable=SC2046
		"$QEMU_IMG" bench -d 1 -t writeback -f qcow2 $(bench_args "$bench") "$image" >/dev/null ;;
	esac
	end=$(date +%s.%N)
	awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

RESULTS=$WORK/results.txt
: >"$RESULTS"
for r in $(seq 1 "$RUNS"); do
	case $((r % 3)) in
	1) order="qemu-io blockd qemu-img-bench" ;;
	2) order="blockd qemu-img-bench qemu-io" ;;
	0) order="qemu-img-bench qemu-io blockd" ;;
	esac
	filled "$WORK/shared.qcow2" # the read benchmarks share one image
	for bench in seq-write seq-read rand-read rand-write rand-rewrite; do
		for tool in $order; do
			case $bench in
			seq-write | rand-write) empty "$WORK/w.qcow2"; image=$WORK/w.qcow2 ;;
			rand-rewrite) filled "$WORK/w.qcow2"; image=$WORK/w.qcow2 ;;
			*) image=$WORK/shared.qcow2 ;;
			esac
			t=$(run "$tool" "$bench" "$image")
			echo "$r $bench $tool $t" | tee -a "$RESULTS" >&2
			if [ "$bench" != seq-read ] && [ "$bench" != rand-read ]; then
				"$QEMU_IMG" check -q "$image" || { echo "qemu-img check failed after $tool $bench" >&2; exit 1; }
			fi
		done
	done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
echo "| benchmark | requests | qemu-io s | blockd io s | qemu-io / blockd io | qemu-img bench s | qemu-img bench / blockd io |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for bench in seq-write seq-read rand-read rand-write rand-rewrite; do
	q=$(awk -v b="$bench" '$2 == b && $3 == "qemu-io" { print $4 }' "$RESULTS" | median)
	b=$(awk -v b="$bench" '$2 == b && $3 == "blockd" { print $4 }' "$RESULTS" | median)
	qb=$(awk -v b="$bench" '$2 == b && $3 == "qemu-img-bench" { print $4 }' "$RESULTS" | median)
	n=$(wc -l <"$WORK/$bench.cmd")
	awk -v bench="$bench" -v n="$n" -v q="$q" -v b="$b" -v qb="$qb" \
		'BEGIN { printf "| %s | %d | %.3f | %.3f | %.2f | %.3f | %.2f |\n", bench, n, q, b, q / b, qb, qb / b }'
done
echo "(medians of $RUNS runs, wall time of the whole process)"
echo
echo "raw results: $RESULTS" >&2
