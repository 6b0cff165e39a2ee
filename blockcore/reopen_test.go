package blockcore_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
)

// newQcow2 creates an empty qcow2 image of size bytes.
func newQcow2(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := file.Open(file.Options{Filename: path})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := qcow2.Create(f, qcow2.CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
}

func rawImage(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// A reopen of two nodes whose second entry is refused, in its prepare or
// in the permission check of the whole queue, leaves the first exactly as
// it was: read-write, with its options, and still writable through its
// data path (its file descriptor was not switched).
func TestReopenRefusedSecondEntryChangesNothing(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	rawImage(t, a, 1<<20)
	rawImage(t, b, 1<<20)
	e := newEnv(t)
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "raw", "node-name": "r", "cache": {"no-flush": true}, "file": {"driver": "file", "node-name": "rf", "filename": %q}}`, a))
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "file", "node-name": "fw", "filename": %q}`, b))
	fw := e.node(t, "fw")
	if err := e.do(func() error {
		_, err := e.g.AttachUser(user("writer"), fw, "root", pR|pW, pR|pWU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	before := e.mustExec(t, "query-named-block-nodes", "")
	graphBefore := e.mustExec(t, "x-debug-query-block-graph", "")
	cases := []struct{ args, want string }{
		// Refused while preparing the second entry.
		{fmt.Sprintf(`{"options": [{"driver": "raw", "node-name": "r", "read-only": true, "file": {"driver": "file", "node-name": "rf", "filename": %q}},
			{"driver": "file", "node-name": "fw", "filename": %q}]}`, a, a), "Cannot change the option 'filename'"},
		// Refused by the permission check: fw has a writer.
		{fmt.Sprintf(`{"options": [{"driver": "raw", "node-name": "r", "read-only": true, "file": {"driver": "file", "node-name": "rf", "filename": %q}},
			{"driver": "file", "node-name": "fw", "filename": %q, "read-only": true}]}`, a, b), "Read-only block node 'fw' cannot support read-write users"},
	}
	for _, c := range cases {
		_, err := e.exec("blockdev-reopen", c.args)
		if err == nil || err.Error() != c.want {
			t.Fatalf("got %v, want %q", err, c.want)
		}
		if after := e.mustExec(t, "query-named-block-nodes", ""); !bytes.Equal(after, before) {
			t.Fatalf("nodes changed:\n%s\n%s", before, after)
		}
		if after := e.mustExec(t, "x-debug-query-block-graph", ""); !bytes.Equal(after, graphBefore) {
			t.Fatalf("graph changed:\n%s\n%s", graphBefore, after)
		}
		if err := e.node(t, "r").IO().WriteAt(make([]byte, 512), 0, 0); err != nil {
			t.Fatalf("r no longer writable: %v", err)
		}
		before = e.mustExec(t, "query-named-block-nodes", "") // actual-size moved
	}
}

// Requests keep flowing through a qcow2 node while the owner reopens it
// over and over: cache sizes, lazy refcounts and cache modes change under
// a writer, refused reopens to read-only roll back under it, and every
// byte written reads back. Then, with only readers, the node goes
// read-only and back while they read.
func TestReopenUnderIO(t *testing.T) {
	const size, workers = 8 << 20, 4
	dir := t.TempDir()
	img := filepath.Join(dir, "q.qcow2")
	newQcow2(t, img, size)
	e := newEnv(t)
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "qcow2", "node-name": "q", "file": {"driver": "file", "node-name": "qf", "filename": %q}}`, img))
	q := e.node(t, "q")
	var writer *blockcore.Child
	if err := e.do(func() (err error) {
		writer, err = e.g.AttachUser(user("io"), q, "root", pR|pW, pR|pWU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fileOpt := fmt.Sprintf(`{"driver": "file", "node-name": "qf", "filename": %q}`, img)
	reopens := []string{
		`"cache-size": 262144`,
		`"l2-cache-entry-size": 4096, "lazy-refcounts": true`,
		`"lazy-refcounts": false, "cache": {"no-flush": true}`,
		`"refcount-cache-size": 65536, "l2-cache-size": 131072`,
		`"read-only": true`, // refused: the writer stays
		``,
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	shadows := make([][]byte, workers)
	region := int64(size / workers)
	dev := q.IO()
	for w := range workers {
		shadows[w] = make([]byte, region)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			base := int64(w) * region
			for i := 0; i < 300 || !done.Load(); i++ {
				off := rng.Int64N(region/4096) * 4096
				n := min(int64(1+rng.IntN(16))*4096, region-off)
				if rng.IntN(3) == 0 {
					p := make([]byte, n)
					if err := dev.ReadAt(p, base+off); err != nil || !bytes.Equal(p, shadows[w][off:off+n]) {
						errs <- fmt.Errorf("worker %d: read at %d: %v", w, base+off, err)
						return
					}
					continue
				}
				p := bytes.Repeat([]byte{byte(i)}, int(n))
				if err := dev.WriteAt(p, base+off, 0); err != nil {
					errs <- fmt.Errorf("worker %d: write: %w", w, err)
					return
				}
				copy(shadows[w][off:], p)
			}
		}()
	}
	for i := range 40 {
		opts := reopens[i%len(reopens)]
		if opts != "" {
			opts += ", "
		}
		_, err := e.exec("blockdev-reopen", fmt.Sprintf(`{"options": [{"driver": "qcow2", "node-name": "q", %s"file": %s}]}`, opts, fileOpt))
		if ro := i%len(reopens) == 4; ro != (err != nil) {
			t.Errorf("reopen %d (%s): %v", i, opts, err)
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	got := make([]byte, size)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Join(shadows, nil)) {
		t.Fatalf("data differs after the reopens (%v)", err)
	}

	// Readers only: read-only and back under them; the options set by the
	// last reopen stay.
	e.mustExec(t, "blockdev-reopen", fmt.Sprintf(`{"options": [{"driver": "qcow2", "node-name": "q", "cache": {"no-flush": true}, "file": %s}]}`, fileOpt))
	_ = e.do(func() error { e.g.DetachUser(writer); return nil })
	if err := e.do(func() (err error) {
		_, err = e.g.AttachUser(user("reader"), q, "root", pR, pR|pW|pWU)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done.Store(false)
	var rerr atomic.Value
	var rwg sync.WaitGroup
	for w := range workers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			p := make([]byte, 65536)
			for !done.Load() {
				off := int64(w) * region
				if err := dev.ReadAt(p, off); err != nil || !bytes.Equal(p, shadows[w][:65536]) {
					rerr.Store(fmt.Errorf("reader %d: %v", w, err))
					return
				}
			}
		}()
	}
	for i := range 20 {
		ro := i%2 == 0
		if err := e.do(func() error { return e.g.SetReadOnly(q, ro) }); err != nil {
			t.Fatalf("SetReadOnly(%v): %v", ro, err)
		}
		if q.ReadOnly() != ro || e.node(t, "qf").ReadOnly() != ro {
			t.Fatalf("after SetReadOnly(%v): q %v, its file %v", ro, q.ReadOnly(), e.node(t, "qf").ReadOnly())
		}
		if ro {
			if err := dev.WriteAt(make([]byte, 512), 0, 0); !errors.Is(err, blockio.ErrReadOnly) {
				t.Fatalf("write to a read-only node: %v", err)
			}
		}
	}
	done.Store(true)
	rwg.Wait()
	if v := rerr.Load(); v != nil {
		t.Fatal(v)
	}
	// The options survive SetReadOnly.
	info := e.mustExec(t, "query-named-block-nodes", `{"flat": true}`)
	if bytes.Count(info, []byte(`"no-flush": true`)) != 2 {
		t.Errorf("SetReadOnly lost cache.no-flush: %s", info)
	}
}
