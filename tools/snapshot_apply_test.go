package tools

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSnapshotApplyInterop: `blockd img snapshot -a` reverts to snapshots
// qemu-img made, qemu-img reverts to snapshots blockd made, a revert
// also restores the size the image had, and the texts for a missing
// snapshot and a format without snapshots are qemu-img's.
func TestSnapshotApplyInterop(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	mustQemu(t, dir, "qemu-io", "-c", "write -P 0x11 0 1M", p)
	mustQemu(t, dir, "qemu-img", "snapshot", "-c", "q1", p)
	mustIO(t, p, "write -P 0x22 512k 1M", "write -P 0x33 3M 64k")
	mustImg(t, "snapshot", "-c", "b1", p)
	mustImg(t, "resize", "-q", p, "8M")
	mustIO(t, p, "write -P 0x44 6M 64k")
	mustImg(t, "snapshot", "-a", "q1", p)
	mustQemu(t, dir, "qemu-img", "check", p)
	if out := mustQemu(t, dir, "qemu-img", "info", p); !strings.Contains(out, "virtual size: 4 MiB") {
		t.Fatalf("the revert did not restore the size:\n%s", out)
	}
	mustQemu(t, dir, "qemu-io", "-c", "read -P 0x11 0 1M", "-c", "read -P 0 1M 3M", p)
	// By id, as qemu-img looks ids up first.
	mustQemu(t, dir, "qemu-img", "snapshot", "-a", "2", p)
	mustImg(t, "check", p)
	mustIO(t, p, "read -P 0x11 0 512k", "read -P 0x22 512k 1M", "read -P 0 1536k 1536k", "read -P 0x33 3M 64k")
	mustImg(t, "snapshot", "-a", "1", p)
	mustIO(t, p, "read -P 0x11 0 1M", "read -P 0 3M 64k")
	mustQemu(t, dir, "qemu-img", "check", p)
	for _, c := range []struct{ file, snap string }{{p, "nope"}} {
		want := qemuRun(dir, "qemu-img", "snapshot", "-a", c.snap, c.file)
		got := img(t, "snapshot", "-a", c.snap, c.file)
		if got.code != want.code || strings.TrimPrefix(got.err, "blockd img: ") != strings.TrimPrefix(want.err, "qemu-img: ") {
			t.Errorf("snapshot -a %s: %v\nqemu-img: %v", c.snap, got, want)
		}
	}
	raw := filepath.Join(dir, "r.raw")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", raw, "1M")
	// qemu-img snapshot has no -f: both probe, and warn first.
	want := qemuRun(dir, "qemu-img", "snapshot", "-a", "x", raw)
	got := img(t, "snapshot", "-a", "x", raw)
	last := func(s string) string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		return l[len(l)-1]
	}
	if got.code != want.code || strings.TrimPrefix(last(got.err), "blockd img: ") != strings.TrimPrefix(last(want.err), "qemu-img: ") {
		t.Errorf("snapshot -a on raw: %v\nqemu-img: %v", got, want)
	}
}

// snapListColumns is `qemu-img snapshot -l` without the columns that
// depend on the moment (date, VM clock): id, tag and VM state size.
var snapListLine = regexp.MustCompile(`^(\S+)\s+(\S+)\s+(\S+ \S+)\s`)

func snapListColumns(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if m := snapListLine.FindStringSubmatch(l); m != nil && m[1] != "ID" {
			fmt.Fprintf(&b, "%s %s %s\n", m[1], m[2], m[3])
		}
	}
	return b.String()
}

// TestSnapshotPropertyAgainstQemu runs random sequences of writes,
// resizes and snapshot creations, reverts and deletions on two images,
// one driven by blockd's tools and one by qemu-img and qemu-io, and
// requires after every step the same contents and size, the same
// snapshot list and a clean qemu-img check of blockd's image; at the end
// every remaining snapshot is reverted to, in blockd's image by qemu-img,
// and compared again.
func TestSnapshotPropertyAgainstQemu(t *testing.T) {
	requireQemu(t)
	seeds, steps := []int64{1, 2, 3}, 40
	if testing.Short() {
		seeds, steps = seeds[:1], 15
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			snapshotProperty(t, seed, steps)
		})
	}
}

func snapshotProperty(t *testing.T, seed int64, steps int) {
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", a, "1M")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", b, "1M")
	size := int64(1 << 20)
	var names []string
	next := 0
	var history []string
	for i := 0; i < steps; i++ {
		var op string
		switch r := rng.Intn(10); {
		case r < 4:
			off := rng.Int63n(size)
			n := 1 + rng.Int63n(min(size-off, 96<<10))
			op = fmt.Sprintf("write -P %d %d %d", 1+rng.Intn(250), off, n)
			mustIO(t, a, op)
			mustQemu(t, dir, "qemu-io", "-f", "qcow2", "-c", op, b)
		case r < 6 || len(names) == 0:
			next++
			name := fmt.Sprintf("s%d", next)
			op = "snapshot -c " + name
			mustImg(t, "snapshot", "-c", name, a)
			mustQemu(t, dir, "qemu-img", "snapshot", "-c", name, b)
			names = append(names, name)
		case r < 8:
			name := names[rng.Intn(len(names))]
			op = "snapshot -a " + name
			mustImg(t, "snapshot", "-a", name, a)
			mustQemu(t, dir, "qemu-img", "snapshot", "-a", name, b)
		case r < 9:
			k := rng.Intn(len(names))
			op = "snapshot -d " + names[k]
			mustImg(t, "snapshot", "-d", names[k], a)
			mustQemu(t, dir, "qemu-img", "snapshot", "-d", names[k], b)
			names = append(names[:k], names[k+1:]...)
		default:
			grow := int64(1+rng.Intn(4)) * 64 << 10
			op = fmt.Sprintf("resize +%d", grow)
			mustImg(t, "resize", "-q", a, fmt.Sprintf("+%d", grow))
			mustQemu(t, dir, "qemu-img", "resize", "-q", b, fmt.Sprintf("+%d", grow))
		}
		history = append(history, op)
		size = sameSnapshotImages(t, dir, a, b, history)
	}
	for _, name := range names {
		history = append(history, "qemu-img snapshot -a "+name+" on both")
		mustQemu(t, dir, "qemu-img", "snapshot", "-a", name, a)
		mustQemu(t, dir, "qemu-img", "snapshot", "-a", name, b)
		sameSnapshotImages(t, dir, a, b, history)
	}
}

// sameSnapshotImages compares the two images' contents, sizes and snapshot lists
// and checks a, returning the (common) virtual size.
func sameSnapshotImages(t *testing.T, dir, a, b string, history []string) int64 {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("after %s: %s", strings.Join(history, "; "), fmt.Sprintf(format, args...))
	}
	if r := qemuRun(dir, "qemu-img", "check", a); r.code != 0 {
		fail("qemu-img check of blockd's image: %s", r)
	}
	if r := qemuRun(dir, "qemu-img", "compare", "-s", "-f", "qcow2", "-F", "qcow2", a, b); r.code != 0 {
		fail("contents differ: %s", r)
	}
	la := snapListColumns(mustQemu(t, dir, "qemu-img", "snapshot", "-l", a))
	lb := snapListColumns(mustQemu(t, dir, "qemu-img", "snapshot", "-l", b))
	if la != lb {
		fail("snapshot lists differ:\nblockd:\n%s\nqemu-img:\n%s", la, lb)
	}
	var size int64
	for _, f := range []string{a, b} {
		out := mustQemu(t, dir, "qemu-img", "info", f)
		m := regexp.MustCompile(`virtual size: .* \((\d+) bytes\)`).FindStringSubmatch(out)
		if m == nil {
			fail("no size in %s", out)
		}
		var s int64
		fmt.Sscan(m[1], &s)
		if size != 0 && s != size {
			fail("sizes differ: %d and %d", size, s)
		}
		size = s
	}
	return size
}
