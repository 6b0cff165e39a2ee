package file

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// SendRange lends the file's own descriptor at the same offset, with a
// ReadAt that reads past the end as zeroes; never under O_DIRECT.
func TestSendRangeLendsTheFile(t *testing.T) {
	dir := t.TempDir()
	p := newImage(t, dir, 0)
	f := mustOpen(t, Options{Filename: p})
	data := randBytes(rand.New(rand.NewPCG(1, 2)), 1<<20)
	if err := f.WriteAt(data, 0, 0); err != nil {
		t.Fatal(err)
	}
	var got, tail []byte
	err := f.SendRange(4096, 1<<20, func(r blockio.FileRange) error {
		if r.Offset != 4096 {
			t.Errorf("lent offset %d", r.Offset)
		}
		got = make([]byte, 1<<20-4096)
		if _, err := unix.Pread(r.FD, got, r.Offset); err != nil {
			return err
		}
		tail = make([]byte, 8192)
		return r.ReadAt(tail, 1<<20-8192)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[4096:]) || !bytes.Equal(tail[:4096], data[1<<20-4096:]) || !bytes.Equal(tail[4096:], make([]byte, 4096)) {
		t.Fatal("lent range does not hold the file's bytes (and zeroes past its end)")
	}

	d := mustOpen(t, Options{Filename: newImage(t, directDir(t), 1<<20), Direct: true})
	called := false
	err = d.SendRange(0, 4096, func(blockio.FileRange) error { called = true; return nil })
	if !errors.Is(err, blockio.ErrNotSupported) || called {
		t.Fatalf("O_DIRECT file: %v, sink called %v", err, called)
	}
}

// StartWriteback asks the kernel to write the file's dirty pages back
// (sync_file_range accepts the call), leaves the data and the next flush
// alone, and does nothing on a closed file but say so.
func TestStartWriteback(t *testing.T) {
	p := newImage(t, t.TempDir(), 0)
	f := mustOpen(t, Options{Filename: p})
	data := randBytes(rand.New(rand.NewPCG(3, 4)), 8<<20)
	if err := f.WriteAt(data, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.StartWriteback(); err != nil {
		t.Fatalf("StartWriteback: %v", err)
	}
	before := f.syncs.Load()
	if err := f.Flush(); err != nil || f.syncs.Load() != before+1 {
		t.Fatalf("flush after write-back: %v, %d fdatasync calls", err, f.syncs.Load()-before)
	}
	wantData(t, f, 0, data)
	ro := mustOpen(t, Options{Filename: p, ReadOnly: true})
	if err := ro.StartWriteback(); err != nil {
		t.Fatalf("read-only: %v", err)
	}
	g, err := Open(Options{Filename: p})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := g.StartWriteback(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("closed file: %v", err)
	}
}
