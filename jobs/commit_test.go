package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/qcow2"
	"blockd/events"
	"blockd/jobs"
	"blockd/schema"
)

// daemon is an in-process graph with jobs, driven like the real one.
type daemon struct {
	g     *blockcore.Graph
	owner *blockcore.Owner
	evs   chan events.Event
	logs  *observer.ObservedLogs // warnings and errors of graph and jobs
}

func newDaemon(t *testing.T) *daemon {
	bus := events.NewBus()
	reg := schema.NewRegistry()
	core, logs := observer.New(zapcore.WarnLevel)
	log := zap.New(core)
	g := blockcore.NewGraph(log, bus)
	owner := blockcore.NewOwner(reg)
	owner.SetLogger(log)
	owner.OnPanic(g.RecoverFromPanic)
	m := jobs.NewManager(g, owner, bus, log)
	g.RegisterCommands(reg)
	m.RegisterCommands(reg)
	go owner.Run()
	d := &daemon{g: g, owner: owner, evs: make(chan events.Event, 1024), logs: logs}
	bus.Subscribe(func(e events.Event) { d.evs <- e })
	t.Cleanup(func() {
		_ = owner.Do(func() { m.CancelAll(); g.CloseAll() })
		owner.Stop()
	})
	return d
}

func (d *daemon) call(t *testing.T, cmd string, args any) {
	t.Helper()
	b, _ := json.Marshal(args)
	if _, err := d.owner.Call(context.Background(), cmd, b); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
}

func (d *daemon) waitEvent(t *testing.T, name string) events.Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-d.evs:
			if e.Name == name {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event", name)
		}
	}
}

// image creates a qcow2 image with blockd's own engine and fills ranges.
func image(t *testing.T, path string, size int64, backing string, fill map[int64][]byte) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := file.Open(file.Options{Filename: path})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o := qcow2.CreateOptions{Size: size}
	if backing != "" {
		o.BackingFile, o.BackingFormat = backing, "qcow2"
	}
	if err := qcow2.Create(f, o); err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(f, qcow2.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for off, data := range fill {
		if err := img.WriteAt(data, off, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// readAll reads a whole qcow2 image (without its backing) with the engine.
func readAll(t *testing.T, path string, size int64) []byte {
	t.Helper()
	f, err := file.Open(file.Options{Filename: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := qcow2.Open(f, qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, size)
	if err := img.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func pattern(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// Writes keep arriving at the active layer while it is committed, before
// and after READY; after completion base holds exactly the final data.
func TestActiveCommitFollowsConcurrentWrites(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	model := make([]byte, size)
	copy(model[0:], pattern(0x11, 4<<20))
	image(t, base, size, "", map[int64][]byte{0: pattern(0x11, 4<<20)})
	copy(model[6<<20:], pattern(0x33, 1<<20))
	image(t, top, size, base, map[int64][]byte{6 << 20: pattern(0x33, 1<<20)})

	d := newDaemon(t)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": top}})
	var dev blockio.Device
	_ = d.owner.Do(func() { dev = d.g.Lookup("top").IO() })

	// Four writers, each in its own 4 MiB region, so the final content of
	// every byte is that writer's last write there.
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writer := func(id int) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(uint64(id), 7))
		region := int64(id) * (4 << 20)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := int64(4096 * (1 + r.IntN(16)))
			off := region + int64(r.IntN(int((4<<20)-n)/4096))*4096
			data := pattern(byte(id*50+i%50+1), int(n))
			if err := dev.WriteAt(data, off, 0); err != nil {
				t.Errorf("writer %d: %v", id, err)
				return
			}
			mu.Lock()
			copy(model[off:], data)
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}
	for id := 0; id < 4; id++ {
		wg.Add(1)
		go writer(id)
	}
	time.Sleep(50 * time.Millisecond) // writes before the job starts, too
	d.call(t, "block-commit", map[string]any{"job-id": "j", "device": "top"})
	d.waitEvent(t, "BLOCK_JOB_READY")
	time.Sleep(200 * time.Millisecond) // and after READY
	close(stop)
	wg.Wait()
	d.call(t, "block-job-complete", map[string]any{"device": "j"})
	if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
		t.Fatalf("job failed: %s", e.Data)
	}
	// base now stands where top stood; it must hold every write.
	_ = d.owner.Do(func() { d.g.CloseAll() })
	if got := readAll(t, base, size); !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("base differs from the final data at offset %d: %#x, want %#x", i, got[i], model[i])
			}
		}
	}
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		if out, err := exec.Command(qemuImg, "check", base).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check base: %v\n%s", err, out)
		}
	}
}

// A speed-limited job takes at least len/speed (a lower bound only: a
// timed upper bound would make the test depend on the machine).
func TestSpeedLimitIsALowerBound(t *testing.T) {
	const size, data, speed = 8 << 20, 2 << 20, 2 << 20
	dir := t.TempDir()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	image(t, base, size, "", nil)
	image(t, mid, size, base, map[int64][]byte{0: pattern(0x22, data)})
	image(t, top, size, mid, nil)
	d := newDaemon(t)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": top}})
	start := time.Now()
	d.call(t, "block-commit", map[string]any{"job-id": "j", "device": "top", "top": mid, "speed": speed})
	d.waitEvent(t, "BLOCK_JOB_COMPLETED")
	if took, min := time.Since(start), time.Duration(data)*time.Second/speed; took < min {
		t.Fatalf("commit of %d bytes at %d B/s took %v, less than %v", data, speed, took, min)
	}
	_ = d.owner.Do(func() { d.g.CloseAll() })
	if got := readAll(t, base, size); !bytes.Equal(got[:data], pattern(0x22, data)) {
		t.Fatal("base does not hold the committed data")
	}
}

// Cancelling an active commit before READY takes the job's own edges away
// before the filter (mirror_exit_common's order): the filter's removal
// succeeds, nothing is logged as failed, and the graph is exactly as
// before the job.
func TestCancelActiveCommitBeforeReadyRemovesEdgesThenFilter(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	image(t, base, size, "", nil)
	image(t, mid, size, base, map[int64][]byte{0: pattern(0x22, 8<<20)})
	image(t, top, size, mid, map[int64][]byte{1 << 20: pattern(0x33, 1<<20)})
	d := newDaemon(t)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": top}})
	// The graph's shape: node names and named edges. (Permissions differ
	// on purpose: base stays writable once an active commit started.)
	graphOf := func() string {
		r, err := d.owner.Call(context.Background(), "x-debug-query-block-graph", nil)
		if err != nil {
			t.Fatal(err)
		}
		var gr struct {
			Nodes []struct {
				ID   int
				Name string
			}
			Edges []struct {
				Parent, Child int
				Name          string
			}
		}
		if err := json.Unmarshal(r, &gr); err != nil {
			t.Fatal(err)
		}
		names := map[int]string{}
		var out []string
		for _, n := range gr.Nodes {
			names[n.ID] = n.Name
			out = append(out, n.Name)
		}
		for _, e := range gr.Edges {
			out = append(out, names[e.Parent]+"-"+e.Name+"->"+names[e.Child])
		}
		return strings.Join(out, " ")
	}
	before := graphOf()
	d.call(t, "block-commit", map[string]any{"job-id": "j", "device": "top", "speed": 1 << 20,
		"filter-node-name": "mt"})
	d.call(t, "block-job-cancel", map[string]any{"device": "j"})
	d.waitEvent(t, "BLOCK_JOB_CANCELLED")
	if logs := d.logs.All(); len(logs) > 0 {
		t.Fatalf("cancel logged %d problems, first: %s %v", len(logs), logs[0].Message, logs[0].ContextMap())
	}
	if after := graphOf(); after != before {
		t.Fatalf("graph after cancel differs:\nbefore %s\nafter  %s", before, after)
	}
	_ = d.owner.Do(func() {
		if d.g.Lookup("mt") != nil {
			t.Error("the mirror_top filter is still in the graph")
		}
	})
}

// A node's frozen links hold while the job runs and are free once it has
// ended, whatever the end.
func TestJobFreezesItsChainUntilItEnds(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	image(t, base, size, "", nil)
	image(t, mid, size, base, map[int64][]byte{0: pattern(0x22, 4<<20)})
	image(t, top, size, mid, nil)
	d := newDaemon(t)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": top}})
	frozen := func() []string {
		var out []string
		_ = d.owner.Do(func() {
			for _, n := range d.g.Nodes() {
				for _, c := range n.Children() {
					if c.Frozen() {
						out = append(out, n.Name()+"->"+c.Node.Name())
					}
				}
			}
		})
		return out
	}
	d.call(t, "block-commit", map[string]any{"job-id": "j", "device": "top", "top": mid, "speed": 1024,
		"filter-node-name": "ct"})
	if got := fmt.Sprint(frozen()); !strings.Contains(got, "ct->") || len(frozen()) != 2 {
		t.Fatalf("frozen links during an intermediate commit: %v, want ct->mid and mid->base", got)
	}
	d.call(t, "block-job-cancel", map[string]any{"device": "j"})
	d.waitEvent(t, "BLOCK_JOB_CANCELLED")
	if got := frozen(); len(got) != 0 {
		t.Fatalf("links still frozen after the job: %v", got)
	}
	if logs := d.logs.All(); len(logs) > 0 {
		t.Fatalf("logged: %s %v", logs[0].Message, logs[0].ContextMap())
	}
}
