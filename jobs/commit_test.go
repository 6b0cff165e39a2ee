package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

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
}

func newDaemon(t *testing.T) *daemon {
	bus := events.NewBus()
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), bus)
	owner := blockcore.NewOwner(reg)
	m := jobs.NewManager(g, owner, bus, zap.NewNop())
	g.RegisterCommands(reg)
	m.RegisterCommands(reg)
	go owner.Run()
	d := &daemon{g: g, owner: owner, evs: make(chan events.Event, 1024)}
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
