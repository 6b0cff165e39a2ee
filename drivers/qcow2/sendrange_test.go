package qcow2

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// SendRange lends the file only for guest bytes that are one stretch of
// allocated clusters in this layer, at the host offset block status
// reports, and the file holds exactly the guest data there.
func TestSendRangeLendsContiguousClusters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.qcow2")
	newImageFile(t, path, CreateOptions{Size: 8 << 20})
	img, fd := openImage(t, path, OpenOptions{})
	defer fd.Close()
	const cs = 64 << 10
	data := pattern(4*cs, 3)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(img.WriteAt(data, 0, 0))
	// Allocated in reverse order: guest-adjacent, not host-adjacent.
	must(img.WriteAt(pattern(cs, 5), 2<<20+cs, 0))
	must(img.WriteAt(pattern(cs, 6), 2<<20, 0))
	must(img.WriteZeroes(4<<20, cs, 0))

	lent := func(off, n int64) (blockio.FileRange, []byte, error) {
		var got blockio.FileRange
		var b []byte
		err := img.SendRange(off, n, func(r blockio.FileRange) error {
			got = r
			b = make([]byte, n)
			_, err := unix.Pread(r.FD, b, r.Offset)
			return err
		})
		return got, b, err
	}
	r, b, err := lent(cs/2, 3*cs)
	must(err)
	st, err := img.BlockStatus(cs/2, 3*cs)
	must(err)
	if r.Offset != st.HostOffset || !bytes.Equal(b, data[cs/2:cs/2+3*cs]) {
		t.Fatalf("lent offset %d (block status %d), data equal %v", r.Offset, st.HostOffset, bytes.Equal(b, data[cs/2:cs/2+3*cs]))
	}
	tail := make([]byte, 100)
	must(r.ReadAt(tail, 3*cs-100))
	if !bytes.Equal(tail, data[cs/2+3*cs-100:cs/2+3*cs]) {
		t.Fatal("the lent range's ReadAt reads other bytes")
	}
	for _, c := range []struct {
		what   string
		off, n int64
	}{
		{"clusters apart in the file", 2 << 20, 2 * cs},
		{"data then unallocated", 3 * cs, 2 * cs},
		{"unallocated", 6 << 20, cs},
		{"zero cluster", 4 << 20, cs},
	} {
		if _, _, err := lent(c.off, c.n); !errors.Is(err, blockio.ErrNotSupported) {
			t.Fatalf("%s: %v, want ErrNotSupported", c.what, err)
		}
	}
	if _, _, err := lent(8<<20-cs, 2*cs); !errors.Is(err, blockio.ErrOutOfRange) {
		t.Fatalf("past the end: %v", err)
	}
	// Each of the reverse-allocated clusters alone is lent.
	if _, b, err := lent(2<<20+cs, cs); err != nil || !bytes.Equal(b, pattern(cs, 5)) {
		t.Fatalf("second cluster alone: %v", err)
	}
}
