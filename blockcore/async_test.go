package blockcore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// asyncOver is a format driver for tests that ends reads and writes on
// its own: it queues them, and one goroutine runs them on its file
// child once release is closed, as librbd's completions arrive on the
// rbd poller. FUA writes it leaves to WriteAt.
type asyncOver struct {
	blockio.Device
	queue   chan func()
	release chan struct{}
}

func (a *asyncOver) run() {
	<-a.release
	for f := range a.queue {
		f()
	}
}

func (a *asyncOver) EndsRequests() bool { return true }

func (a *asyncOver) StartReadAt(p []byte, off int64, done func(error)) bool {
	a.queue <- func() { done(a.Device.ReadAt(p, off)) }
	return true
}

func (a *asyncOver) StartWriteAt(p []byte, off int64, f blockio.WriteFlags, done func(error)) bool {
	if f&blockio.FUA != 0 {
		return false
	}
	a.queue <- func() { done(a.Device.WriteAt(p, off, f)) }
	return true
}

func (a *asyncOver) Close() error { close(a.queue); return nil }

// asyncNodes hands the test each asyncOver the driver opens.
var asyncNodes = make(chan *asyncOver, 4)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "test-async", Format: true,
		Open: func(oc *blockcore.OpenContext) (blockcore.Impl, error) {
			a := &asyncOver{Device: oc.File.Node.IO(), queue: make(chan func(), 256), release: make(chan struct{})}
			go a.run()
			asyncNodes <- a
			return a, nil
		}})
}

// asyncNodeWithEdge adds a test-async node over a 1 MiB file (img) and
// attaches a user edge with write permission to it, as an export does.
func asyncNodeWithEdge(t *testing.T, name, detectZeroes string) (e *env, a *asyncOver, edge *blockcore.Child, img string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e = newEnv(t)
	opts := &schema.BlockdevOptions{Driver: "test-async", NodeName: &name,
		Raw: &schema.BlockdevOptionsRaw{BlockdevOptionsGenericFormat: schema.BlockdevOptionsGenericFormat{
			File: schema.BlockdevRef{Definition: &schema.BlockdevOptions{Driver: "file",
				File: &schema.BlockdevOptionsFile{Filename: img}}}}}}
	if detectZeroes != "" {
		dz := schema.BlockdevDetectZeroesOptions(detectZeroes)
		opts.DetectZeroes = &dz
	}
	if err := e.do(func() error { return e.g.Add(opts) }); err != nil {
		t.Fatal(err)
	}
	a = <-asyncNodes
	if err := e.do(func() (err error) {
		edge, err = e.g.AttachUser(user("export"), e.g.Lookup(name), "root",
			blockio.PermConsistentRead|blockio.PermWrite, blockio.PermAll)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return e, a, edge, img
}

// Reads and writes started through a user edge (an export's data path)
// end when the driver ends them: the node cannot be drained while they
// are in flight, and once they end, the node's dirty bitmap, its
// counters and the file show each of them.
func TestAsyncRequestsThroughEdge(t *testing.T) {
	e, a, edge, img := asyncNodeWithEdge(t, "top", "")
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "top", "name": "b", "granularity": 65536}`)
	io := edge.IO()
	if !blockio.EndsRequests(io) {
		t.Fatal("the export's data path says its driver ends no requests")
	}
	var fileEdge *blockcore.Child
	if err := e.do(func() (err error) {
		fileEdge, err = e.g.AttachUser(user("reader"), e.g.Lookup("top").Child("file").Node, "root",
			blockio.PermConsistentRead, blockio.PermAll)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if blockio.EndsRequests(fileEdge.IO()) {
		t.Fatal("an edge to a file node says its driver ends requests on its own")
	}
	_ = e.do(func() error { e.g.DetachUser(fileEdge); return nil })

	const n, size = 8, 4096
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		p := bytes.Repeat([]byte{byte(i + 1)}, size)
		// Two granules apart: each write dirties its own.
		if !blockio.StartWriteAt(io, p, int64(i)*131072, 0, func(err error) { errs <- err; wg.Done() }) {
			t.Fatalf("write %d not started", i)
		}
	}
	// The writes wait in the driver: a drain of the node waits for them.
	drained := make(chan func())
	go func() {
		var resume func()
		_ = e.do(func() error { resume = e.g.DrainNodes(e.g.Lookup("top")); return nil })
		drained <- resume
	}()
	resume := func(r func()) { _ = e.do(func() error { r(); return nil }) }
	select {
	case r := <-drained:
		resume(r)
		t.Fatal("the node was drained with writes in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(a.release)
	wg.Wait()
	resume(<-drained)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	if b := bitmapsOf(t, e, "top"); len(b) != 1 || b[0].Count != n*65536 {
		t.Fatalf("dirty bitmap after %d async writes: %+v, want %d bytes dirty", n, b, n*65536)
	}
	var st blockcore.IOSnapshot
	_ = e.do(func() error { st = e.g.Lookup("top").Stats().Snapshot(); return nil })
	if w := st.Ops[blockcore.OpWrite]; w.Ops != n || w.Bytes != n*size {
		t.Fatalf("write counters %+v, want %d ops of %d bytes", w, n, size)
	}
	file, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got := file[i*131072]; got != byte(i+1) {
			t.Fatalf("write %d: byte %d in the file", i, got)
		}
	}

	got := make([]byte, size)
	read := make(chan error, 1)
	if !blockio.StartReadAt(io, got, 3*131072, func(err error) { read <- err }) {
		t.Fatal("read not started")
	}
	if err := <-read; err != nil || !bytes.Equal(got, bytes.Repeat([]byte{4}, size)) {
		t.Fatalf("async read: %v, %x...", err, got[:4])
	}
	_ = e.do(func() error { st = e.g.Lookup("top").Stats().Snapshot(); return nil })
	if r := st.Ops[blockcore.OpRead]; r.Ops != 1 || r.Bytes != size {
		t.Fatalf("read counters %+v", r)
	}

	// A FUA write the driver declines is not started: nothing is counted
	// and the caller writes synchronously.
	if blockio.StartWriteAt(io, got, 0, blockio.FUA, func(error) { t.Error("declined write ended") }) {
		t.Fatal("a FUA write was started on a driver that declines it")
	}
	_ = e.do(func() error { st = e.g.Lookup("top").Stats().Snapshot(); return nil })
	if w := st.Ops[blockcore.OpWrite]; w.Ops != n {
		t.Fatalf("a declined write was counted: %+v", w)
	}
}

// Writes the gate must see whole stay synchronous: detect-zeroes may turn
// a write into a zero write.
func TestAsyncWritesDeclined(t *testing.T) {
	_, a, edge, _ := asyncNodeWithEdge(t, "dz", "on")
	close(a.release)
	if blockio.StartWriteAt(edge.IO(), make([]byte, 4096), 0, 0, func(error) {}) {
		t.Fatal("a write was started asynchronously on a node with detect-zeroes")
	}
	// Reads have nothing to detect: they still start.
	read := make(chan error, 1)
	if !blockio.StartReadAt(edge.IO(), make([]byte, 4096), 0, func(err error) { read <- err }) {
		t.Fatal("read not started")
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if err := edge.IO().WriteAt(make([]byte, 4096), 0, 0); err != nil {
		t.Fatalf("the synchronous write: %v", err)
	}
}
