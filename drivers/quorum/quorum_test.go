package quorum_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "blockd/drivers/file"
	_ "blockd/drivers/quorum"
	"blockd/events"
	"blockd/internal/graphtest"
)

type env struct {
	*graphtest.Env
	dir string

	mu  sync.Mutex
	evs []string
}

func newEnv(t *testing.T) *env {
	e := &env{Env: graphtest.New(t), dir: t.TempDir()}
	unsub := e.Bus.Subscribe(func(ev events.Event) {
		e.mu.Lock()
		e.evs = append(e.evs, ev.Name+" "+string(ev.Data))
		e.mu.Unlock()
	})
	t.Cleanup(unsub)
	return e
}

func (e *env) events() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.evs
	e.evs = nil
	return out
}

// img writes a 1 MiB image of pattern, and returns its path.
func (e *env) img(t *testing.T, name string, pattern byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, bytes.Repeat([]byte{pattern}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) addFile(t *testing.T, node, path string) {
	e.Must(t, "blockdev-add", `{"driver": "file", "node-name": "`+node+`", "filename": "`+path+`"}`)
}

// One corrupted child of three is outvoted: the read returns the
// majority's data, QUORUM_REPORT_BAD names the child, and
// rewrite-corrupted repairs it so the next read is clean.
func TestCorruptedChildOutvotedAndRewritten(t *testing.T) {
	e := newEnv(t)
	e.addFile(t, "a", e.img(t, "a.img", 0x11))
	e.addFile(t, "b", e.img(t, "b.img", 0x11))
	cPath := e.img(t, "c.img", 0x11)
	e.addFile(t, "c", cPath)
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": ["a", "b", "c"], "rewrite-corrupted": true}`)
	// Corrupt c behind the quorum's back.
	bad := bytes.Repeat([]byte{0xee}, 4096)
	if err := e.IO(t, "c").WriteAt(bad, 8192, 0); err != nil {
		t.Fatal(err)
	}
	q := e.IO(t, "q")
	buf := make([]byte, 4096)
	if err := q.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0x11}, 4096)) {
		t.Fatalf("read: %v %x", err, buf[:4])
	}
	want := `QUORUM_REPORT_BAD {"type": "read", "node-name": "c", "sector-num": 16, "sectors-count": 8}`
	if evs := e.events(); len(evs) != 1 || evs[0] != want {
		t.Fatalf("events %q, want %q", evs, want)
	}
	got, _ := os.ReadFile(cPath)
	if got[8192] != 0x11 {
		t.Fatalf("c was not rewritten: %#x", got[8192])
	}
	if err := q.ReadAt(buf, 8192); err != nil {
		t.Fatal(err)
	}
	if evs := e.events(); len(evs) != 0 {
		t.Fatalf("after the rewrite: %q", evs)
	}
}

// Three different versions with a threshold of 2: the read fails with
// EIO and QUORUM_FAILURE names the quorum node; a child that fails a
// read is reported with its error.
func TestNoMajorityFails(t *testing.T) {
	e := newEnv(t)
	e.addFile(t, "a", e.img(t, "a.img", 1))
	e.addFile(t, "b", e.img(t, "b.img", 2))
	e.addFile(t, "c", e.img(t, "c.img", 3))
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": ["a", "b", "c"]}`)
	buf := make([]byte, 512)
	if err := e.IO(t, "q").ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read: %v", err)
	}
	want := `QUORUM_FAILURE {"reference": "q", "sector-num": 0, "sectors-count": 1}`
	if evs := e.events(); len(evs) != 1 || evs[0] != want {
		t.Fatalf("events %q, want %q", evs, want)
	}
	// fifo reads the first child that answers.
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "f", "vote-threshold": 1, "read-pattern": "fifo", "children": [{"driver": "file", "filename": "`+filepath.Join(e.dir, "b.img")+`", "locking": "off"}]}`)
	if err := e.IO(t, "f").ReadAt(buf, 0); err != nil || buf[0] != 2 {
		t.Fatalf("fifo read: %v %d", err, buf[0])
	}
}

// Writes reach every child; x-blockdev-change adds a child that then
// takes part, and removes one down to the threshold.
func TestWritesAndChildChanges(t *testing.T) {
	e := newEnv(t)
	paths := []string{e.img(t, "a.img", 0), e.img(t, "b.img", 0), e.img(t, "d.img", 0)}
	e.addFile(t, "a", paths[0])
	e.addFile(t, "b", paths[1])
	e.addFile(t, "d", paths[2])
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["a", "b"]}`)
	e.Must(t, "x-blockdev-change", `{"parent": "q", "node": "d"}`)
	if err := e.IO(t, "q").WriteAt(bytes.Repeat([]byte{0x42}, 4096), 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if b, _ := os.ReadFile(p); b[0] != 0x42 || b[4095] != 0x42 {
			t.Fatalf("%s not written", p)
		}
	}
	e.Must(t, "x-blockdev-change", `{"parent": "q", "child": "children.0"}`)
	e.Must(t, "x-blockdev-change", `{"parent": "q", "child": "children.2"}`)
	if err := e.Exec("x-blockdev-change", `{"parent": "q", "child": "children.1"}`); err == nil ||
		err.Error() != "The number of children cannot be lower than the vote threshold 1" {
		t.Fatalf("removing the last child: %v", err)
	}
	if err := e.IO(t, "q").WriteAt(bytes.Repeat([]byte{0x43}, 512), 0, 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(paths[1]); b[0] != 0x43 {
		t.Fatal("the remaining child b was not written")
	}
	if b, _ := os.ReadFile(paths[0]); b[0] != 0x42 {
		t.Fatal("the removed child a was written")
	}
}

// A burst of outvoted reads of one child, and of reads no version wins,
// gives one QUORUM_REPORT_BAD and one QUORUM_FAILURE at once and the
// burst's last of each a second later, as QEMU's monitor limits them.
func TestEventBurstRateLimited(t *testing.T) {
	e := newEnv(t)
	e.addFile(t, "a", e.img(t, "a.img", 0x11))
	e.addFile(t, "b", e.img(t, "b.img", 0x11))
	e.addFile(t, "c", e.img(t, "c.img", 0x22))
	e.addFile(t, "x", e.img(t, "x.img", 1))
	e.addFile(t, "y", e.img(t, "y.img", 2))
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": ["a", "b", "c"]}`)
	e.Must(t, "blockdev-add", `{"driver": "quorum", "node-name": "nq", "vote-threshold": 2, "children": ["x", "y"]}`)
	buf := make([]byte, 512)
	start := time.Now()
	for i := int64(0); i < 5; i++ {
		if err := e.IO(t, "q").ReadAt(buf, i*4096); err != nil || buf[0] != 0x11 {
			t.Fatalf("read %d: %v %#x", i, err, buf[0])
		}
		if err := e.IO(t, "nq").ReadAt(buf, i*4096); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read %d of nq: %v", i, err)
		}
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Skip("the burst took longer than half the period; nothing to conclude")
	}
	first := []string{
		`QUORUM_REPORT_BAD {"type": "read", "node-name": "c", "sector-num": 0, "sectors-count": 1}`,
		`QUORUM_FAILURE {"reference": "nq", "sector-num": 0, "sectors-count": 1}`,
	}
	if evs := e.events(); strings.Join(evs, "\n") != strings.Join(first, "\n") {
		t.Fatalf("at once: %q, want %q", evs, first)
	}
	var later []string
	for len(later) < 2 && time.Since(start) < 3*time.Second {
		time.Sleep(50 * time.Millisecond)
		later = append(later, e.events()...)
	}
	if waited := time.Since(start); len(later) == 2 && waited < time.Second {
		t.Fatalf("the held events came after %v, before the period ended", waited)
	}
	// The two periods end microseconds apart, in either order.
	want := []string{
		`QUORUM_FAILURE {"reference": "nq", "sector-num": 32, "sectors-count": 1}`,
		`QUORUM_REPORT_BAD {"type": "read", "node-name": "c", "sector-num": 32, "sectors-count": 1}`,
	}
	slices.Sort(later)
	if strings.Join(later, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after the period: %q, want %q", later, want)
	}
}
