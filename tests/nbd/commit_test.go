package nbdtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockd/nbd"
)

// waitEvent reads QMP messages until the named event arrives.
func (s *server) waitEvent(t *testing.T, name string) map[string]any {
	t.Helper()
	return s.qmp.WaitEvent(t, name)
}

// TestActiveCommitUnderNBDWrites exports the active layer of a qcow2
// chain and keeps writing to it over four NBD connections while an
// active commit copies, becomes ready, completes (the export's edge moves
// from the top to base) and afterwards: base then holds exactly what the
// chain held plus every write, and both images are clean.
func TestActiveCommitUnderNBDWrites(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	const size = 32 << 20
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
	run(t, "qemu-io", "-c", "write -P 0x11 0 8M", base)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	run(t, "qemu-io", "-c", "write -P 0x22 4M 8M", top)
	model := filepath.Join(dir, "model.raw")
	run(t, "qemu-img", "convert", "-O", "raw", top, model)
	want, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}

	s := start(t, dir,
		"--blockdev", `{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","filename":"`+base+`"}}`,
		"--blockdev", `{"driver":"qcow2","node-name":"top","backing":"base","file":{"driver":"file","filename":"`+top+`"}}`,
		"--export", "type=nbd,id=e,node-name=top,name=disk,writable=on")

	// Each writer owns the 64 KiB blocks b with b%4 == w and records the
	// last pattern it wrote to each; writes of 4 KiB at random places in
	// its blocks, so that commit's dirty tracking sees partial granules.
	const block = 64 << 10
	var mu sync.Mutex
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := s.dial(t)
			c, err := nbd.Connect(nc, "disk")
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			buf := make([]byte, 4096)
			for i := 0; !stop.Load(); i++ {
				b := r.IntN(size/block/4)*4 + w
				off := int64(b*block + r.IntN(block/4096)*4096)
				for j := range buf {
					buf[j] = byte(w*64 + i%64 + 1)
				}
				if err := c.WriteAt(buf, off, 0); err != nil {
					errs <- fmt.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				copy(want[off:], buf)
				mu.Unlock()
				writes.Add(1)
			}
			if err := c.Flush(); err != nil {
				errs <- err
			}
		}()
	}
	waitWrites := func(n int64) {
		for deadline := time.Now().Add(30 * time.Second); writes.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("writers stalled at %d writes", writes.Load())
			}
		}
	}
	waitWrites(200)
	s.cmd(t, "block-commit", map[string]any{"job-id": "j", "device": "top"})
	s.waitEvent(t, "BLOCK_JOB_READY")
	waitWrites(writes.Load() + 200)
	s.cmd(t, "job-complete", map[string]any{"id": "j"})
	s.waitEvent(t, "BLOCK_JOB_COMPLETED")
	// The export now writes to base through its moved edge.
	waitWrites(writes.Load() + 200)
	exps := s.cmd(t, "query-block-exports", nil).([]any)
	if n := exps[0].(map[string]any)["node-name"]; n != "base" {
		t.Fatalf("export's node after commit: %v", n)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.qmp.Close()
	s.Stop(t)

	run(t, "qemu-img", "check", "-q", base)
	got := filepath.Join(dir, "got.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", base, got)
	g, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, want) {
		for i := range g {
			if g[i] != want[i] {
				t.Fatalf("base differs from what was written at %d: %#x, want %#x (%d writes)", i, g[i], want[i], writes.Load())
			}
		}
	}
	t.Logf("%d writes over NBD during the commit", writes.Load())
}
