package qmptest

import (
	"bufio"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Image locking through the daemon: blockd's nodes and QEMU's tools see
// each other's permissions through the lock bytes of the image file, as
// two QEMU processes do. Every scenario also runs against
// qemu-storage-daemon when it is installed and must observe the same.
//
// A node nobody uses takes no permissions, in QEMU as in blockd, and raw
// only passes on what its own parents take, so a raw or file node added by
// itself locks nothing (TestLockingUnusedNodesTakeNothing). What takes
// write on the file is a format node that is writable: qcow2 takes
// consistent read, write and resize on its file child and shares only
// consistent read and write-unchanged, as QEMU's does.

// qcow2Setup creates img.qcow2 with qemu-img.
func qcow2Setup(t *testing.T, dir string) {
	qemuImg := qemuTool(t, "qemu-img")
	out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", filepath.Join(dir, "img.qcow2"), "16M").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
}

func fileRef(path string) map[string]any {
	return map[string]any{"driver": "file", "filename": path}
}

// While blockd holds a qcow2 image writable, QEMU's tools cannot write it
// nor open it without force-share; after blockdev-del they can.
func TestLockingWritableNodeBlocksQemuTools(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "file": fileRef(img)})
		s.Graph()

		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 64k", img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuImg, "info", img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuIO, "-r", "-c", "read 0 4k", img)
		s.ToolOK(qemuImg, "info", "-U", img)
		s.ToolOK(qemuIO, "-r", "-U", "-c", "read 0 4k", img)

		s.OK("blockdev-del", map[string]any{"node-name": "q"})
		s.ToolOK(qemuIO, "-c", "write 0 64k", img)
		s.ToolOK(qemuImg, "info", img)
	})
}

// raw without a window is a filter: a qcow2 node above it takes write on
// the file through it, with the same effect on QEMU's tools.
func TestLockingThroughRawFilter(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q",
			"file": map[string]any{"driver": "raw", "node-name": "r", "file": fileRef(img)}})
		s.Graph()
		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 64k", img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuImg, "info", img)
		s.OK("blockdev-del", map[string]any{"node-name": "q"})
		s.ToolOK(qemuIO, "-c", "write 0 64k", img)
		s.ToolOK(qemuImg, "info", img)
	})
}

// A read-only node lets readers in and keeps writers out.
func TestLockingReadOnlyNode(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "read-only": true, "file": fileRef(img)})
		s.Graph()
		s.ToolOK(qemuIO, "-r", "-c", "read 0 4k", img)
		s.ToolOK(qemuImg, "info", img)
		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 64k", img)
		s.OK("blockdev-del", map[string]any{"node-name": "q"})
		s.ToolOK(qemuIO, "-c", "write 0 64k", img)
	})
}

// Nodes that nobody uses hold no permissions: a raw image opened through
// raw and file, or the qcow2 image's bytes through raw, leave QEMU's tools
// free to write.
func TestLockingUnusedNodesTakeNothing(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	setup := func(t *testing.T, dir string) {
		qcow2Setup(t, dir)
		out, err := exec.Command(qemuImg, "create", "-q", "-f", "raw", filepath.Join(dir, "img.raw"), "16M").CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
	}
	compareWithReference(t, setup, func(s *session) {
		raw, q := filepath.Join(s.Dir, "img.raw"), filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", map[string]any{"driver": "raw", "node-name": "r", "file": fileRef(raw)})
		s.OK("blockdev-add", map[string]any{"driver": "raw", "node-name": "rq", "file": fileRef(q)})
		s.OK("blockdev-add", map[string]any{"driver": "raw", "node-name": "w", "offset": 4096, "size": 65536, "file": fileRef(raw)})
		s.Graph()
		s.ToolOK(qemuIO, "-f", "raw", "-c", "write 0 64k", raw)
		s.ToolOK(qemuIO, "-c", "write 0 64k", q)
		s.ToolOK(qemuImg, "info", q)
		s.OK("blockdev-del", map[string]any{"node-name": "r"})
		s.OK("blockdev-del", map[string]any{"node-name": "rq"})
		s.OK("blockdev-del", map[string]any{"node-name": "w"})
	})
}

// The other direction: while qemu-io holds the image open for writing,
// blockdev-add of a writable or read-only qcow2 node fails with QEMU's
// lock error and leaves nothing behind; force-share lets a read-only node
// in; once qemu-io has quit, a writable node can be added.
func TestLockingQemuHoldsImage(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		stop := holdImage(s.t, qemuIO, img)
		s.Err("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "file": fileRef(img)},
			`Failed to get "write" lock`)
		s.Err("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "read-only": true, "file": fileRef(img)},
			`Failed to get shared "write" lock`)
		if names := s.NodeNames(); len(names) != 0 {
			s.t.Errorf("[%s] a refused add left nodes: %q", s.name, names)
		}
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "shared", "read-only": true,
			"force-share": true, "file": fileRef(img)})
		s.Graph()
		stop()
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "file": fileRef(img)})
		s.OK("blockdev-del", map[string]any{"node-name": "q"})
		s.OK("blockdev-del", map[string]any{"node-name": "shared"})
	})
}

// holdImage starts an interactive qemu-io on img, which keeps the image
// open read-write with its locks until the returned function quits it.
func holdImage(t *testing.T, qemuIO, img string, opts ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(qemuIO, append(opts, img)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// qemu-io prints its prompt once the image is open; a command and its
	// reply make sure it got that far.
	ready := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		if _, err := io.WriteString(stdin, "length\n"); err != nil {
			ready <- err
			return
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains(line, "MiB") {
				ready <- nil
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("qemu-io %v did not open %s: %v", opts, img, err)
		}
	case <-time.After(ReplyTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("qemu-io %v did not open %s in time", opts, img)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_, _ = io.WriteString(stdin, "quit\n")
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(ReplyTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}
