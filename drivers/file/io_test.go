package file

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"blockd/blockio"
)

func TestReadWriteRoundTrip(t *testing.T) {
	f := mustOpen(t, Options{Filename: newImage(t, t.TempDir(), 1<<20)})
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		off int64
		n   int
	}{{0, 512}, {4096, 65536}, {1, 3}, {777, 10000}, {1<<20 - 100, 100}} {
		data := randBytes(r, c.n)
		if err := f.WriteAt(data, c.off, 0); err != nil {
			t.Fatal(err)
		}
		wantData(t, f, c.off, data)
	}
	if size, _ := f.Size(); size != 1<<20 {
		t.Fatalf("size %d after in-bounds writes", size)
	}

	// Reads past EOF return zeroes; a read straddling EOF gets both.
	tail := mustRead(t, f, 1<<20-100, 300)
	if !bytes.Equal(tail[100:], make([]byte, 200)) {
		t.Fatal("bytes past EOF are not zero")
	}
	// Writes past EOF extend the file.
	data := randBytes(r, 1000)
	if err := f.WriteAt(data, 2<<20, blockio.FUA); err != nil {
		t.Fatal(err)
	}
	if size, _ := f.Size(); size != 2<<20+1000 {
		t.Fatalf("size %d after write past EOF", size)
	}
	wantData(t, f, 2<<20, data)
	wantData(t, f, 1<<20, make([]byte, 4096))
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestWriteZeroes(t *testing.T) {
	const size = 1 << 20
	for _, c := range []struct {
		name    string
		unmapOK bool
		flags   blockio.WriteFlags
		hole    bool // the aligned range must become a hole
	}{
		{"zero-range", false, 0, false},
		{"may-unmap ignored without discard=unmap", false, blockio.MayUnmap, false},
		{"may-unmap punches", true, blockio.MayUnmap, true},
		{"fua", false, blockio.FUA, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newImage(t, t.TempDir(), size)
			f := mustOpen(t, Options{Filename: p, DiscardUnmap: c.unmapOK})
			ones := bytes.Repeat([]byte{0xff}, size)
			if err := f.WriteAt(ones, 0, 0); err != nil {
				t.Fatal(err)
			}
			// Aligned and unaligned ranges.
			for _, z := range [][2]int64{{65536, 65536}, {1000, 3000}, {200000, 70001}} {
				if err := f.WriteZeroes(z[0], z[1], c.flags); err != nil {
					t.Fatal(err)
				}
				copy(ones[z[0]:z[0]+z[1]], make([]byte, z[1]))
			}
			wantData(t, f, 0, ones)
			st, err := f.BlockStatus(65536, 65536)
			if err != nil {
				t.Fatal(err)
			}
			if isHole := st.Flags&blockio.StatusZero != 0; c.hole && !isHole {
				t.Fatalf("MayUnmap with discard=unmap left data: %+v", st)
			}

			// Past EOF: the file grows, the new range reads as zeroes.
			if err := f.WriteZeroes(size+4096, 65536, c.flags); err != nil {
				t.Fatal(err)
			}
			if got, _ := f.Size(); got != size+4096+65536 {
				t.Fatalf("size %d after zeroing past EOF", got)
			}
			wantData(t, f, size, make([]byte, 4096+65536))
		})
	}
}

// With every fallocate method marked unsupported, WriteZeroes writes
// buffers, or refuses with NoFallback.
func TestWriteZeroesFallback(t *testing.T) {
	p := newImage(t, t.TempDir(), 0)
	f := mustOpen(t, Options{Filename: p})
	if err := f.WriteAt(bytes.Repeat([]byte{7}, 3<<20), 0, 0); err != nil {
		t.Fatal(err)
	}
	f.noZeroRange.Store(true)
	f.noPunch.Store(true)
	f.noFallocate.Store(true)
	err := f.WriteZeroes(0, 4096, blockio.NoFallback)
	if !errors.Is(err, blockio.ErrNotSupported) {
		t.Fatalf("NoFallback: got %v, want ErrNotSupported", err)
	}
	wantData(t, f, 0, bytes.Repeat([]byte{7}, 4096))
	if err := f.WriteZeroes(5, 3<<20, 0); err != nil {
		t.Fatal(err)
	}
	want := append([]byte{7, 7, 7, 7, 7}, make([]byte, 3<<20)...)
	wantData(t, f, 0, want)
	if got, _ := f.Size(); got != 3<<20+5 {
		t.Fatalf("size %d", got)
	}
}

func TestDiscard(t *testing.T) {
	for _, unmap := range []bool{false, true} {
		p := newImage(t, t.TempDir(), 0)
		f := mustOpen(t, Options{Filename: p, DiscardUnmap: unmap})
		data := bytes.Repeat([]byte{0x5a}, 1<<20)
		if err := f.WriteAt(data, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Discard(65536, 131072); err != nil {
			t.Fatal(err)
		}
		if err := f.Discard(2<<20, 4096); err != nil { // past EOF: harmless
			t.Fatal(err)
		}
		st, err := f.BlockStatus(65536, 131072)
		if err != nil {
			t.Fatal(err)
		}
		if unmap {
			clear(data[65536 : 65536+131072])
			if st.Flags&blockio.StatusZero == 0 || st.Length != 131072 {
				t.Fatalf("discard=unmap: status %+v, want a 128k hole", st)
			}
		} else if st.Flags&blockio.StatusData == 0 {
			t.Fatalf("discard=ignore deallocated: %+v", st)
		}
		wantData(t, f, 0, data)
		if size, _ := f.Size(); size != 1<<20 {
			t.Fatalf("discard changed the size to %d", size)
		}
	}
}

func TestNoFlush(t *testing.T) {
	f := mustOpen(t, Options{Filename: newImage(t, t.TempDir(), 4096), NoFlush: true})
	// A recorded fdatasync failure would fail a real flush; no-flush
	// never reaches fdatasync.
	f.cacheErr.Store(5)
	if err := f.Flush(); err != nil {
		t.Fatalf("no-flush Flush: %v", err)
	}
	if err := f.WriteAt([]byte{1}, 0, blockio.FUA); err != nil {
		t.Fatalf("no-flush FUA write: %v", err)
	}
	g := mustOpen(t, Options{Filename: newImage(t, t.TempDir(), 4096)})
	g.cacheErr.Store(5)
	if err := g.Flush(); err == nil || !contains(err.Error(), "input/output error") {
		t.Fatalf("flush after a failed fdatasync: %v, want EIO", err)
	}
}

func TestTruncate(t *testing.T) {
	p := newImage(t, t.TempDir(), 0)
	f := mustOpen(t, Options{Filename: p})
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if size, _ := f.Size(); size != 1<<20 {
		t.Fatalf("size %d", size)
	}
	// Grown from empty: the first block is allocated, as QEMU does it.
	st, err := f.BlockStatus(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Flags&blockio.StatusData == 0 || st.Length != 4096 {
		t.Fatalf("first block after growing from empty: %+v", st)
	}
	if err := f.WriteAt(bytes.Repeat([]byte{1}, 8192), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1000); err != nil {
		t.Fatal(err)
	}
	if size, _ := f.Size(); size != 1000 {
		t.Fatalf("size %d after shrink", size)
	}
	if err := f.Truncate(8192); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{1}, 1000), make([]byte, 8192-1000)...)
	wantData(t, f, 0, want)

	// Small sizes stay exact (QEMU would grow a file truncated to 100 to 512).
	q := mustOpen(t, Options{Filename: newImage(t, t.TempDir(), 0)})
	if err := q.Truncate(100); err != nil {
		t.Fatal(err)
	}
	if size, _ := q.Size(); size != 100 {
		t.Fatalf("size %d, want 100", size)
	}
}
