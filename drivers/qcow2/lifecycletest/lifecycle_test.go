package lifecycletest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"blockd/drivers/qcow2"
)

// TestResizeAgainstQemu resizes copies of one image with the engine and
// with qemu-img resize through the same sizes (growing the L1 table past
// its first cluster, shrinking into and below written data, unaligned
// sizes) and checks after each step that both images hold the same data
// and pass qemu-img check without even a leak. One difference is
// deliberate (docs/differences.md): growing zeroes the rest of the old
// last cluster, where QEMU shows what a shrink left there; the QEMU copy
// gets those bytes zeroed by hand.
func TestResizeAgainstQemu(t *testing.T) {
	requireQemu(t)
	configs := []struct{ name, opts string }{
		{"default", "cluster_size=65536"},
		{"small-clusters-refcount1", "cluster_size=4096,refcount_bits=1"},
		{"extl2", "cluster_size=65536,extended_l2=on"},
		{"v2", "compat=0.10,cluster_size=4096"},
	}
	sizes := []int64{64 << 20, 3 << 20, 300 << 20, 9<<20 + 512, 512, 5 << 20}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
			qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", c.opts, ours, "16M")
			qemuIO(t, ours, "write -P 0x11 0 1M", "write -P 0x22 4M 64k", "write -P 0x33 10M 3M",
				"write -z 14M 1M", "write -P 0x44 16380k 4k")
			copyFile(t, ours, theirs)
			old := int64(16 << 20)
			for _, size := range sizes {
				img, fd := openImage(t, ours, qcow2.OpenOptions{})
				if err := img.Truncate(size); err != nil {
					t.Fatalf("Truncate(%d): %v", size, err)
				}
				if got, _ := img.Size(); got != size {
					t.Fatalf("Size after Truncate(%d) = %d", size, got)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				fd.Close()
				qemu(t, "qemu-img", "resize", "-q", "--shrink", "-f", "qcow2", theirs, strconv.FormatInt(size, 10))
				if tail := roundUp(old, clusterSize(t, img)); size > old && tail > old {
					qemuIO(t, theirs, fmt.Sprintf("write -z %d %d", old, min(tail, size)-old))
				}
				old = size
				if a, b := fileSize(t, ours), fileSize(t, theirs); a != b {
					t.Errorf("after resize to %d: file is %d bytes, QEMU's %d", size, a, b)
				}
				assertClean(t, ours)
				qemuCompare(t, ours, "qcow2", theirs, "qcow2")
				// Data written after the resize lands in the right place.
				if size >= 2<<20 {
					qemuIO(t, ours, fmt.Sprintf("write -P 0x55 %d 64k", size-64<<10))
					qemuIO(t, theirs, fmt.Sprintf("write -P 0x55 %d 64k", size-64<<10))
				}
			}
		})
	}
}

// TestShrinkKeepsSnapshotData shrinks an image whose L2 tables and data
// are shared with an internal snapshot made by QEMU: the snapshot's data
// must survive (only the active layer's references go) and the image
// must stay clean.
func TestShrinkKeepsSnapshotData(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.qcow2")
	qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
	qemuIO(t, p, "write -P 0x61 0 8M")
	qemu(t, "qemu-img", "snapshot", "-c", "before", p)
	img, fd := openImage(t, p, qcow2.OpenOptions{})
	if err := img.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	assertClean(t, p)
	qemu(t, "qemu-img", "snapshot", "-a", "before", p)
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "read -P 0x61 0 8M", p).CombinedOutput()
	if err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("snapshot data after shrink: %v\n%s", err, out)
	}
	assertClean(t, p)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// snapshotRaw converts an internal snapshot to raw with qemu-img.
func snapshotRaw(t *testing.T, img, name string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "snap.raw")
	qemu(t, "qemu-img", "convert", "-U", "-l", "snapshot.name="+name, "-O", "raw", img, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInternalSnapshotsInterop: snapshots taken by the engine are listed
// and read by qemu-img while the active layer moves on; snapshots taken
// by qemu-img are deleted by the engine and vice versa; every step passes
// qemu-img check without even a leak.
func TestInternalSnapshotsInterop(t *testing.T) {
	requireQemu(t)
	for _, opts := range []string{"cluster_size=65536", "cluster_size=4096,refcount_bits=8", "compat=0.10", "extended_l2=on"} {
		t.Run(opts, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := filepath.Join(dir, "s.qcow2")
			qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "4M")
			qemuIO(t, p, "write -P 0x11 0 1M", "write -c -P 0x12 2M 64k", "write -z 3M 64k")
			qemu(t, "qemu-img", "snapshot", "-c", "q1", p)
			before := toRaw(t, p)

			img, fd := openImage(t, p, qcow2.OpenOptions{})
			info, err := img.CreateSnapshot("b1", 1700000000, 5, 0, qcow2.NoIcount)
			if err != nil {
				t.Fatal(err)
			}
			if info.ID != "2" || info.Name != "b1" || info.DiskSize != 4<<20 {
				t.Fatalf("created %+v", info)
			}
			// Overwrite part of what both snapshots share: COW must keep them.
			if err := img.WriteAt(bytes.Repeat([]byte{0x77}, 96<<10), 512<<10, 0); err != nil {
				t.Fatal(err)
			}
			if err := img.WriteZeroes(2<<20, 64<<10, 0); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			fd.Close()
			assertClean(t, p)
			if out := qemu(t, "qemu-img", "snapshot", "-l", p); !strings.Contains(out, "q1") || !strings.Contains(out, "b1") {
				t.Fatalf("qemu-img snapshot -l:\n%s", out)
			}
			for _, name := range []string{"q1", "b1"} {
				if got := snapshotRaw(t, p, name); !bytes.Equal(got, before) {
					t.Fatalf("snapshot %s: %s", name, firstDiff(got, before))
				}
			}

			// The engine deletes QEMU's snapshot, QEMU deletes the engine's.
			img, fd = openImage(t, p, qcow2.OpenOptions{})
			if _, err := img.DeleteSnapshot("", "nope"); err != qcow2.ErrSnapshotNotFound {
				t.Fatalf("deleting a missing snapshot: %v", err)
			}
			if _, err := img.DeleteSnapshot("", "q1"); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			fd.Close()
			assertClean(t, p)
			qemu(t, "qemu-img", "snapshot", "-d", "b1", p)
			assertClean(t, p)

			// With every snapshot gone, writes are in place again and the
			// clusters the snapshots alone held were freed.
			img, fd = openImage(t, p, qcow2.OpenOptions{})
			if n := len(img.Snapshots()); n != 0 {
				t.Fatalf("%d snapshots left", n)
			}
			if err := img.WriteAt(bytes.Repeat([]byte{0x78}, 4096), 0, 0); err != nil {
				t.Fatal(err)
			}
			img.Close()
			fd.Close()
			assertClean(t, p)
			out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "read -P 0x78 0 4k", "-c", "read -P 0x77 512k 96k", p).CombinedOutput()
			if err != nil || strings.Contains(string(out), "fail") {
				t.Fatalf("active data: %v\n%s", err, out)
			}
		})
	}
}
