package file

import (
	"bytes"
	"encoding/json"
	"testing"

	"blockd/blockio"
)

const (
	stData = blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid
	stZero = blockio.StatusZero | blockio.StatusAllocated | blockio.StatusOffsetValid
)

// sparseImage: hole [0,64k), data [64k,128k), hole up to 1M, data at the
// last 4k, size 1M+4k.
func sparseImage(t *testing.T) (string, *File) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p})
	if err := f.WriteAt(bytes.Repeat([]byte{1}, 65536), 65536, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteAt(bytes.Repeat([]byte{2}, 4096), 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	return p, f
}

func TestBlockStatus(t *testing.T) {
	_, f := sparseImage(t)
	for _, c := range []struct {
		off, n int64
		want   blockio.Status
	}{
		{0, 1 << 30, blockio.Status{Flags: stZero, Length: 65536, HostOffset: 0}},
		{100, 1 << 30, blockio.Status{Flags: stZero, Length: 65536 - 100, HostOffset: 100}},
		{0, 4096, blockio.Status{Flags: stZero, Length: 4096, HostOffset: 0}},
		{65536, 1 << 30, blockio.Status{Flags: stData, Length: 65536, HostOffset: 65536}},
		{70000, 100, blockio.Status{Flags: stData, Length: 100, HostOffset: 70000}},
		{131072, 1 << 30, blockio.Status{Flags: stZero, Length: 1<<20 - 131072, HostOffset: 131072}},
		{1 << 20, 1 << 30, blockio.Status{Flags: stData, Length: 4096, HostOffset: 1 << 20}},
		{1<<20 + 4095, 10, blockio.Status{Flags: stData, Length: 1, HostOffset: 1<<20 + 4095}},
	} {
		got, err := f.BlockStatus(c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("BlockStatus(%d, %d) = %+v, want %+v", c.off, c.n, got, c.want)
		}
	}
	// Trailing hole.
	if err := f.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}
	got, _ := f.BlockStatus(1<<20+4096, 1<<30)
	if want := (blockio.Status{Flags: stZero, Length: 1<<20 - 4096, HostOffset: 1<<20 + 4096}); got != want {
		t.Errorf("trailing hole: %+v, want %+v", got, want)
	}
}

// The extents must match what qemu-img map reports for the same file
// through QEMU's file driver.
func TestBlockStatusMatchesQemuImgMap(t *testing.T) {
	qemuImg := qemuTool(t, "qemu-img")
	p, f := sparseImage(t)
	out, ok := run(t, qemuImg, "map", "--output=json", "--image-opts", "driver=file,filename="+p)
	if !ok {
		t.Fatalf("qemu-img map: %s", out)
	}
	var extents []struct {
		Start, Length int64
		Depth         int
		Present       bool
		Zero, Data    bool
		Offset        *int64
	}
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	size, _ := f.Size()
	var off int64
	for _, e := range extents {
		st, err := f.BlockStatus(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		got := struct {
			Start, Length   int64
			Present, Zero   bool
			Data, HasOffset bool
		}{off, st.Length, st.Flags&blockio.StatusAllocated != 0, st.Flags&blockio.StatusZero != 0,
			st.Flags&blockio.StatusData != 0, st.Flags&blockio.StatusOffsetValid != 0 && st.HostOffset == off}
		want := got
		want.Start, want.Length, want.Present, want.Zero, want.Data = e.Start, e.Length, e.Present, e.Zero, e.Data
		want.HasOffset = e.Offset != nil && *e.Offset == e.Start
		if got != want {
			t.Fatalf("extent at %d: blockd %+v, qemu-img map %+v", off, got, want)
		}
		off += st.Length
	}
	if off != size {
		t.Fatalf("qemu-img map covered %d of %d bytes", off, size)
	}
}
