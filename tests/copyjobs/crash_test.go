// Package copyjobs holds the slow interop tests of the copy jobs (stream,
// mirror, backup) against a real blockd process and QEMU's tools, in a
// package of their own so CI runs them beside the others.
package copyjobs

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	qmptest "blockd/tests/qmp"
)

var blockdBin string

func TestMain(m *testing.M) { qmptest.RunWithBlockd(m, &blockdBin) }

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(qmptest.QemuTool(t, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// check runs qemu-img check; leaked clusters (exit 3) are what a crash
// may leave, anything else is damage.
func check(t *testing.T, dir, img string) {
	t.Helper()
	cmd := exec.Command(qmptest.QemuTool(t, "qemu-img"), "check", img)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 && !strings.Contains(string(out), "ERROR") {
		return
	}
	t.Fatalf("qemu-img check %s after the crash: %v\n%s", img, err, out)
}

// kill ends blockd with SIGKILL: no flush, no cleanup.
func kill(t *testing.T, d *qmptest.Daemon) {
	t.Helper()
	_ = syscall.Kill(d.Pid(), syscall.SIGKILL)
	_ = d.Wait()
}

// Crash rounds of block-stream: blockd dies at a random point of the
// job (before, during or after the header rewrite); every image still
// passes qemu-img check and the chain top's header names reads the data
// it read before.
func TestStreamSurvivesSIGKILL(t *testing.T) {
	rounds := 4
	if testing.Short() {
		rounds = 2
	}
	r := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for round := 0; round < rounds; round++ {
		delay := time.Duration(r.IntN(400)) * time.Millisecond
		t.Run(fmt.Sprintf("kill-after-%v", delay), func(t *testing.T) {
			dir := t.TempDir()
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
			run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 48M", "-c", "write -z 8M 1M", "base.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2")
			run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 16M 40M", "mid.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2")
			run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x33 60M 2M", "top.qcow2")
			run(t, dir, "qemu-img", "convert", "-O", "raw", "top.qcow2", "expect.raw")

			d := qmptest.StartDaemon(t, blockdBin, dir)
			c := qmptest.Dial(t, d.Sock)
			c.Command(t, "qmp_capabilities", nil)
			c.Command(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
				"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}})
			if rep, _ := c.Command(t, "block-stream", map[string]any{"job-id": "s", "device": "top",
				"speed": 256 << 20}); rep["error"] != nil {
				t.Fatalf("block-stream: %v", rep["error"])
			}
			time.Sleep(delay)
			kill(t, d)
			c.Close()
			for _, img := range []string{"base.qcow2", "mid.qcow2", "top.qcow2"} {
				check(t, dir, img)
			}
			run(t, dir, "qemu-img", "compare", "-q", "top.qcow2", "expect.raw")
		})
	}
}

// Crash rounds of a mirror's completion: blockd dies at a random point
// after block-job-complete; source and target pass qemu-img check, the
// source still reads its data, and a target the switch reached does too.
func TestMirrorCompleteSurvivesSIGKILL(t *testing.T) {
	rounds := 4
	if testing.Short() {
		rounds = 2
	}
	r := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	for round := 0; round < rounds; round++ {
		delay := time.Duration(r.IntN(30)) * time.Millisecond
		t.Run(fmt.Sprintf("kill-after-%v", delay), func(t *testing.T) {
			dir := t.TempDir()
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "64M")
			run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x44 0 40M", "-c", "write -z 4M 1M", "src.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "dst.qcow2", "64M")
			run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "expect.raw")

			d := qmptest.StartDaemon(t, blockdBin, dir)
			c := qmptest.Dial(t, d.Sock)
			c.Command(t, "qmp_capabilities", nil)
			for _, n := range []string{"src", "dst"} {
				c.Command(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": n,
					"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, n+".qcow2")}})
			}
			if rep, _ := c.Command(t, "blockdev-mirror", map[string]any{"job-id": "m", "device": "src",
				"target": "dst", "sync": "full"}); rep["error"] != nil {
				t.Fatalf("blockdev-mirror: %v", rep["error"])
			}
			waitEvent(t, c, "BLOCK_JOB_READY")
			b := []byte(`{"execute": "block-job-complete", "arguments": {"device": "m"}}` + "\n")
			if err := c.Send(b); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			kill(t, d)
			c.Close()
			check(t, dir, "src.qcow2")
			check(t, dir, "dst.qcow2")
			run(t, dir, "qemu-img", "compare", "-q", "src.qcow2", "expect.raw")
			// READY came after the target was flushed in sync, and no
			// guest wrote since: the target holds the data either way.
			run(t, dir, "qemu-img", "compare", "-q", "dst.qcow2", "expect.raw")
		})
	}
}

func waitEvent(t *testing.T, c *qmptest.Client, name string) {
	t.Helper()
	for {
		m, raw, err := c.Next()
		if err != nil {
			t.Fatalf("waiting for %s: %v (%q)", name, err, raw)
		}
		if m["event"] == name {
			return
		}
	}
}

// Image fleecing end to end over NBD (the reference's image-fleecing, old
// style): a backup with sync=none into an overlay of the source, the
// overlay exported read-only; a client writes the source through its own
// export meanwhile, and the fleecing export still reads the data of the
// moment the backup started.
func TestFleecingOverNBD(t *testing.T) {
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "16M")
	run(t, dir, "qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 12M", "src.qcow2")
	run(t, dir, "qemu-img", "convert", "-O", "raw", "src.qcow2", "before.raw")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "src.qcow2", "-F", "qcow2", "fleece.qcow2")
	d := qmptest.StartDaemon(t, blockdBin, dir)
	defer d.Stop(t)
	c := qmptest.Dial(t, d.Sock)
	defer c.Close()
	ok := func(cmd string, args any) {
		t.Helper()
		if rep, _ := c.Command(t, cmd, args); rep["error"] != nil {
			t.Fatalf("%s: %v", cmd, rep["error"])
		}
	}
	sock := filepath.Join(dir, "nbd.sock")
	ok("qmp_capabilities", nil)
	ok("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "src",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "src.qcow2")}})
	ok("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "fleece", "backing": "src",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "fleece.qcow2")}})
	ok("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": sock}}})
	ok("block-export-add", map[string]any{"type": "nbd", "id": "guest", "node-name": "src", "writable": true})
	ok("blockdev-backup", map[string]any{"job-id": "f", "device": "src", "target": "fleece", "sync": "none"})
	ok("block-export-add", map[string]any{"type": "nbd", "id": "fl", "node-name": "fleece"})
	guest := "nbd+unix:///src?socket=" + sock
	fleece := "nbd+unix:///fleece?socket=" + sock
	run(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x66 1M 2M", "-c", "write -z 8M 1M", "-c", "write -P 0x77 14M 1M", guest)
	run(t, dir, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", fleece, "before.raw")
	run(t, dir, "qemu-io", "-f", "raw", "-c", "read -P 0x66 1M 2M", guest)
	ok("block-export-del", map[string]any{"id": "fl"})
	ok("block-job-cancel", map[string]any{"device": "f"})
	c.DeleteExport(t, "guest")
	ok("nbd-server-stop", nil)
	ok("quit", nil)
	_ = d.Wait()
	check(t, dir, "src.qcow2")
	check(t, dir, "fleece.qcow2")
}
