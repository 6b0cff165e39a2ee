package nbd

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockd/blockio"
)

// fileDev is a device over a host file that lends its ranges the way a
// node's data path does: a reader-writer lock stands for the node's
// drain, held for reading while a sink runs. Past the file's end it
// reads zeroes, as a file node does.
type fileDev struct {
	memDev // only for what a read-only export never calls
	f      *os.File
	size   int64
	drain  sync.RWMutex
	lent   atomic.Int64 // SendRange calls that reached the sink
	// Bytes copied by the device's ReadAt (a read that was not lent) and
	// by a lent range's ReadAt (a reply's tail the socket did not take).
	copied, tails atomic.Int64
}

func (d *fileDev) ReadAt(p []byte, off int64) error {
	d.drain.RLock()
	defer d.drain.RUnlock()
	if err := blockio.CheckRange(off, int64(len(p)), d.size); err != nil {
		return err
	}
	d.copied.Add(int64(len(p)))
	return d.readFile(p, off)
}

func (d *fileDev) readFile(p []byte, off int64) error {
	n, err := d.f.ReadAt(p, off)
	clear(p[n:])
	if err != nil && n < len(p) && err.Error() != "EOF" {
		return err
	}
	return nil
}

func (d *fileDev) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	d.drain.RLock()
	defer d.drain.RUnlock()
	if err := blockio.CheckRange(off, n, d.size); err != nil {
		return err
	}
	d.lent.Add(1)
	return sink(blockio.FileRange{FD: int(d.f.Fd()), Offset: off,
		ReadAt: func(p []byte, at int64) error {
			d.tails.Add(int64(len(p)))
			return d.readFile(p, off+at)
		}})
}

func (d *fileDev) BlockStatus(off, n int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: n}, nil
}
func (d *fileDev) Size() (int64, error) { return d.size, nil }

func newFileDev(t *testing.T, data []byte, size int64) *fileDev {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fileDev{f: f, size: size}
}

// Reads of a device that lends its file go out from the file's pages:
// the bytes arrive right, past the file's end as zeroes, and reads too
// large for a pipe are copied as before.
func TestReadsSentFromTheFile(t *testing.T) {
	data := make([]byte, 8<<20)
	_, _ = rand.Read(data)
	size := int64(len(data)) + 1<<20
	d := newFileDev(t, data, size)
	s, sock := serve(t, Options{}, &Export{Name: "f", Dev: d, Size: size, ReadOnly: true})
	c := connect(t, sock, "f")
	want := func(off, n int64) []byte {
		w := make([]byte, n)
		if off < int64(len(data)) {
			copy(w, data[off:])
		}
		return w
	}
	var lent, copied int64
	for _, r := range []struct {
		off, n     int64
		lent, copy bool
	}{
		{0, 4096, true, false}, {12345, 65536, true, false}, {1 << 20, 256 << 10, true, false},
		{0, maxSpliced, true, false},
		{3, maxSpliced, true, true},                        // a page more than a pipe holds
		{int64(len(data)) - 32<<10, 64 << 10, true, false}, // the file ends half way
		{int64(len(data)), 4096, true, false},              // wholly past its end
		{0, maxSpliced + 4096, false, true},
		{0, size, false, true},
	} {
		got := make([]byte, r.n)
		if err := c.ReadAt(got, r.off); err != nil {
			t.Fatalf("read %d+%d: %v", r.off, r.n, err)
		}
		if !bytes.Equal(got, want(r.off, r.n)) {
			t.Fatalf("read %d+%d: wrong data", r.off, r.n)
		}
		if r.lent {
			lent++
		}
		if r.copy {
			copied += r.n
		}
	}
	if d.lent.Load() != lent || d.copied.Load() != copied || d.tails.Load() != 32<<10+4096 {
		t.Fatalf("lent %d (want %d), copied %d (want %d), tails %d (want %d)",
			d.lent.Load(), lent, d.copied.Load(), copied, d.tails.Load(), 32<<10+4096)
	}
	// The connection's pipes close with it.
	if s.pipesOpen.Load() == 0 {
		t.Fatal("no pipe open while the connection is")
	}
	_ = c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.pipesOpen.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.pipesOpen.Load(); n != 0 {
		t.Fatalf("%d pipes open after the client left", n)
	}
}

// Past the server's budget of pipes, reads are copied: clients cannot
// spend the daemon's descriptors on pipes.
func TestPipeBudgetFallsBackToCopies(t *testing.T) {
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	d := newFileDev(t, data, int64(len(data)))
	s, sock := serve(t, Options{}, &Export{Name: "f", Dev: d, Size: d.size, ReadOnly: true})
	s.pipesOpen.Store(maxPipes)
	c := connect(t, sock, "f")
	got := make([]byte, 64<<10)
	if err := c.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data[4096:4096+64<<10]) {
		t.Fatalf("read: %v", err)
	}
	if d.lent.Load() != 0 || d.copied.Load() != 64<<10 || s.pipesOpen.Load() != maxPipes {
		t.Fatalf("lent %d, copied %d, pipes %d", d.lent.Load(), d.copied.Load(), s.pipesOpen.Load())
	}
}

// A client that never reads its replies must not keep the device lent:
// the node could then never be drained and the owner would wait on a
// client.
func TestStalledReaderDoesNotHoldTheDevice(t *testing.T) {
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	d := newFileDev(t, data, int64(len(data)))
	_, sock := serve(t, Options{}, &Export{Name: "f", Dev: d, Size: d.size, ReadOnly: true})
	stalled := connect(t, sock, "f")
	// 64 requests of 1 MiB: far more than the socket holds.
	for i := range 64 {
		req := AppendRequest(nil, Request{Type: CmdRead, Cookie: uint64(i + 1), Offset: uint64(i%4) << 20, Length: 1 << 20})
		if _, err := stalled.Conn().Write(req); err != nil {
			t.Fatal(err)
		}
	}
	// Every worker took a request: the first replies fill the socket,
	// the others wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for d.lent.Load() < DefaultMaxInFlight && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	drained := make(chan struct{})
	go func() {
		d.drain.Lock()
		d.drain.Unlock()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the device stays lent to a client that does not read")
	}
	good := connect(t, sock, "f")
	got := make([]byte, 4096)
	if err := good.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data[4096:8192]) {
		t.Fatalf("another client's read: %v", err)
	}
	if d.lent.Load() < DefaultMaxInFlight {
		t.Fatalf("only %d reads were lent the file", d.lent.Load())
	}
}
