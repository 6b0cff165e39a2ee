package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"blockd/internal/needtool"
)

// A compressing backup stores the target's clusters compressed, guest
// writes through the filter meanwhile included, and stays a point-in-time
// copy; targets that cannot store compressed clusters are refused.
func TestCompressedBackup(t *testing.T) {
	needtool.Find(t, "qemu-img")
	const size = 16 << 20
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
	start := make([]byte, size)
	for i := range start {
		start[i] = byte(i/4096) | 1
	}
	copy(start[9<<20:], make([]byte, 1<<20)) // a zero stretch
	image(t, src, size, "", map[int64][]byte{0: bytes.Clone(start)})
	image(t, dst, size, "", nil)
	d := newDaemon(t)
	addQcow2(t, d, "src", src)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "dst",
		"file": map[string]any{"driver": "file", "filename": dst, "node-name": "dst-file"}})
	b, _ := json.Marshal(map[string]any{"job-id": "b", "device": "src", "target": "dst-file",
		"sync": "full", "compress": true})
	if _, err := d.owner.Call(context.Background(), "blockdev-backup", b); err == nil ||
		err.Error() != "Compression is not supported for this drive " {
		t.Fatalf("compressed backup to a file node: %v", err)
	}
	d.call(t, "blockdev-backup", map[string]any{"job-id": "b", "device": "src", "target": "dst",
		"sync": "full", "speed": 8 << 20, "compress": true, "filter-node-name": "cbw"})
	model := bytes.Clone(start)
	stop := make(chan struct{})
	guest := guestWriters(t, d, "cbw", size, model, stop)
	if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
		t.Fatalf("job failed: %s", e.Data)
	}
	close(stop)
	guest.wg.Wait()
	_ = d.owner.Do(func() { d.g.CloseAll() })
	firstDiff(t, "backup", readAll(t, dst, size), start)
	firstDiff(t, "source", readAll(t, src, size), model)
	out, err := exec.Command("qemu-img", "check", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	// 15 MiB of data in 240 clusters, all compressible.
	if !strings.Contains(string(out), "240/256 = 93.75% allocated") ||
		!strings.Contains(string(out), "100.00% compressed clusters") {
		t.Fatalf("qemu-img check: %s", out)
	}
}
