package throttle_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "blockd/drivers/file"
	_ "blockd/drivers/raw"
	_ "blockd/drivers/throttle"
	"blockd/internal/graphtest"
	"blockd/objects"
)

func newEnv(t *testing.T) (*graphtest.Env, *objects.Registry) {
	objs := objects.NewRegistry(nil)
	return graphtest.New(t, func(e *graphtest.Env) {
		objs.RegisterCommands(e.Reg)
		e.G.SetObjects(objs)
	}), objs
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
	e, objs := newEnv(t)
	img := image(t)
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "tg", "limits": {"bps-write": 1}}`)
	e.Must(t, "blockdev-add", `{"driver": "file", "node-name": "f", "filename": "`+img+`"}`)
	e.Must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": "f"}`)
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "free"}`)
	e.Must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t2", "throttle-group": "free", "file": "t"}`)
	top := e.Node(t, "t2").IO()

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
	// Drain only once the write waits in the group: a drain that begins
	// before it enters t2 would hold it back at t2's gate instead.
	tg, release, err := objs.ThrottleGroup("tg")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for tg.Waiting() == 0 {
		select {
		case err := <-done:
			t.Fatalf("a write over the limit did not wait: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	// Draining from the top lets the request waiting in t go on.
	var resume func()
	n2, n1 := e.Node(t, "t2"), e.Node(t, "t")
	_ = e.O.Do(func() { resume = e.G.DrainNodes(n2, n1) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = e.O.Do(resume)
}

// object-del refuses a group while a node uses it, and accepts it after.
func TestThrottleGroupPinned(t *testing.T) {
	e, _ := newEnv(t)
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "tg"}`)
	e.Must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": {"driver": "file", "filename": "`+image(t)+`"}}`)
	if err := e.Exec("object-del", `{"id": "tg"}`); err == nil || err.Error() != "object 'tg' is in use, can not be deleted" {
		t.Fatalf("object-del of a group in use: %v", err)
	}
	e.Must(t, "blockdev-del", `{"node-name": "t"}`)
	e.Must(t, "object-del", `{"id": "tg"}`)
	if err := e.Exec("blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "tg", "file": {"driver": "file", "filename": "`+image(t)+`"}}`); err == nil ||
		err.Error() != "Throttle group 'tg' does not exist" {
		t.Fatalf("a deleted group: %v", err)
	}
}

// blockdev-reopen moves a node to another group: the old group's limit
// no longer applies, and the old group can be deleted.
func TestThrottleReopenChangesGroup(t *testing.T) {
	e, _ := newEnv(t)
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "slow", "limits": {"bps-write": 1}}`)
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "free"}`)
	e.Must(t, "blockdev-add", `{"driver": "file", "node-name": "f", "filename": "`+image(t)+`"}`)
	e.Must(t, "blockdev-add", `{"driver": "throttle", "node-name": "t", "throttle-group": "slow", "file": "f"}`)
	dev := e.Node(t, "t").IO()
	if err := dev.WriteAt(make([]byte, 64<<10), 0, 0); err != nil { // fills the slow bucket
		t.Fatal(err)
	}
	e.Must(t, "blockdev-reopen", `{"options": [{"driver": "throttle", "node-name": "t", "throttle-group": "free", "file": "f"}]}`)
	// In the slow group this write would wait about 18 hours.
	if err := dev.WriteAt(make([]byte, 64<<10), 0, 0); err != nil {
		t.Fatal(err)
	}
	e.Must(t, "object-del", `{"id": "slow"}`)
	if err := e.Exec("object-del", `{"id": "free"}`); err == nil {
		t.Fatal("the group the node moved to was deleted under it")
	}
}
