package nbdtest

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/nbd"
)

// TestExportLifecycle: safe deletion is refused while a client is
// connected, hard deletion disconnects it and announces the end after
// the reply (as qemu-storage-daemon does); an exported node cannot be
// deleted; vhost-user-blk and vduse-blk are refused; a snapshot moves
// the export to the overlay, which then gets the writes.
func TestExportLifecycle(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	a, ov := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "ov.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "16M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", ov, "16M")
	s := start(t, dir, "--blockdev", qcow2Node("n", a),
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on")

	c, err := nbd.Connect(s.dial(t), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := s.cmdErr(t, "block-export-del", map[string]any{"id": "e"}); got != "export 'e' still in use" {
		t.Fatalf("safe del with a client: %q", got)
	}
	if got := s.cmdErr(t, "blockdev-del", map[string]any{"node-name": "n"}); got != "Node n is in use" {
		t.Fatalf("blockdev-del of an exported node: %q", got)
	}
	for _, typ := range []string{"vhost-user-blk", "vduse-blk"} {
		args := map[string]any{"type": typ, "id": "v", "node-name": "n"}
		if typ == "vduse-blk" {
			args["name"] = "v"
		} else {
			args["addr"] = map[string]any{"type": "unix", "path": filepath.Join(dir, "v.sock")}
		}
		if got := s.cmdErr(t, "block-export-add", args); got != "No driver found for the requested export type" {
			t.Fatalf("%s: %q", typ, got)
		}
	}

	// A snapshot: the export follows the node's users to the overlay.
	s.cmd(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "ov",
		"file": map[string]any{"driver": "file", "filename": ov}})
	s.cmd(t, "blockdev-snapshot", map[string]any{"node": "n", "overlay": "ov"})
	if got := s.cmd(t, "query-block-exports", nil).([]any)[0].(map[string]any)["node-name"]; got != "ov" {
		t.Fatalf("export after snapshot is on %v", got)
	}
	p := bytes.Repeat([]byte{0x42}, 4096)
	if err := c.WriteAt(p, 8192, nbd.CmdFlagFUA); err != nil {
		t.Fatal(err)
	}

	r, evs := s.qmp.Command(t, "block-export-del", map[string]any{"id": "e", "mode": "hard"})
	if _, ok := r["return"]; !ok || len(evs) != 0 {
		t.Fatalf("hard del: %v, events before the reply %v", r, evs)
	}
	s.waitEvent(t, "BLOCK_EXPORT_DELETED")
	_ = c.Flush() // the connection is gone: nothing to assert but no hang
	deadline := time.Now().Add(10 * time.Second)
	for len(s.cmd(t, "query-block-exports", nil).([]any)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("export still listed after its deletion event")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd(t, "blockdev-del", map[string]any{"node-name": "ov"})
	s.qmp.Close()
	s.Stop(t)
	out := run(t, "qemu-io", "-r", "-c", "read -P 0x42 8k 4k", "-c", "read -P 0 0 8k", ov)
	if strings.Contains(out, "fail") {
		t.Fatalf("write after the snapshot did not reach the overlay: %s", out)
	}
	run(t, "qemu-img", "check", "-q", a)
	run(t, "qemu-img", "check", "-q", ov)
}
