package qcow2

import (
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompatWriteOrder records the writes of compat amends on images
// qemu-img and qemu-io made (zero clusters, one of them preallocated
// and shared with a snapshot, a persistent bitmap, a backing file) and
// judges every state a kill or a power loss can leave: qemu-img check
// finds nothing but leaks and the guest sees what it saw before. The
// writes inside the old image are the header, once, between flushes,
// and before it only zeroes (preallocated zero clusters zeroed in
// place).
func TestCompatWriteOrder(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	qemuIO(t, base, "write -P 0x77 0 1M")
	for _, c := range []struct {
		name    string
		create  string // qemu-img create -o
		backed  bool
		version int
		// fill replaces the usual writes and snapshot.
		fill func(t *testing.T, p string)
		// prep changes the opened image before the recorded amend.
		prep func(t *testing.T, img *Image)
	}{
		{name: "downgrade over a backing file", create: "cluster_size=4k", backed: true, version: 2},
		{name: "downgrade", create: "cluster_size=4k", version: 2},
		{name: "downgrade, a snapshot's zero entry on the active layer's data", create: "cluster_size=4k", version: 2,
			fill: func(t *testing.T, p string) {
				qemuIO(t, p, "write -P 1 0 4k")
				qemu(t, "qemu-img", "snapshot", "-c", "s1", p)
				qemuIO(t, p, "write -z 0 4k")
				qemu(t, "qemu-img", "snapshot", "-c", "s2", p)
				qemuIO(t, p, "write -P 2 0 4k")
				qemu(t, "qemu-img", "snapshot", "-a", "s1", p)
				// Left: the active layer's data, also s2's preallocated
				// zero cluster; dropping s2's use gives it COPIED.
				qemu(t, "qemu-img", "snapshot", "-d", "s1", p)
			}},
		{name: "upgrade", create: "cluster_size=4k,compat=0.10", version: 3},
		{name: "upgrade rewriting the snapshot table", create: "cluster_size=4k,compat=0.10", version: 3,
			prep: func(t *testing.T, img *Image) {
				// A snapshot table as QEMU before 1.1 wrote it: no extra data.
				snaps := slices.Clone(img.snaps)
				for i := range snaps {
					snaps[i].extra = nil
				}
				sw, err := img.beginSwitch()
				if err == nil {
					err = sw.commit(img.l1, int64(img.hdr.l1TableOffset), snaps)
				}
				if err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			p := filepath.Join(dir, "image.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", c.create}
			if c.backed {
				args = append(args, "-b", "base.qcow2", "-F", "qcow2")
			}
			qemu(t, "qemu-img", append(args, p, "1M")...)
			if c.fill != nil {
				c.fill(t, p)
			} else {
				qemuIO(t, p, "write -P 1 0 256k", "write -z 256k 64k", "write -P 2 512k 8k", "write -z 512k 4k")
				qemu(t, "qemu-img", "snapshot", "-c", "s1", p)
				qemuIO(t, p, "write -z 0 4k", "write -P 3 64k 4k", "write -z 768k 16k")
			}
			if c.version == 2 {
				qemu(t, "qemu-img", "bitmap", "--add", p, "b0")
			}
			dev, img := openRecording(t, p)
			if c.prep != nil {
				c.prep(t, img)
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			before := dev.bytes()
			orig := filepath.Join(dir, "orig.qcow2")
			if err := os.WriteFile(orig, before, 0o644); err != nil {
				t.Fatal(err)
			}
			dev.take()
			if err := img.AmendCompat(c.version); err != nil {
				t.Fatal(err)
			}
			ev := dev.take()
			judgeCompatShape(t, c.name, before, ev, img.g.clusterSize)
			judgeStates(t, dir, c.name, before, ev, rand.New(rand.NewSource(1)), func(path string) string {
				out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", orig, path).CombinedOutput()
				if err != nil {
					return "qemu-img compare: " + err.Error() + "\n" + string(out)
				}
				return ""
			})
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, dev.bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := img.Info().Version; got != c.version {
				t.Fatalf("version %d after the amend, want %d", got, c.version)
			}
			qemuCompare(t, orig, "qcow2", p, "qcow2")
			c2 := qemuImgCheck(t, p)
			if c2.Corruptions != 0 || c2.CheckErrors != 0 {
				t.Fatalf("qemu-img check after the amend:\n%s", c2.Out)
			}
		})
	}
}

// judgeCompatShape holds a compat amend to its write order: the only
// writes inside the old image are one whole-cluster header write with a
// flush before and after it, and, before it, writes of zeroes.
func judgeCompatShape(t *testing.T, name string, base []byte, ev []devEvent, clusterSize int64) {
	t.Helper()
	headers := 0
	for i, e := range ev {
		if e.flush || e.off >= int64(len(base)) {
			continue
		}
		if e.off == 0 && int64(len(e.data)) == clusterSize {
			if i == 0 || !ev[i-1].flush || i+1 == len(ev) || !ev[i+1].flush {
				t.Fatalf("%s: the header write (event %d) is not between flushes", name, i)
			}
			headers++
			continue
		}
		if headers > 0 || slices.ContainsFunc(e.data, func(b byte) bool { return b != 0 }) {
			t.Fatalf("%s: write %d of %d bytes at %#x lands inside the old image and is neither the header nor zeroes before it",
				name, i, len(e.data), e.off)
		}
	}
	if headers != 1 {
		t.Fatalf("%s: %d header writes, want 1", name, headers)
	}
}
