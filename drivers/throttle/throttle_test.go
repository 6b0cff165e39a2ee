package throttle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	_ "blockd/drivers/file"
	_ "blockd/drivers/raw"
	_ "blockd/drivers/throttle"
	"blockd/events"
	"blockd/objects"
	"blockd/schema"
)

type env struct {
	g    *blockcore.Graph
	o    *blockcore.Owner
	objs *objects.Registry
}

func newEnv(t *testing.T) *env {
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	g.RegisterCommands(reg)
	objs := objects.NewRegistry(nil)
	objs.RegisterCommands(reg)
	g.SetObjects(objs)
	o := blockcore.NewOwner(reg)
	go o.Run()
	t.Cleanup(func() {
		_ = o.Do(g.CloseAll)
		o.Stop()
	})
	return &env{g, o, objs}
}

func (e *env) exec(name, args string) error {
	_, err := e.o.Call(context.Background(), name, json.RawMessage(args))
	return err
}

func (e *env) must(t *testing.T, name, args string) {
	t.Helper()
	if err := e.exec(name, args); err != nil {
		t.Fatalf("%s %s: %v", name, args, err)
	}
}

func (e *env) node(t *testing.T, name string) *blockcore.Node {
	var n *blockcore.Node
	_ = e.o.Do(func() { n = e.g.Lookup(name) })
	if n == nil {
		t.Fatalf("no node %s", name)
	}
	return n
}

func image(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "a.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Data goes through unchanged; a request beyond the group's limit waits
// until a drained section lets it through (a drain must never wait for a
// limit), also when the drain begins at a parent above the throttle node.
func TestThrottleDataPathAndDrain(t *testing.T) {
	e := newEnv(t)
	img := image(t)
	e.must(t, "object-add", `{"qom-type": "throttle-group", "id": "tg", "limits": {"bps-write": 1}}`)
	e.must(t, "blockdev-add", `{"driver": "file", "node-name": "f", "filename": "`+img+`"}`)
	e.must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": "f"}`)
	e.must(t, "object-add", `{"qom-type": "throttle-group", "id": "free"}`)
	e.must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t2", "throttle-group": "free", "file": "t"}`)
	top := e.node(t, "t2").IO()

	data := bytes.Repeat([]byte{0x5a}, 64<<10)
	if err := top.WriteAt(data, 4096, 0); err != nil { // fits the empty bucket
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := top.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) { // reads are not limited
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}
	raw, _ := os.ReadFile(img)
	if !bytes.Equal(raw[4096:4096+len(data)], data) {
		t.Fatal("the write did not reach the file")
	}
	// The group's bucket now holds 64 KiB at 1 byte/s: the next write
	// waits days unless drained.
	done := make(chan error, 1)
	go func() { done <- top.WriteAt([]byte{1}, 0, 0) }()
	select {
	case err := <-done:
		t.Fatalf("a write over the limit did not wait: %v", err)
	default:
	}
	// Draining from the top lets the request waiting in t go on.
	var resume func()
	n2, n1 := e.node(t, "t2"), e.node(t, "t")
	_ = e.o.Do(func() { resume = e.g.DrainNodes(n2, n1) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = e.o.Do(resume)
}

// object-del refuses a group while a node uses it, and accepts it after.
func TestThrottleGroupPinned(t *testing.T) {
	e := newEnv(t)
	e.must(t, "object-add", `{"qom-type": "throttle-group", "id": "tg"}`)
	e.must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": {"driver": "file", "filename": "`+image(t)+`"}}`)
	if err := e.exec("object-del", `{"id": "tg"}`); err == nil || err.Error() != "object 'tg' is in use, can not be deleted" {
		t.Fatalf("object-del of a group in use: %v", err)
	}
	e.must(t, "blockdev-del", `{"node-name": "t"}`)
	e.must(t, "object-del", `{"id": "tg"}`)
	if err := e.exec("blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": {"driver": "file", "filename": "`+image(t)+`"}}`); err == nil ||
		err.Error() != "Throttle group 'tg' does not exist" {
		t.Fatalf("a deleted group: %v", err)
	}
}
