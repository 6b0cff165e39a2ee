package copyjobs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"blockd/internal/needtool"
	qmptest "blockd/tests/qmp"
)

// guestWrite is one write a simulated guest makes over NBD.
type guestWrite struct {
	off, n  int64
	pattern byte
}

// guestWriters writes, from several qemu-io processes at once, to
// disjoint regions of the NBD export at uri, and returns the writes so
// that the caller can model the result.
func guestWriters(t *testing.T, uri string, size int64, writers, perWriter int) []guestWrite {
	t.Helper()
	qemuIO := needtool.Find(t, "qemu-io")[0]
	region := size / int64(writers)
	var all []guestWrite
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		var args []string
		for i := 0; i < perWriter; i++ {
			// Unaligned on purpose: writes cover parts of clusters.
			n := int64(4096 + (i*37+w*11)%200*1024)
			off := int64(w)*region + (int64(i)*region/int64(perWriter)+int64(w*512))%(region-n)
			gw := guestWrite{off: off, n: n, pattern: byte(0x40 + w*16 + i)}
			all = append(all, gw)
			args = append(args, "-c", fmt.Sprintf("write -P 0x%02x %d %d", gw.pattern, gw.off, gw.n))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command(qemuIO, append(append([]string{"-f", "raw"}, args...), uri)...).CombinedOutput()
			if err != nil || strings.Contains(string(out), "failed") {
				errs <- fmt.Errorf("qemu-io writer: %v\n%s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return all
}

// apply models the guest's writes on an image's bytes.
func apply(img []byte, writes []guestWrite) {
	for _, w := range writes {
		for i := w.off; i < w.off+w.n; i++ {
			img[i] = w.pattern
		}
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s differs at byte %d: 0x%02x, want 0x%02x", what, i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// Image fleecing as QEMU 7.2 does it, with blockdev-add alone: a
// copy-before-write filter above the source, a snapshot-access node over
// it, both exported over NBD. Guests write through the filter's export
// from several processes while nbdcopy reads the snapshot export: the
// copy equals the image at the point in time, the guest's export holds
// the writes, and every image passes qemu-img check.
func TestFleecingExportReadsPointInTime(t *testing.T) {
	nbdcopy := needtool.Find(t, "nbdcopy")[0]
	const size = 32 << 20
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "32M")
	run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 24M", "-c", "write -z 4M 1M",
		"-c", "write -P 0x12 28M 2M", "src.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "tgt.qcow2", "32M")
	run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "expect.raw")

	d := qmptest.StartDaemon(t, blockdBin, dir)
	c := qmptest.Dial(t, d.Sock)
	c.Command(t, "qmp_capabilities", nil)
	sock := filepath.Join(dir, "nbd.sock")
	for _, cmd := range []struct {
		name string
		args map[string]any
	}{
		{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "src",
			"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "src.qcow2")}}},
		{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "tgt",
			"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "tgt.qcow2")}}},
		{"blockdev-add", map[string]any{"driver": "copy-before-write", "node-name": "cbw", "file": "src", "target": "tgt"}},
		{"blockdev-add", map[string]any{"driver": "snapshot-access", "node-name": "acc", "file": "cbw"}},
		{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": sock}}}},
		{"block-export-add", map[string]any{"type": "nbd", "id": "guest", "node-name": "cbw", "writable": true}},
		{"block-export-add", map[string]any{"type": "nbd", "id": "fleece", "node-name": "acc"}},
	} {
		if rep, _ := c.Command(t, cmd.name, cmd.args); rep["error"] != nil {
			t.Fatalf("%s: %v", cmd.name, rep["error"])
		}
	}
	guest := "nbd+unix:///cbw?socket=" + sock
	fleece := "nbd+unix:///acc?socket=" + sock

	var writes []guestWrite
	done := make(chan struct{})
	go func() {
		defer close(done)
		writes = guestWriters(t, guest, size, 4, 24)
	}()
	out, err := exec.Command(nbdcopy, fleece, filepath.Join(dir, "fleece.raw")).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdcopy of the snapshot export: %v\n%s", err, out)
	}
	<-done
	// And once more after every write has landed.
	if out, err := exec.Command(nbdcopy, fleece, filepath.Join(dir, "fleece2.raw")).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy of the snapshot export: %v\n%s", err, out)
	}
	if out, err := exec.Command(nbdcopy, guest, filepath.Join(dir, "guest.raw")).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy of the guest export: %v\n%s", err, out)
	}
	expect := readFile(t, filepath.Join(dir, "expect.raw"))
	sameBytes(t, "snapshot export read during the writes", readFile(t, filepath.Join(dir, "fleece.raw")), expect)
	sameBytes(t, "snapshot export read after the writes", readFile(t, filepath.Join(dir, "fleece2.raw")), expect)
	final := bytes.Clone(expect)
	apply(final, writes)
	sameBytes(t, "guest export", readFile(t, filepath.Join(dir, "guest.raw")), final)

	c.Command(t, "quit", nil)
	_ = d.Wait()
	for _, img := range []string{"src.qcow2", "tgt.qcow2"} {
		run(t, dir, "qemu-img", "check", "-q", img)
	}
	run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "src-after.raw")
	sameBytes(t, "source image after quit", readFile(t, filepath.Join(dir, "src-after.raw")), final)
}

// A backup job while guests write through an NBD export of its source:
// the job's filter sits between the export and the source, so the
// target ends with the image at the job's start whatever the guests
// wrote meanwhile.
func TestBackupWithConcurrentNBDWriters(t *testing.T) {
	const size = 32 << 20
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "32M")
	run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x21 0 30M", "-c", "write -z 8M 2M", "src.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "tgt.qcow2", "32M")
	run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "expect.raw")

	d := qmptest.StartDaemon(t, blockdBin, dir)
	c := qmptest.Dial(t, d.Sock)
	c.Command(t, "qmp_capabilities", nil)
	sock := filepath.Join(dir, "nbd.sock")
	for _, n := range []string{"src", "tgt"} {
		c.Command(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": n,
			"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, n+".qcow2")}})
	}
	c.Command(t, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
		"data": map[string]any{"path": sock}}})
	if rep, _ := c.Command(t, "block-export-add", map[string]any{"type": "nbd", "id": "guest",
		"node-name": "src", "writable": true}); rep["error"] != nil {
		t.Fatalf("block-export-add: %v", rep["error"])
	}
	// Slow enough that the guests' writes land while it runs.
	if rep, _ := c.Command(t, "blockdev-backup", map[string]any{"job-id": "b", "device": "src", "target": "tgt",
		"sync": "full", "speed": 16 << 20}); rep["error"] != nil {
		t.Fatalf("blockdev-backup: %v", rep["error"])
	}
	writes := guestWriters(t, "nbd+unix:///src?socket="+sock, size, 4, 16)
	rep, evs := c.Command(t, "block-job-set-speed", map[string]any{"device": "b", "speed": 0})
	if rep["error"] != nil {
		t.Fatalf("the backup ended before the guests' writes did: %v", rep["error"])
	}
	completed := false
	for _, ev := range evs {
		completed = completed || ev["event"] == "BLOCK_JOB_COMPLETED"
	}
	if !completed {
		waitEvent(t, c, "BLOCK_JOB_COMPLETED")
	}
	c.Command(t, "block-export-del", map[string]any{"id": "guest"})
	c.Command(t, "quit", nil)
	_ = d.Wait()
	for _, img := range []string{"src.qcow2", "tgt.qcow2"} {
		run(t, dir, "qemu-img", "check", "-q", img)
	}
	expect := readFile(t, filepath.Join(dir, "expect.raw"))
	run(t, dir, "qemu-img", "convert", "-O", "raw", "tgt.qcow2", "tgt.raw")
	sameBytes(t, "backup target", readFile(t, filepath.Join(dir, "tgt.raw")), expect)
	final := bytes.Clone(expect)
	apply(final, writes)
	run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "src.raw")
	sameBytes(t, "source after the writes", readFile(t, filepath.Join(dir, "src.raw")), final)
}
