package jobs_test

import (
	"bytes"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockd/blockio"
)

// guests are four writers on the guest's view of a node, each in its own
// quarter of [0, size), recording what they write in model until stop is
// closed.
type guests struct {
	wg   sync.WaitGroup
	view atomic.Pointer[blockio.Device]
	// switching is held by each write and, exclusively, while a job
	// starts and the view moves to its filter: a guest device is the
	// filter's parent from the moment it is inserted, so no write may
	// still reach the node under it.
	switching sync.RWMutex
}

// switchTo runs start (the QMP command that inserts a job's filter) with
// the writers held, then points them at the node named view.
func (g *guests) switchTo(d *daemon, start func(), view string) {
	g.switching.Lock()
	defer g.switching.Unlock()
	start()
	g.view.Store(guestView(d, view))
}

func guestWriters(t *testing.T, d *daemon, node string, size int64, model []byte, stop chan struct{}) *guests {
	var mu sync.Mutex
	g := &guests{}
	g.view.Store(guestView(d, node))
	wg := &g.wg
	quarter := size / 4
	for id := 0; id < 4; id++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(id), 11))
			region := int64(id) * quarter
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := int64(4096 * (1 + r.IntN(16)))
				off := region + int64(r.IntN(int(quarter-n)/4096))*4096
				data := pattern(byte(id*50+i%50+1), int(n))
				if i%7 == 0 {
					data = make([]byte, n) // zeroes too
				}
				g.switching.RLock()
				err := (*g.view.Load()).WriteAt(data, off, 0)
				g.switching.RUnlock()
				if err != nil {
					t.Errorf("writer %d: %v", id, err)
					return
				}
				mu.Lock()
				copy(model[off:], data)
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}(id)
	}
	return g
}

// addQcow2 opens the qcow2 image at path as node name.
func addQcow2(t *testing.T, d *daemon, name, path string) {
	t.Helper()
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": name,
		"file": map[string]any{"driver": "file", "filename": path}})
}

// guestView is the data path of a node, as a guest device on it uses it.
func guestView(d *daemon, name string) *blockio.Device {
	var dev blockio.Device
	_ = d.owner.Do(func() { dev = d.g.Lookup(name).IO() })
	return &dev
}

func qemuCheck(t *testing.T, paths ...string) {
	t.Helper()
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return
	}
	for _, p := range paths {
		if out, err := exec.Command(qemuImg, "check", p).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check %s: %v\n%s", p, err, out)
		}
	}
}

func firstDiff(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s differs from the expected data at offset %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

// A mirror with guests writing before and after READY: after
// job-complete the target holds every write, in both copy modes.
func TestMirrorFollowsConcurrentWrites(t *testing.T) {
	for _, mode := range []string{"background", "write-blocking"} {
		t.Run(mode, func(t *testing.T) {
			const size = 16 << 20
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
			model := make([]byte, size)
			copy(model[1<<20:], pattern(0x11, 6<<20))
			image(t, src, size, "", map[int64][]byte{1 << 20: pattern(0x11, 6<<20)})
			image(t, dst, size, "", nil)
			d := newDaemon(t)
			addQcow2(t, d, "src", src)
			addQcow2(t, d, "dst", dst)
			stop := make(chan struct{})
			guest := guestWriters(t, d, "src", size, model, stop)
			time.Sleep(50 * time.Millisecond)
			guest.switchTo(d, func() {
				d.call(t, "blockdev-mirror", map[string]any{"job-id": "m", "device": "src", "target": "dst",
					"sync": "full", "copy-mode": mode, "filter-node-name": "f"})
			}, "f")
			d.waitEvent(t, "BLOCK_JOB_READY")
			time.Sleep(200 * time.Millisecond)
			close(stop)
			guest.wg.Wait()
			d.call(t, "block-job-complete", map[string]any{"device": "m"})
			if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
				t.Fatalf("job failed: %s", e.Data)
			}
			_ = d.owner.Do(func() { d.g.CloseAll() })
			firstDiff(t, "target", readAll(t, dst, size), model)
			qemuCheck(t, src, dst)
		})
	}
}

// A stream with guests writing into the top meanwhile: afterwards top
// alone (no backing) holds the base's data under every write.
func TestStreamWithConcurrentWrites(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	model := make([]byte, size)
	for i := range model {
		model[i] = byte(i / 4096)
	}
	image(t, base, size, "", map[int64][]byte{0: bytes.Clone(model)})
	image(t, top, size, base, nil)
	d := newDaemon(t)
	addQcow2(t, d, "top", top)
	stop := make(chan struct{})
	guest := guestWriters(t, d, "top", size, model, stop)
	time.Sleep(20 * time.Millisecond)
	guest.switchTo(d, func() {
		d.call(t, "block-stream", map[string]any{"job-id": "s", "device": "top", "speed": 32 << 20,
			"filter-node-name": "cor"})
	}, "cor")
	if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
		t.Fatalf("job failed: %s", e.Data)
	}
	close(stop)
	guest.wg.Wait()
	_ = d.owner.Do(func() { d.g.CloseAll() })
	firstDiff(t, "top", readAll(t, top, size), model)
	qemuCheck(t, top)
}

// A backup is a point-in-time copy: guests keep writing through the
// copy-before-write filter while it runs, and the target still holds the
// data of the moment the job started.
func TestBackupIsPointInTime(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
	start := make([]byte, size)
	for i := range start {
		start[i] = byte(i/4096) | 1
	}
	copy(start[9<<20:], make([]byte, 1<<20)) // a zero stretch
	image(t, src, size, "", map[int64][]byte{0: bytes.Clone(start)})
	image(t, dst, size, "", nil)
	d := newDaemon(t)
	addQcow2(t, d, "src", src)
	addQcow2(t, d, "dst", dst)
	d.call(t, "blockdev-backup", map[string]any{"job-id": "b", "device": "src", "target": "dst",
		"sync": "full", "speed": 8 << 20, "filter-node-name": "cbw"})
	model := bytes.Clone(start)
	stop := make(chan struct{})
	guest := guestWriters(t, d, "cbw", size, model, stop)
	if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
		t.Fatalf("job failed: %s", e.Data)
	}
	close(stop)
	guest.wg.Wait()
	_ = d.owner.Do(func() { d.g.CloseAll() })
	firstDiff(t, "backup", readAll(t, dst, size), start)
	firstDiff(t, "source", readAll(t, src, size), model)
	qemuCheck(t, src, dst)
}

// Image fleecing (the reference's tests/image-fleecing): a backup with
// sync=none into a temporary overlay of the source; the overlay keeps
// reading as the source did when the job started while guests write.
func TestFleecingReadsThePointInTime(t *testing.T) {
	const size = 8 << 20
	dir := t.TempDir()
	src, fl := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "fleece.qcow2")
	start := make([]byte, size)
	for i := range start {
		start[i] = byte(i/512) | 1
	}
	image(t, src, size, "", map[int64][]byte{0: bytes.Clone(start)})
	image(t, fl, size, src, nil)
	d := newDaemon(t)
	addQcow2(t, d, "src", src)
	d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "fleece", "backing": "src",
		"file": map[string]any{"driver": "file", "filename": fl}})
	d.call(t, "blockdev-backup", map[string]any{"job-id": "f", "device": "src", "target": "fleece",
		"sync": "none", "filter-node-name": "cbw"})
	model := bytes.Clone(start)
	stop := make(chan struct{})
	guest := guestWriters(t, d, "cbw", size, model, stop)
	fleece := *guestView(d, "fleece")
	for round := 0; round < 5; round++ {
		time.Sleep(30 * time.Millisecond)
		got := make([]byte, size)
		if err := fleece.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		firstDiff(t, "fleecing view", got, start)
	}
	close(stop)
	guest.wg.Wait()
	d.call(t, "block-job-cancel", map[string]any{"device": "f"})
	d.waitEvent(t, "BLOCK_JOB_CANCELLED")
	_ = d.owner.Do(func() { d.g.CloseAll() })
	if bytes.Equal(model, start) {
		t.Fatal("the writers changed nothing: the test proves nothing")
	}
	qemuCheck(t, src, fl)
}

// A mirror whose granularity is larger than its copy chunk (2 MiB against
// 1 MiB) reaches READY and completes with the target equal to the source.
func TestMirrorWithGranularityAboveChunk(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
	model := make([]byte, size)
	copy(model[3<<20:], pattern(0x21, 5<<20))
	image(t, src, size, "", map[int64][]byte{3 << 20: pattern(0x21, 5<<20)})
	image(t, dst, size, "", nil)
	d := newDaemon(t)
	addQcow2(t, d, "src", src)
	addQcow2(t, d, "dst", dst)
	d.call(t, "blockdev-mirror", map[string]any{"job-id": "m", "device": "src", "target": "dst",
		"sync": "full", "granularity": 2 << 20})
	d.waitEvent(t, "BLOCK_JOB_READY")
	d.call(t, "block-job-complete", map[string]any{"device": "m"})
	if e := d.waitEvent(t, "BLOCK_JOB_COMPLETED"); bytes.Contains(e.Data, []byte(`"error"`)) {
		t.Fatalf("job failed: %s", e.Data)
	}
	_ = d.owner.Do(func() { d.g.CloseAll() })
	firstDiff(t, "target", readAll(t, dst, size), model)
	qemuCheck(t, src, dst)
}
