package qmptest

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Persistent bitmaps in qcow2 images: made by qemu-img bitmap and read
// by the daemon, made and written by the daemon and read by qemu-img
// info and a daemon opening the image again; qemu-img check clean after
// every close. The same scenario runs on qemu-storage-daemon and every
// observation must match.

func bitmapImageSetup(t *testing.T, dir string) {
	qemuImg, qemuIO := qemuTool(t, "qemu-img"), qemuTool(t, "qemu-io")
	img := filepath.Join(dir, "a.qcow2")
	for _, args := range [][]string{
		{qemuImg, "create", "-q", "-f", "qcow2", img, "16M"},
		{qemuImg, "bitmap", "--add", "-g", "128k", img, "old"},
		{qemuImg, "bitmap", "--add", "--disable", img, "olddis"},
		{qemuIO, "-c", "write 1M 64k", img}, // qemu-io marks "old", loaded and stored by it
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
}

// bitmapState logs what the daemon says of node's bitmaps: the query
// entries and the image's stored bitmaps, without host allocation.
func (s *session) bitmapState(node string) {
	s.t.Helper()
	r, _ := s.c.Command(s.tb, "query-named-block-nodes", map[string]any{"flat": true})
	list, _ := r["return"].([]any)
	for _, x := range list {
		n, _ := x.(map[string]any)
		if n["node-name"] != node {
			continue
		}
		img, _ := n["image"].(map[string]any)
		fs, _ := img["format-specific"].(map[string]any)
		data, _ := fs["data"].(map[string]any)
		s.observe("%s dirty-bitmaps %s stored %s", node, compact(n["dirty-bitmaps"]), compact(data["bitmaps"]))
	}
	if b, ok := r["return"]; !ok || b == nil {
		s.t.Errorf("[%s] query-named-block-nodes: %v", s.name, r)
	}
}

func (s *session) sums(node string, names ...string) {
	s.t.Helper()
	for _, n := range names {
		s.Cmd("x-debug-block-dirty-bitmap-sha256", map[string]any{"node": node, "name": n})
	}
}

// imageBitmaps logs what qemu-img info says of the stored bitmaps.
func (s *session) imageBitmaps(img string) {
	s.t.Helper()
	out, err := exec.Command(qemuTool(s.t, "qemu-img"), "info", "-U", "--output=json", img).Output()
	if err != nil {
		s.t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		Spec struct {
			Data struct {
				Bitmaps json.RawMessage `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		s.t.Fatal(err)
	}
	s.observe("qemu-img info bitmaps: %s", info.Spec.Data.Bitmaps)
}

func TestPersistentBitmapsInterop(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, bitmapImageSetup, func(s *session) {
		img := filepath.Join(s.Dir, "a.qcow2")
		add := map[string]any{"driver": "qcow2", "node-name": "a",
			"file": map[string]any{"driver": "file", "node-name": "af", "filename": img}}
		s.OK("blockdev-add", add)
		s.bitmapState("a") // loaded, in use on disk while open
		s.sums("a", "old", "olddis")
		s.OK("block-dirty-bitmap-add", map[string]any{"node": "a", "name": "p", "persistent": true})
		s.OK("block-dirty-bitmap-add", map[string]any{"node": "a", "name": "t", "granularity": 4096})
		s.Cmd("block-dirty-bitmap-add", map[string]any{"node": "a", "name": "old", "persistent": true})
		s.OK("block-dirty-bitmap-add", map[string]any{"node": "a", "name": "gone", "persistent": true})
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "a", "writable": true})
		s.ToolOK(qemuIO, "-f", "raw", "-c", "write 0 4k", "-c", "write 3M 300k", "-c", "write -z 9M 64k",
			"nbd+unix:///a?socket="+filepath.Join(s.Dir, "nbd.sock"))
		s.sums("a", "old", "olddis", "p", "t", "gone")
		s.OK("block-dirty-bitmap-remove", map[string]any{"node": "a", "name": "gone"})
		s.OK("block-dirty-bitmap-disable", map[string]any{"node": "a", "name": "p"})
		// Reopened read-only the bitmaps are stored and read-only; back
		// read-write they are in use and record again.
		reopen := func(ro bool) {
			s.OK("blockdev-reopen", map[string]any{"options": []any{map[string]any{"driver": "qcow2",
				"node-name": "a", "file": "af", "read-only": ro}}})
		}
		s.c.DeleteExport(s.t, "e")
		reopen(true)
		s.imageBitmaps(img)
		s.bitmapState("a")
		s.Cmd("block-dirty-bitmap-clear", map[string]any{"node": "a", "name": "old"})
		reopen(false)
		s.imageBitmaps(img)
		s.bitmapState("a")
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "a", "writable": true})
		s.ToolOK(qemuIO, "-f", "raw", "-c", "write 12M 4k", "nbd+unix:///a?socket="+filepath.Join(s.Dir, "nbd.sock"))
		s.sums("a", "old", "olddis", "t")
		s.c.DeleteExport(s.t, "e")
		s.OK("blockdev-del", map[string]any{"node-name": "a"}) // stores the bitmaps
		s.imageBitmaps(img)
		s.ToolOK(qemuImg, "check", img)
		s.OK("blockdev-add", add)
		s.bitmapState("a")
		s.sums("a", "old", "olddis", "p")
		s.OK("block-dirty-bitmap-remove", map[string]any{"node": "a", "name": "olddis"})
		s.OK("block-dirty-bitmap-clear", map[string]any{"node": "a", "name": "old"})
		s.OK("blockdev-del", map[string]any{"node-name": "a"})
		s.imageBitmaps(img)
		s.ToolOK(qemuImg, "check", img)
		// A read-only node's bitmaps are read-only and the image stays
		// as it was.
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "a", "read-only": true, "file": fileRef(img)})
		s.bitmapState("a")
		s.Cmd("block-dirty-bitmap-clear", map[string]any{"node": "a", "name": "p"})
		s.Cmd("block-dirty-bitmap-remove", map[string]any{"node": "a", "name": "p"})
		s.OK("block-dirty-bitmap-enable", map[string]any{"node": "a", "name": "p"})
		s.OK("blockdev-del", map[string]any{"node-name": "a"})
		s.imageBitmaps(img)
	})
}

// A daemon killed while a bitmap is in use leaves it flagged in use: the
// next open reports it inconsistent (refusing everything but removal),
// the other bitmaps and the data are intact, and QEMU agrees.
func TestPersistentBitmapsAfterSigkill(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, bitmapImageSetup, func(s *session) {
		img := filepath.Join(s.Dir, "a.qcow2")
		add := map[string]any{"driver": "qcow2", "node-name": "a", "file": fileRef(img)}
		s.OK("blockdev-add", add)
		s.OK("block-dirty-bitmap-add", map[string]any{"node": "a", "name": "p", "persistent": true})
		s.OK("blockdev-del", map[string]any{"node-name": "a"}) // p stored, clean
		s.OK("blockdev-add", add)                              // old, olddis and p in use
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "a", "writable": true})
		s.ToolOK(qemuIO, "-f", "raw", "-c", "write -P 0x5a 2M 128k",
			"nbd+unix:///a?socket="+filepath.Join(s.Dir, "nbd.sock"))

		// SIGKILL, then a fresh daemon on the same directory.
		if err := s.d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = s.d.cmd.Wait()
		s.c.Close()
		s.imageBitmaps(img)
		out, _ := exec.Command(qemuImg, "check", img).CombinedOutput()
		// Clusters allocated since the last flush may leak; nothing else.
		s.observe("qemu-img check errors: %v", strings.Contains(string(out), "ERROR"))
		s.ToolOK(qemuIO, "-r", "-c", "read -P 0x5a 2M 128k", img)

		bin := s.d.cmd.Path
		s.d = StartDaemon(t, bin, s.Dir)
		s.c = Dial(t, s.d.Sock)
		if s.name == "qemu-storage-daemon" {
			negotiateReference(t, s.c)
		} else {
			s.c.Negotiate(t)
		}
		s.OK("blockdev-add", add)
		s.bitmapState("a")
		s.Cmd("x-debug-block-dirty-bitmap-sha256", map[string]any{"node": "a", "name": "p"})
		s.Cmd("block-dirty-bitmap-clear", map[string]any{"node": "a", "name": "p"})
		s.Cmd("block-dirty-bitmap-enable", map[string]any{"node": "a", "name": "p"})
		s.Cmd("block-dirty-bitmap-merge", map[string]any{"node": "a", "target": "olddis", "bitmaps": []any{"p"}})
		s.OK("block-dirty-bitmap-remove", map[string]any{"node": "a", "name": "p"})
		s.OK("block-dirty-bitmap-remove", map[string]any{"node": "a", "name": "old"})
		s.OK("blockdev-del", map[string]any{"node-name": "a"})
		s.imageBitmaps(img)
	})
}
