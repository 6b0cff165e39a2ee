package copyonread_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"blockd/blockio"
	_ "blockd/drivers/copyonread"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	"blockd/internal/graphtest"
)

const mib = 1 << 20

// mkQcow2 creates a qcow2 image, optionally over a backing file, and
// writes pattern at each offset of writes (1 MiB each).
func mkQcow2(t *testing.T, path, backing string, pattern byte, writes ...int64) {
	mkQcow2With(t, qcow2.CreateOptions{}, path, backing, pattern, writes...)
}

func mkQcow2With(t *testing.T, o qcow2.CreateOptions, path, backing string, pattern byte, writes ...int64) {
	if err := file.Create(file.CreateOptions{Filename: path}); err != nil {
		t.Fatal(err)
	}
	f, err := file.Open(file.Options{Filename: path})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o.Size, o.BackingFile = 8*mib, backing
	if backing != "" {
		o.BackingFormat = "qcow2"
	}
	if err := qcow2.Create(f, o); err != nil {
		t.Fatal(err)
	}
	if len(writes) == 0 {
		return
	}
	img, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range writes {
		if err := img.WriteAt(bytes.Repeat([]byte{pattern}, mib), off, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

func allocated(t *testing.T, dev blockio.Device, off int64) bool {
	st, err := dev.BlockStatus(off, mib)
	if err != nil {
		t.Fatal(err)
	}
	return st.Flags&blockio.StatusAllocated != 0
}

// base (0xbb at 0 and 2 MiB) <- mid (0x33 at 1 MiB) <- top (0x77 at 3
// MiB). Reads through copy-on-read with bottom=mid return the chain's
// data and copy up what mid defines, but not what only base defines;
// without bottom, everything below top is copied up.
func TestCopyOnReadBottom(t *testing.T) {
	d := t.TempDir()
	base, mid, top := filepath.Join(d, "base.qcow2"), filepath.Join(d, "mid.qcow2"), filepath.Join(d, "top.qcow2")
	mkQcow2(t, base, "", 0xbb, 0, 2*mib)
	mkQcow2(t, mid, base, 0x33, 1*mib)
	mkQcow2(t, top, mid, 0x77, 3*mib)
	e := graphtest.New(t)
	e.Must(t, "blockdev-add", `{"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "filename": "`+top+`"},
		"backing": {"driver": "qcow2", "node-name": "mid", "file": {"driver": "file", "filename": "`+mid+`"}}}`)
	e.Must(t, "blockdev-add", `{"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": "mid"}`)
	cor, topIO := e.IO(t, "cor"), e.IO(t, "top")

	buf := make([]byte, 4*mib+4096)
	if err := cor.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	want := map[int64]byte{0: 0xbb, 1: 0x33, 2: 0xbb, 3: 0x77, 4: 0}
	for m, b := range want {
		if got := buf[m*mib]; got != b {
			t.Errorf("MiB %d reads %#x, want %#x", m, got, b)
		}
	}
	for m, wantAlloc := range map[int64]bool{0: false, 1: true, 2: false, 3: true, 4: false} {
		if got := allocated(t, topIO, m*mib); got != wantAlloc {
			t.Errorf("after reading with bottom=mid, top allocated at MiB %d: %v, want %v", m, got, wantAlloc)
		}
	}

	// A write through the filter lands in top and is read back; a new
	// filter without bottom copies up the rest.
	if err := cor.WriteAt(bytes.Repeat([]byte{0x99}, 4096), 2*mib, 0); err != nil {
		t.Fatal(err)
	}
	e.Must(t, "blockdev-del", `{"node-name": "cor"}`)
	e.Must(t, "blockdev-add", `{"driver": "copy-on-read", "node-name": "cor2", "file": "top"}`)
	cor2 := e.IO(t, "cor2")
	if err := cor2.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if buf[2*mib] != 0x99 || buf[2*mib+4096] != 0xbb || buf[0] != 0xbb {
		t.Fatalf("read %#x %#x %#x", buf[2*mib], buf[2*mib+4096], buf[0])
	}
	for m := int64(0); m < 4; m++ {
		if !allocated(t, topIO, m*mib) {
			t.Errorf("without bottom, MiB %d was not copied up", m)
		}
	}
	// What was copied is now top's own data: top alone reads it.
	if err := topIO.ReadAt(buf[:mib], 0); err != nil || buf[0] != 0xbb || buf[mib-1] != 0xbb {
		t.Fatalf("top's own data: %v %#x", err, buf[0])
	}
}

// A 512-byte read copies up the whole 64 KiB cluster around it, as
// QEMU's bdrv_co_do_copy_on_readv does: the cluster is allocated even
// with subclusters (extended L2), and a cluster that reads as zeroes is
// written as zeroes (a zero cluster, no data). What lies outside the
// cluster stays in the backing file.
func TestCopyUpRoundsToClusters(t *testing.T) {
	for _, c := range []struct {
		name       string
		extendedL2 bool
		pattern    byte
	}{{"data", false, 0x11}, {"subclusters", true, 0x11}, {"zeroes", false, 0}} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			base, top := filepath.Join(d, "base.qcow2"), filepath.Join(d, "top.qcow2")
			mkQcow2(t, base, "", c.pattern, 0)
			mkQcow2With(t, qcow2.CreateOptions{ExtendedL2: c.extendedL2}, top, base, 0)
			e := graphtest.New(t)
			e.Must(t, "blockdev-add", `{"driver": "copy-on-read", "node-name": "cor", "file": {"driver": "qcow2", "node-name": "top", "file": {"driver": "file", "filename": "`+top+`"}}}`)
			buf := make([]byte, 512)
			if err := e.IO(t, "cor").ReadAt(buf, 4096+512); err != nil || buf[0] != c.pattern || buf[511] != c.pattern {
				t.Fatalf("read: %v %#x", err, buf[0])
			}
			st, err := e.IO(t, "top").BlockStatus(0, mib)
			if err != nil {
				t.Fatal(err)
			}
			if st.Flags&blockio.StatusAllocated == 0 || st.Length != 64<<10 {
				t.Fatalf("top after the read: flags %#x for %d bytes, want the 64 KiB cluster allocated", st.Flags, st.Length)
			}
			if zero := st.Flags&blockio.StatusZero != 0 && st.Flags&blockio.StatusData == 0; zero != (c.pattern == 0) {
				t.Errorf("top's cluster: flags %#x, zero cluster %v, want %v", st.Flags, zero, c.pattern == 0)
			}
		})
	}
}
