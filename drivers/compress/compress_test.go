package compress_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	_ "blockd/drivers/compress"
	_ "blockd/drivers/file"
	_ "blockd/drivers/qcow2"
	_ "blockd/drivers/raw"
	"blockd/events"
	"blockd/internal/needtool"
	"blockd/schema"
)

// graph is an in-process block graph driven through QMP commands.
type graph struct {
	g     *blockcore.Graph
	owner *blockcore.Owner
}

func newGraph(t *testing.T) *graph {
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	owner := blockcore.NewOwner(reg)
	g.RegisterCommands(reg)
	go owner.Run()
	t.Cleanup(func() {
		_ = owner.Do(func() { g.CloseAll() })
		owner.Stop()
	})
	return &graph{g: g, owner: owner}
}

func (d *graph) call(cmd string, args any) error {
	b, _ := json.Marshal(args)
	_, err := d.owner.Call(context.Background(), cmd, b)
	return err
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func text(n int, seed int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "seed %d line %d\n", seed, i)
	}
	return b[:n]
}

// TestCompressFilter writes through a compress filter over a qcow2 node:
// whole clusters and partial ones (completed from the current content)
// end up compressed, the image reads back as written with qemu-img, and
// a filter over a node without compressed writes is refused with
// QEMU's text.
func TestCompressFilter(t *testing.T) {
	needtool.Find(t, "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "c.qcow2")
	const size = 1 << 20
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, fmt.Sprint(size))
	d := newGraph(t)
	if err := d.call("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q",
		"file": map[string]any{"driver": "file", "filename": img, "node-name": "f"}}); err != nil {
		t.Fatal(err)
	}
	err := d.call("blockdev-add", map[string]any{"driver": "compress", "node-name": "bad", "file": "f"})
	if err == nil || err.Error() != "Compression is not supported for underlying format: file" {
		t.Fatalf("compress over file: %v", err)
	}
	if err := d.call("blockdev-add", map[string]any{"driver": "compress", "node-name": "c", "file": "q"}); err != nil {
		t.Fatal(err)
	}
	dev := d.g.Lookup("c").IO()
	want := make([]byte, size)
	write := func(off int64, p []byte) error {
		copy(want[off:], p)
		return dev.WriteAt(p, off, 0)
	}
	for _, w := range []struct{ off, n int64 }{
		{0, 3 * 4096},         // whole clusters
		{5*4096 + 100, 1000},  // inside one cluster
		{8*4096 - 10, 20},     // across two clusters
		{size - 4096, 4096},   // the last cluster
		{100 << 10, 64 << 10}, // a larger run
	} {
		if err := write(w.off, text(int(w.n), int(w.off))); err != nil {
			t.Fatalf("write %d+%d: %v", w.off, w.n, err)
		}
	}
	// A cluster already allocated cannot be compressed again (EIO).
	if err := dev.WriteAt(text(4096, 9), 0, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("rewrite of a compressed cluster: %v, want EIO", err)
	}
	got := make([]byte, size)
	if err := dev.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("filter reads differ from what was written")
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.call("blockdev-del", map[string]any{"node-name": "c"}); err != nil {
		t.Fatal(err)
	}
	if err := d.call("blockdev-del", map[string]any{"node-name": "q"}); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "want.raw")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, raw)
	chk := run(t, "qemu-img", "check", img)
	// 3 + 1 + 2 + 1 + 16 clusters.
	if !strings.Contains(chk, "23/256 = 8.98% allocated") || !strings.Contains(chk, "100.00% compressed clusters") {
		t.Fatalf("qemu-img check: %s", chk)
	}
}
