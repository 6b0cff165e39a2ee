package file

import (
	"bytes"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"blockd/blockio"
)

func TestDirectAlignmentProbe(t *testing.T) {
	dir := directDir(t)
	// An empty file cannot be probed (reads hit EOF first): QEMU falls
	// back to 4096.
	f := mustOpen(t, Options{Filename: newImage(t, dir, 0), Direct: true})
	if got := f.RequestAlignment(); got != 4096 {
		t.Errorf("empty file: request alignment %d, want 4096", got)
	}
	if fileFlags(t, f)&syscall.O_DIRECT == 0 {
		t.Error("Direct file opened without O_DIRECT")
	}
	// With data the probe finds the device's logical block size.
	if err := os.WriteFile(dir+"/full", bytes.Repeat([]byte{1}, 65536), 0o644); err != nil {
		t.Fatal(err)
	}
	g := mustOpen(t, Options{Filename: dir + "/full", Direct: true})
	a := g.RequestAlignment()
	if a < 512 || a > 4096 || a&(a-1) != 0 {
		t.Errorf("request alignment %d", a)
	}
	if m := g.MemAlignment(); m < 512 {
		t.Errorf("memory alignment %d", m)
	}
	t.Logf("probed request alignment %d, memory alignment %d", a, g.MemAlignment())
	if b := mustOpen(t, Options{Filename: dir + "/full"}); b.RequestAlignment() != 1 {
		t.Errorf("buffered file has request alignment %d", b.RequestAlignment())
	}
}

// Random unaligned requests with unaligned buffers through O_DIRECT,
// checked against an in-memory model and a buffered reader.
func TestDirectUnaligned(t *testing.T) {
	dir := directDir(t)
	const size = 1 << 20
	p := newImage(t, dir, size)
	f := mustOpen(t, Options{Filename: p, Direct: true, DiscardUnmap: true})
	if f.RequestAlignment() < 512 {
		t.Fatalf("request alignment %d under O_DIRECT", f.RequestAlignment())
	}
	model := make([]byte, size, 2*size)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 400 {
		off := r.Int64N(size - 70000)
		n := 1 + r.IntN(70000)
		switch i % 4 {
		case 0, 1:
			raw := randBytes(r, n+1)
			data := raw[1:] // unaligned address
			if err := f.WriteAt(data, off, 0); err != nil {
				t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
			}
			copy(model[off:], data)
		case 2:
			if err := f.WriteZeroes(off, int64(n), blockio.MayUnmap); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+int64(n)])
		case 3:
			buf := make([]byte, n+3)[3:]
			if err := f.ReadAt(buf, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, model[off:off+int64(n)]) {
				t.Fatalf("read %d+%d differs from model", off, n)
			}
		}
	}
	// Aligned request with an aligned buffer takes the direct path.
	a := alignedBuf(8192, f.MemAlignment())
	copy(a, bytes.Repeat([]byte{0x42}, 8192))
	if err := f.WriteAt(a, 16384, 0); err != nil {
		t.Fatal(err)
	}
	copy(model[16384:], a)

	// Past EOF, unaligned: the file grows to the next block boundary,
	// like QEMU's padded O_DIRECT writes; the data reads back.
	tail := randBytes(r, 100)
	if err := f.WriteAt(tail, size+10, 0); err != nil {
		t.Fatal(err)
	}
	model = append(model, make([]byte, 10)...)
	model = append(model, tail...)
	got, _ := f.Size()
	if got < int64(len(model)) || got%f.RequestAlignment() != 0 {
		t.Fatalf("size %d after unaligned write past EOF", got)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}

	disk, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk[:len(model)], model) {
		t.Fatal("file contents differ from model")
	}
	wantData(t, f, 0, model)
}
