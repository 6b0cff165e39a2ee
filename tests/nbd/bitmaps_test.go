package nbdtest

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pullScript copies the extents the qemu:dirty-bitmap:b context marks
// dirty from the source export (URI) to the target (DST), reading
// nothing else, and prints how many bytes it copied.
const pullScript = `
import nbd
h.add_meta_context("qemu:dirty-bitmap:b")
h.connect_uri(URI)
assert h.can_meta_context("qemu:dirty-bitmap:b")
dst = nbd.NBD()
dst.connect_uri(DST)
size = h.get_size()
dirty = []
def cb(meta, off, ents, err):
    if meta != "qemu:dirty-bitmap:b":
        return 0
    o = off
    for i in range(0, len(ents), 2):
        if ents[i + 1] & 1:
            dirty.append((o, ents[i]))
        o += ents[i]
    seen.append(o)
    return 0
off = 0
while off < size:
    seen = []
    h.block_status(min(size - off, 1 << 30), off, cb)
    off = max(seen)
copied = 0
for o, l in dirty:
    for c in range(o, o + l, 1 << 20):
        n = min(1 << 20, o + l - c)
        dst.pwrite(h.pread(n, c), c)
        copied += n
dst.flush()
dst.shutdown()
print("copied", copied, "extents", len(dirty))
`

// waitJobGone polls query-jobs until the job has been dismissed.
func (s *server) waitJobGone(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		jobs, _ := s.cmd(t, "query-jobs", nil).([]any)
		found := false
		for _, j := range jobs {
			if m, _ := j.(map[string]any); m["id"] == id {
				found = true
			}
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not finish: %v", id, jobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bitmapCount is the dirty count of node's bitmap name.
func (s *server) bitmapCount(t *testing.T, node, name string) int64 {
	t.Helper()
	nodes, _ := s.cmd(t, "query-named-block-nodes", map[string]any{"flat": true}).([]any)
	for _, n := range nodes {
		m, _ := n.(map[string]any)
		if m["node-name"] != node {
			continue
		}
		bms, _ := m["dirty-bitmaps"].([]any)
		for _, b := range bms {
			bm, _ := b.(map[string]any)
			if bm["name"] == name {
				return int64(bm["count"].(float64))
			}
		}
	}
	t.Fatalf("no bitmap %s on %s", name, node)
	return 0
}

// The incremental backup loop end to end, with QEMU's tools on the other
// side: a full backup with a persistent bitmap, writes, an incremental
// backup job (sync=incremental), more writes, an incremental pull over
// NBD that reads only the extents of qemu:dirty-bitmap:b into an
// overlay qemu-nbd serves; full + incrementals then equal the source
// byte for byte (qemu-img compare), every image checks clean, and the
// amount each incremental copied is exactly the bitmap's dirty count.
func TestIncrementalBackupLoop(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdsh", "nbdinfo")
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p("src.qcow2"), "16M")
	run(t, "qemu-io", "-c", "write -P 0x11 0 8M", p("src.qcow2"))
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p("full.qcow2"), "16M")
	s := start(t, dir, "--blockdev", qcow2Node("src", p("src.qcow2")))
	s.cmd(t, "block-dirty-bitmap-add", map[string]any{"node": "src", "name": "b", "persistent": true})

	// Full backup; the bitmap then holds only what was written meanwhile.
	s.cmd(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "full",
		"file": map[string]any{"driver": "file", "filename": p("full.qcow2")}})
	s.cmd(t, "blockdev-backup", map[string]any{"job-id": "full", "device": "src", "target": "full",
		"sync": "full", "bitmap": "b", "bitmap-mode": "on-success"})
	s.waitJobGone(t, "full")
	s.cmd(t, "blockdev-del", map[string]any{"node-name": "full"})
	if c := s.bitmapCount(t, "src", "b"); c != 0 {
		t.Fatalf("bitmap after the full backup: %d dirty bytes", c)
	}

	s.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "rw", "node-name": "src",
		"name": "src", "writable": true})
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 4k", "-c", "write -P 0x33 5M 300k",
		"-c", "write -z 7M 64k", "-c", "write -P 0x34 15M 1M", s.uri("src"))
	dirty1 := s.bitmapCount(t, "src", "b")
	if want := int64((1 + 5 + 1 + 16) * 65536); dirty1 != want {
		t.Fatalf("dirty after the first writes: %d, want %d", dirty1, want)
	}

	// Incremental 1: a backup job into an overlay of the full backup.
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p("full.qcow2"), "-F", "qcow2", p("inc1.qcow2"))
	s.cmd(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "inc1",
		"file": map[string]any{"driver": "file", "filename": p("inc1.qcow2")}})
	s.cmd(t, "blockdev-backup", map[string]any{"job-id": "inc1", "device": "src", "target": "inc1",
		"sync": "incremental", "bitmap": "b"})
	s.waitJobGone(t, "inc1")
	s.cmd(t, "blockdev-del", map[string]any{"node-name": "inc1"})
	if c := s.bitmapCount(t, "src", "b"); c != 0 {
		t.Fatalf("bitmap after the incremental backup: %d dirty bytes", c)
	}
	var m []map[string]any
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", p("inc1.qcow2"))), &m); err != nil {
		t.Fatal(err)
	}
	var own int64
	for _, e := range m {
		if e["depth"].(float64) == 0 {
			own += int64(e["length"].(float64))
		}
	}
	if own != dirty1 {
		t.Errorf("incremental 1 holds %d bytes of its own, the bitmap had %d dirty", own, dirty1)
	}

	// Incremental 2: pulled over NBD, only the dirty extents read.
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x44 2M 64k", "-c", "write -P 0x55 12M 1M",
		"-c", "write -P 0x66 1M 4k", s.uri("src"))
	s.qmp.DeleteExport(t, "rw")
	s.waitExportGone(t, "rw")
	s.cmd(t, "block-dirty-bitmap-disable", map[string]any{"node": "src", "name": "b"})
	dirty2 := s.bitmapCount(t, "src", "b")
	s.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "pull", "node-name": "src",
		"name": "pull", "bitmaps": []any{"b"}})
	var mapOut []struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
		Type   int   `json:"type"`
	}
	if err := json.Unmarshal([]byte(run(t, "nbdinfo", "--map=qemu:dirty-bitmap:b", "--json", s.uri("pull"))), &mapOut); err != nil {
		t.Fatal(err)
	}
	var mapped int64
	for _, e := range mapOut {
		if e.Type&1 != 0 {
			mapped += e.Length
		}
	}
	if mapped != dirty2 || dirty2 != (1+16+1)*65536 {
		t.Fatalf("nbdinfo maps %d dirty bytes, the bitmap has %d", mapped, dirty2)
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p("inc1.qcow2"), "-F", "qcow2", p("inc2.qcow2"))
	dstSock := p("dst.sock")
	qnbd := exec.Command("qemu-nbd", "--persistent", "-f", "qcow2", "-k", dstSock, p("inc2.qcow2"))
	if err := qnbd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if qnbd.ProcessState == nil {
			_ = qnbd.Process.Kill()
			_ = qnbd.Wait()
		}
	}()
	for i := 0; ; i++ {
		if _, err := runErr("nbdinfo", "--size", "nbd+unix:///?socket="+dstSock); err == nil {
			break
		}
		if i > 200 {
			t.Fatal("qemu-nbd did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := run(t, "nbdsh", "-c", "URI = '"+s.uri("pull")+"'", "-c", "DST = 'nbd+unix:///?socket="+dstSock+"'",
		"-c", pullScript)
	fields := strings.Fields(strings.TrimSpace(out))
	if len(fields) != 4 || fields[1] != strconv.FormatInt(dirty2, 10) {
		t.Fatalf("pull: %q, want %d bytes copied", out, dirty2)
	}
	// SIGTERM: qemu-nbd closes the image cleanly.
	if err := qnbd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := qnbd.Wait(); err != nil {
		t.Fatalf("qemu-nbd: %v", err)
	}
	s.qmp.DeleteExport(t, "pull")
	s.waitExportGone(t, "pull")
	s.cmd(t, "quit", nil)
	_ = s.Wait()

	run(t, "qemu-img", "compare", p("src.qcow2"), p("inc2.qcow2"))
	for _, img := range []string{"src.qcow2", "full.qcow2", "inc1.qcow2", "inc2.qcow2"} {
		run(t, "qemu-img", "check", p(img))
	}
	// The persistent bitmap was stored, disabled, with what the pull read.
	info := run(t, "qemu-img", "info", "--output=json", p("src.qcow2"))
	if !strings.Contains(info, `"name": "b"`) || strings.Contains(info, `"auto"`) {
		t.Errorf("stored bitmap: %s", info)
	}
}

// waitExportGone waits until block-export-del has completed.
func (s *server) waitExportGone(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, _ := s.cmd(t, "query-block-exports", nil).([]any)
		found := false
		for _, e := range list {
			if m, _ := e.(map[string]any); m["id"] == id {
				found = true
			}
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("export %s still there", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
