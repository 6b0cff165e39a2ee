package blockcore_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"blockd/blockcore"
	"blockd/schema"
)

type dirtyInfo struct {
	Name         string `json:"name"`
	Count        int64  `json:"count"`
	Granularity  int64  `json:"granularity"`
	Recording    bool   `json:"recording"`
	Busy         bool   `json:"busy"`
	Persistent   bool   `json:"persistent"`
	Inconsistent *bool  `json:"inconsistent"`
}

func bitmapsOf(t *testing.T, e *env, node string) []dirtyInfo {
	t.Helper()
	raw := e.mustExec(t, "query-named-block-nodes", `{"flat": true}`)
	var nodes []struct {
		NodeName string      `json:"node-name"`
		Dirty    []dirtyInfo `json:"dirty-bitmaps"`
	}
	if err := json.Unmarshal(raw, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.NodeName == node {
			return n.Dirty
		}
	}
	t.Fatalf("no node %s", node)
	return nil
}

// rawNode adds a raw node with discard=unmap (without it a discard is
// dropped before it is tracked and marks nothing).
func rawNode(t *testing.T, e *env, name string, size int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".raw")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "raw", "node-name": %q, "discard": "unmap", "file": {"driver": "file", "filename": %q}}`, name, path))
}

// Writes, zero writes and discards through a node mark its recording
// bitmaps at their granularity; disabled bitmaps keep their bits.
func TestBitmapsFollowWrites(t *testing.T) {
	e := newEnv(t)
	rawNode(t, e, "r", 4<<20)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "a"}`)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "b", "granularity": 512}`)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "off", "disabled": true}`)
	io := e.node(t, "r").IO()
	if err := io.WriteAt(make([]byte, 100), 70000, 0); err != nil { // granule 1 of a
		t.Fatal(err)
	}
	if err := io.WriteZeroes(1<<20, 4096, 0); err != nil {
		t.Fatal(err)
	}
	if err := io.Discard(3<<20, 65536); err != nil {
		t.Fatal(err)
	}
	// A node without discard=unmap drops discards untracked.
	kp := filepath.Join(t.TempDir(), "keep.raw")
	if err := os.WriteFile(kp, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "raw", "node-name": "keep", "file": {"driver": "file", "filename": %q}}`, kp))
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "keep", "name": "k"}`)
	if err := e.node(t, "keep").IO().Discard(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if k := bitmapsOf(t, e, "keep"); k[0].Count != 0 {
		t.Fatalf("a dropped discard marked %d bytes", k[0].Count)
	}
	got := bitmapsOf(t, e, "r")
	if len(got) != 3 || got[0].Name != "off" || got[1].Name != "b" || got[2].Name != "a" {
		t.Fatalf("bitmaps not newest first: %+v", got)
	}
	if got[2].Count != 3*65536 || got[2].Granularity != 65536 || !got[2].Recording {
		t.Fatalf("a: %+v", got[2])
	}
	if want := int64(512 + 4096 + 65536); got[1].Count != want {
		t.Fatalf("b: count %d, want %d", got[1].Count, want)
	}
	if got[0].Count != 0 || got[0].Recording {
		t.Fatalf("off: %+v", got[0])
	}
	// disable stops recording; enable resumes.
	e.mustExec(t, "block-dirty-bitmap-disable", `{"node": "r", "name": "a"}`)
	_ = io.WriteAt(make([]byte, 512), 2<<20, 0)
	if c := bitmapsOf(t, e, "r")[2].Count; c != 3*65536 {
		t.Fatalf("disabled bitmap recorded: %d", c)
	}
	e.mustExec(t, "block-dirty-bitmap-enable", `{"node": "r", "name": "a"}`)
	_ = io.WriteAt(make([]byte, 512), 2<<20+65536, 0)
	if c := bitmapsOf(t, e, "r")[2].Count; c != 4*65536 {
		t.Fatalf("enabled bitmap: %d", c)
	}
	// merge b (512 B granules, five writes seen) into off: off covers
	// b's ranges at 64 KiB.
	e.mustExec(t, "block-dirty-bitmap-merge", `{"node": "r", "target": "off", "bitmaps": ["b", {"node": "r", "name": "b"}]}`)
	if c := bitmapsOf(t, e, "r")[0].Count; c != 5*65536 {
		t.Fatalf("merged: %d", c)
	}
	e.mustExec(t, "block-dirty-bitmap-clear", `{"node": "r", "name": "off"}`)
	e.mustExec(t, "block-dirty-bitmap-remove", `{"node": "r", "name": "b"}`)
	got = bitmapsOf(t, e, "r")
	if len(got) != 2 || got[0].Count != 0 || got[1].Name != "a" {
		t.Fatalf("after clear and remove: %+v", got)
	}
}

// Each prepared action undoes itself on Abort (the transaction hooks).
func TestBitmapActionsAbort(t *testing.T) {
	e := newEnv(t)
	rawNode(t, e, "r", 1<<20)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "a"}`)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "src"}`)
	_ = e.node(t, "r").IO().WriteAt(make([]byte, 512), 0, 0)
	e.mustExec(t, "block-dirty-bitmap-clear", `{"node": "r", "name": "src"}`)
	_ = e.node(t, "r").IO().WriteAt(make([]byte, 512), 65536*3, 0)
	sum := func(name string) string {
		var s schema.BlockDirtyBitmapSha256
		if err := json.Unmarshal(e.mustExec(t, "x-debug-block-dirty-bitmap-sha256", `{"node": "r", "name": "`+name+`"}`), &s); err != nil {
			t.Fatal(err)
		}
		return s.Sha256
	}
	before := sum("a")
	g := e.g
	bm := schema.BlockDirtyBitmap{Node: "r", Name: "a"}
	yes := true
	steps := []func() (*blockcore.BitmapAction, error){
		func() (*blockcore.BitmapAction, error) {
			return g.PrepareBitmapAdd(&schema.BlockDirtyBitmapAddArgs{Node: "r", Name: "new", Disabled: &yes})
		},
		func() (*blockcore.BitmapAction, error) { return g.PrepareBitmapClear(&bm) },
		func() (*blockcore.BitmapAction, error) { return g.PrepareBitmapEnable(&bm, false) },
		func() (*blockcore.BitmapAction, error) {
			return g.PrepareBitmapMerge(&schema.BlockDirtyBitmapMergeArgs{Node: "r", Target: "a",
				Bitmaps: []schema.BlockDirtyBitmapOrStr{{Local: &[]string{"src"}[0]}}})
		},
		func() (*blockcore.BitmapAction, error) { return g.PrepareBitmapRemove(&bm) },
	}
	for i, step := range steps {
		if err := e.do(func() error {
			a, err := step()
			if err != nil {
				return err
			}
			a.Abort()
			return nil
		}); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got := bitmapsOf(t, e, "r")
		if len(got) != 2 || got[1].Name != "a" || !got[1].Recording || got[1].Busy {
			t.Fatalf("step %d left %+v", i, got)
		}
		if s := sum("a"); s != before {
			t.Fatalf("step %d changed the bits", i)
		}
	}
}

// The refusals of QEMU 7.2 (texts checked against QSD in
// tests/qmp/testdata/bitmaps.qmp), each leaving everything unchanged.
func TestBitmapRefusals(t *testing.T) {
	e := newEnv(t)
	rawNode(t, e, "r", 1<<20)
	rawNode(t, e, "s", 2<<20)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "r", "name": "a"}`)
	e.mustExec(t, "block-dirty-bitmap-add", `{"node": "s", "name": "x"}`)
	for _, c := range []struct{ cmd, args, want string }{
		{"block-dirty-bitmap-add", `{"node": "r", "name": "a"}`, "Bitmap already exists: a"},
		{"block-dirty-bitmap-add", `{"node": "r", "name": ""}`, "Bitmap name cannot be empty"},
		{"block-dirty-bitmap-add", `{"node": "r", "name": "g", "granularity": 1000}`, "Granularity must be power of 2 and at least 512"},
		{"block-dirty-bitmap-add", `{"node": "r", "name": "g", "granularity": 256}`, "Granularity must be power of 2 and at least 512"},
		{"block-dirty-bitmap-add", `{"node": "r", "name": "p", "persistent": true}`, "Can't store persistent bitmaps to r: Operation not supported"},
		{"block-dirty-bitmap-add", `{"node": "q", "name": "p"}`, "Cannot find device='q' nor node-name='q'"},
		{"block-dirty-bitmap-merge", `{"node": "r", "target": "a", "bitmaps": ["zz"]}`, "Dirty bitmap 'zz' not found"},
		{"block-dirty-bitmap-merge", `{"node": "r", "target": "a", "bitmaps": [{"node": "s", "name": "x"}]}`,
			"Bitmaps are of different sizes (destination size is 1048576, source size is 2097152) and can't be merged"},
		{"block-dirty-bitmap-merge", `{"node": "r", "target": "a", "bitmaps": [{"node": "q", "name": "x"}]}`, "Node 'q' not found"},
		{"block-dirty-bitmap-clear", `{"node": "r", "name": "zz"}`, "Dirty bitmap 'zz' not found"},
		{"x-debug-block-dirty-bitmap-sha256", `{"node": "zz", "name": "a"}`, "Node 'zz' not found"},
	} {
		_, err := e.exec(c.cmd, c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.cmd, c.args, err, c.want)
		}
	}
	if got := bitmapsOf(t, e, "r"); len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("refusals changed the bitmaps: %+v", got)
	}
	// A busy bitmap refuses every change.
	r := e.node(t, "r")
	_ = e.do(func() error { r.FindBitmap("a").SetBusy(true); return nil })
	for _, cmd := range []string{"block-dirty-bitmap-remove", "block-dirty-bitmap-clear", "block-dirty-bitmap-enable", "block-dirty-bitmap-disable"} {
		_, err := e.exec(cmd, `{"node": "r", "name": "a"}`)
		if err == nil || !strings.Contains(err.Error(), "Bitmap 'a' is currently in use by another operation and cannot be used") {
			t.Errorf("%s on a busy bitmap: %v", cmd, err)
		}
	}
	if got := bitmapsOf(t, e, "r"); len(got) != 1 || !got[0].Busy {
		t.Fatalf("busy: %+v", got)
	}
}

// Concurrent writers mark without losing a granule (run with -race).
func TestBitmapConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	const size = 8 << 20
	rawNode(t, e, "r", size)
	for i := 0; i < 8; i++ {
		e.mustExec(t, "block-dirty-bitmap-add", fmt.Sprintf(`{"node": "r", "name": "b%d", "granularity": 4096}`, i))
	}
	io := e.node(t, "r").IO()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for off := int64(w) * 4096; off < size; off += 4 * 4096 {
				if err := io.WriteAt(buf, off, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Meanwhile the owner disables and re-enables one bitmap.
	for i := 0; i < 20; i++ {
		e.mustExec(t, "block-dirty-bitmap-disable", `{"node": "r", "name": "b7"}`)
		e.mustExec(t, "block-dirty-bitmap-enable", `{"node": "r", "name": "b7"}`)
	}
	wg.Wait()
	for _, b := range bitmapsOf(t, e, "r")[1:] {
		if b.Count != size {
			t.Fatalf("%s: count %d, want %d", b.Name, b.Count, size)
		}
	}
}
