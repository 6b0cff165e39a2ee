package rbdtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// chain opens top.qcow2 -> mid.qcow2 -> rbd image (the base, a raw
// backing) in blockd, the qcow2 layers being local files.
func addChain(t *testing.T, d *daemon, dir, conf, img string) {
	t.Helper()
	d.ok(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")},
		"backing": map[string]any{"driver": "qcow2", "node-name": "mid",
			"file":    map[string]any{"driver": "file", "filename": filepath.Join(dir, "mid.qcow2")},
			"backing": rbdNode("base", conf, img)}})
}

// makeChain writes three layers of patterns and returns the raw
// reference of what top reads (qemu-img convert through librbd).
func makeChain(t *testing.T, dir, conf, img string, size string) {
	t.Helper()
	uri := qemuURI(conf, img)
	tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 12M", "-c", "write -P 0x12 20M 4M", uri)
	tool(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", "mid.qcow2", size)
	tool(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 4M 8M", "-c", "write -z 22M 1M", "mid.qcow2")
	tool(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", size)
	tool(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 10M 4M", "-c", "write -P 0x34 30M 1M", "top.qcow2")
	tool(t, dir, "qemu-img", "convert", "-U", "-O", "raw", "top.qcow2", "expect.raw")
}

// A qcow2 overlay on a local file with an rbd image as backing reads
// through to the cluster; an intermediate commit (mid into the rbd base)
// and then an active commit (top into it) leave the rbd image equal to
// the raw reference, as qemu-img reads it through librbd.
func TestCommitIntoRBD(t *testing.T) {
	conf := needCluster(t)
	dir := t.TempDir()
	img := newImage(t, 32<<20)
	makeChain(t, dir, conf, img, "32M")

	d := startBlockd(t, dir)
	addChain(t, d, dir, conf, img)
	nbd := d.export(t, "top", true)
	tool(t, dir, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", nbd, filepath.Join(dir, "expect.raw"))
	d.ok(t, "block-export-del", map[string]any{"id": "top", "mode": "hard"})

	// Intermediate: mid into base.
	d.ok(t, "block-commit", map[string]any{"job-id": "c1", "device": "top", "top-node": "mid", "base-node": "base"})
	waitJob(t, d, "c1", "BLOCK_JOB_COMPLETED")
	// Active: top into base.
	d.ok(t, "block-commit", map[string]any{"job-id": "c2", "device": "top"})
	waitJob(t, d, "c2", "BLOCK_JOB_READY")
	d.ok(t, "block-job-complete", map[string]any{"device": "c2"})
	waitJob(t, d, "c2", "BLOCK_JOB_COMPLETED")
	nbd = d.export(t, "base", false)
	tool(t, dir, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", nbd, filepath.Join(dir, "expect.raw"))
	d.ok(t, "block-export-del", map[string]any{"id": "base", "mode": "hard"})
	d.stop(t)
	tool(t, dir, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", qemuURI(conf, img), filepath.Join(dir, "expect.raw"))
}

func waitJob(t *testing.T, d *daemon, id, event string) {
	t.Helper()
	for {
		m, raw, err := d.c.Next()
		if err != nil {
			t.Fatalf("waiting for %s of %s: %v (%q)\n%s", event, id, err, raw, d.Stderr())
		}
		if m["event"] == "BLOCK_JOB_ERROR" {
			t.Fatalf("job %s: %v", id, m)
		}
		if m["event"] == event {
			if data, _ := m["data"].(map[string]any); data["device"] == id {
				if data["error"] != nil {
					t.Fatalf("job %s: %v", id, m)
				}
				return
			}
		}
	}
}

// SIGKILL at a random point of an active commit into rbd: the image
// opens again (librbd takes over the dead client's lock), what was
// written and flushed through blockd before the commit is there, and
// every range reads either its old or its committed data.
func TestCommitIntoRBDSurvivesSIGKILL(t *testing.T) {
	conf := needCluster(t)
	r := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	for round := 0; round < 2; round++ {
		delay := time.Duration(r.IntN(300)) * time.Millisecond
		t.Run(fmt.Sprintf("kill-after-%v", delay), func(t *testing.T) {
			dir := t.TempDir()
			img := newImage(t, 64<<20)
			uri := qemuURI(conf, img)
			tool(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", uri, "-F", "raw", "top.qcow2", "64M")
			tool(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 48M", "top.qcow2")

			d := startBlockd(t, dir)
			// Flushed writes through blockd into the rbd image, where
			// the top does not cover it.
			d.ok(t, "blockdev-add", rbdNode("base", conf, img))
			nbd := d.export(t, "base", true)
			tool(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x66 56M 4M", "-c", "flush", nbd)
			d.ok(t, "block-export-del", map[string]any{"id": "base", "mode": "hard"})
			d.ok(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
				"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}, "backing": "base"})
			d.ok(t, "block-commit", map[string]any{"job-id": "c", "device": "top", "speed": 64 << 20})
			time.Sleep(delay)
			kill(d)

			// Reading needs no lock: the image opens at once, though the
			// dead client's watch and lock are still registered.
			tool(t, dir, "qemu-io", "-f", "raw", "-r", "-U", "-c", "read -P 0x66 56M 4M", "-c", "read -P 0 48M 8M", "-c", "read -P 0 60M 4M", uri)
			tool(t, dir, "qemu-io", "-f", "qcow2", "-r", "-U", "-c", "read -P 0x66 56M 4M", "-c", "read -P 0x55 0 48M", "top.qcow2")
			// The committed range holds, per 64 KiB (the copy's
			// granularity is larger), either nothing yet or the data.
			tool(t, dir, "qemu-img", "convert", "-U", "-f", "raw", "-O", "raw", uri, "after.raw")
			after, err := os.ReadFile(filepath.Join(dir, "after.raw"))
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < 48<<20; off += 64 << 10 {
				chunk := after[off : off+64<<10]
				if !bytes.Equal(chunk, bytes.Repeat([]byte{0x55}, len(chunk))) && !bytes.Equal(chunk, make([]byte, len(chunk))) {
					t.Fatalf("rbd image at %d after the crash: neither old nor committed data", off)
				}
			}
		})
	}
}
