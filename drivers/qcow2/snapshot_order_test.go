package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"blockd/blockio"
)

// The write order of the snapshot operations, state by state. A killed
// process leaves a prefix of the writes it issued; a power loss leaves
// everything up to the last flush plus any subset of the writes since.
// TestSnapshotWriteOrder records the writes and flushes of each
// operation and has qemu-img check judge every prefix and every such
// subset.

// orderClusterBits is the cluster size of the test image (4 KiB).
const orderClusterBits = 12

// recDev is a memDev that records the writes and flushes it receives.
type recDev struct {
	*memDev
	mu     sync.Mutex
	events []devEvent
}

type devEvent struct {
	flush bool
	off   int64
	data  []byte
}

func (d *recDev) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if err := d.memDev.WriteAt(p, off, 0); err != nil {
		return err
	}
	d.mu.Lock()
	d.events = append(d.events, devEvent{off: off, data: append([]byte(nil), p...)})
	d.mu.Unlock()
	if flags&blockio.FUA != 0 {
		return d.Flush()
	}
	return nil
}

func (d *recDev) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	return d.WriteAt(make([]byte, length), off, flags)
}

func (d *recDev) Flush() error {
	if err := d.memDev.Flush(); err != nil {
		return err
	}
	d.mu.Lock()
	d.events = append(d.events, devEvent{flush: true})
	d.mu.Unlock()
	return nil
}

// Truncate is refused: a snapshot operation that resizes the file would
// need its own model here.
func (d *recDev) Truncate(size int64) error { return errors.New("recDev: truncate not modelled") }

func (d *recDev) take() []devEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	ev := d.events
	d.events = nil
	return ev
}

// TestSnapshotWriteOrder runs snapshot create (every COPIED flag
// cleared), delete (flags set again where a refcount falls to 1) and
// revert on an image whose two L2 tables both hold data. For every
// prefix of an operation's writes, qemu-img check finds nothing but
// leaks, or entries without COPIED whose refcount is 1; the latter only
// between two writes with no flush in between (the back-to-back groups),
// never at the end. For every state a power loss can leave (the writes
// since the last flush, any subset), no refcount is below its reference
// count and a COPIED flag on a cluster with refcount above 1 only marks
// one that nothing else references (a leak).
func TestSnapshotWriteOrder(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	dev := &recDev{memDev: &memDev{}}
	if err := Create(dev.memDev, CreateOptions{Size: 4 << 20, ClusterSize: 1 << orderClusterBits}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seq := int64(0)
	write := func(stride int64) error {
		buf := make([]byte, 4096)
		for off := int64(0); off < 4<<20; off += stride {
			seq++
			fillPattern(buf, seq, off)
			if err := img.WriteAt(buf, off, 0); err != nil {
				return err
			}
		}
		return nil
	}
	snap := func(name string) func() error {
		return func() error { _, err := img.CreateSnapshot(name, 1, 0, 0, NoIcount); return err }
	}
	steps := []struct {
		name string
		op   func() error
		ops  bool // a snapshot operation whose writes are judged
	}{
		{"write", func() error { return write(64 << 10) }, false},
		{"create s1", snap("s1"), true},
		{"write", func() error { return write(128 << 10) }, false},
		{"create s2", snap("s2"), true},
		{"delete s1", func() error { _, err := img.DeleteSnapshot("", "s1"); return err }, true},
		{"write", func() error { return write(192 << 10) }, false},
		{"revert to s2", func() error { _, err := img.ApplySnapshot("s2"); return err }, true},
		{"delete s2", func() error { _, err := img.DeleteSnapshot("", "s2"); return err }, true},
	}
	rng := rand.New(rand.NewSource(1))
	for _, st := range steps {
		if err := img.Flush(); err != nil {
			t.Fatal(err)
		}
		base := dev.bytes()
		dev.take()
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		ev := dev.take()
		if st.ops {
			judgeOrder(t, dir, st.name, base, ev, rng)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// judgeOrder checks every kill and power-loss state of one operation.
func judgeOrder(t *testing.T, dir, name string, base []byte, ev []devEvent, rng *rand.Rand) {
	t.Helper()
	path := filepath.Join(dir, "state.qcow2")
	state := func(ws []devEvent) []byte {
		b := append([]byte(nil), base...)
		for _, w := range ws {
			b = applyWrite(b, w.off, w.data)
		}
		return b
	}
	// Kills: every prefix of the writes.
	var writes []devEvent
	flushAfter := map[int]bool{} // a flush follows the k-th write
	for _, e := range ev {
		if e.flush {
			flushAfter[len(writes)] = true
		} else {
			writes = append(writes, e)
		}
	}
	window, widest := 0, 0
	for k := 0; k <= len(writes); k++ {
		if err := os.WriteFile(path, state(writes[:k]), 0o644); err != nil {
			t.Fatal(err)
		}
		v := judgeState(t, path)
		if v.bad != "" || len(v.flagOnShared) > 0 {
			t.Fatalf("%s, killed after write %d of %d: qemu-img check:\n%s", name, k, len(writes), v.out)
		}
		if !v.flagMissing {
			window = 0
			continue
		}
		window++
		widest = max(widest, window)
		if k == len(writes) || flushAfter[k] {
			t.Fatalf("%s, killed after write %d of %d: COPIED flags disagree with refcounts and a flush (or the end) comes before the writes that fix them:\n%s",
				name, k, len(writes), v.out)
		}
	}
	// Power loss: what was flushed plus any subset of what followed (all
	// subsets of up to 6 writes, 64 random ones beyond).
	var intervals [][]devEvent
	var cur []devEvent
	for _, e := range ev {
		if e.flush {
			intervals, cur = append(intervals, cur), nil
		} else {
			cur = append(cur, e)
		}
	}
	intervals = append(intervals, cur)
	var durable []devEvent
	losses := 0
	for _, pending := range intervals {
		n := len(pending)
		subsets := 1 << n
		if n > 6 {
			subsets = 64
		}
		for s := 0; s < subsets && n > 0; s++ {
			mask := uint64(s)
			if n > 6 {
				mask = rng.Uint64()
			}
			ws := append([]devEvent(nil), durable...)
			for j, w := range pending {
				if mask&(1<<(j%64)) != 0 {
					ws = append(ws, w)
				}
			}
			if err := os.WriteFile(path, state(ws), 0o644); err != nil {
				t.Fatal(err)
			}
			losses++
			v := judgeState(t, path)
			if v.bad != "" {
				t.Fatalf("%s, power loss after flush %d: %s\n%s", name, len(durable), v.bad, v.out)
			}
			for c := range v.flagOnShared {
				if !v.leakedToOne[c] {
					t.Fatalf("%s, power loss: a COPIED flag on cluster %d, which something else references:\n%s", name, c, v.out)
				}
			}
		}
		durable = append(durable, pending...)
	}
	t.Logf("%s: %d writes, %d flushes; %d kill states (at most %d in a row with COPIED disagreeing), %d power-loss states",
		name, len(writes), len(ev)-len(writes), len(writes)+1, widest, losses)
}

type stateVerdict struct {
	out          string
	bad          string         // an error other than those below
	flagMissing  bool           // entries without COPIED whose refcount is 1
	flagOnShared map[int64]bool // clusters whose entry has COPIED with refcount > 1
	leakedToOne  map[int64]bool // clusters qemu-img check counts one reference to, with a higher refcount
}

func judgeState(t *testing.T, path string) stateVerdict {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "-f", "qcow2", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && (!errors.As(err, &ee) || (ee.ExitCode() != 2 && ee.ExitCode() != 3)) {
		t.Fatalf("qemu-img check: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	v := stateVerdict{out: stderr.String() + stdout.String(), flagOnShared: map[int64]bool{}, leakedToOne: map[int64]bool{}}
	for _, l := range strings.Split(stderr.String(), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "Leaked cluster "):
			var c, rc, ref int64
			if _, err := fmt.Sscanf(l, "Leaked cluster %d refcount=%d reference=%d", &c, &rc, &ref); err != nil {
				v.bad = l
			} else if ref == 1 {
				v.leakedToOne[c] = true
			}
		case strings.HasPrefix(l, "ERROR OFLAG_COPIED"):
			m := copiedLine.FindStringSubmatch(l)
			if m == nil {
				v.bad = l
				continue
			}
			entry, _ := strconv.ParseUint(m[1], 16, 64)
			if entry&oflagCopied == 0 && m[2] == "1" {
				v.flagMissing = true
			} else {
				v.flagOnShared[int64(entry&l2eOffsetMask)>>orderClusterBits] = true
			}
		default:
			v.bad = l
		}
	}
	if ee != nil && ee.ExitCode() == 2 && !v.flagMissing && len(v.flagOnShared) == 0 && v.bad == "" {
		v.bad = "corruptions reported"
	}
	return v
}

// TestSnapshotRevertStaleFlags reverts to a snapshot whose L2 table QEMU
// flagged COPIED when deleting the only other snapshot that shared it:
// the revert makes the table shared with the active layer, and no kill
// or power-loss state may show those flags on the now shared clusters.
func TestSnapshotRevertStaleFlags(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "stale.qcow2")
	qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "4M")
	qemuIO(t, path, "write -P 1 0 64k")
	qemu(t, "qemu-img", "snapshot", "-c", "a", path)
	qemu(t, "qemu-img", "snapshot", "-c", "b", path)
	qemuIO(t, path, "write -P 2 0 64k")
	qemu(t, "qemu-img", "snapshot", "-d", "b", path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dev := &recDev{memDev: &memDev{b: b}}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The premise: an entry of the snapshot's L2 table carries COPIED.
	sn := img.snaps[0]
	snL1, err := readTable(dev, sn.l1Offset, sn.l1Size)
	if err != nil {
		t.Fatal(err)
	}
	l2 := make([]byte, 8)
	if err := dev.ReadAt(l2, int64(snL1[0]&l1eOffsetMask)); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(l2)&oflagCopied == 0 {
		t.Fatalf("qemu-img left no COPIED flag in snapshot a's L2 table: nothing to test")
	}
	base := dev.bytes()
	dev.take()
	if _, err := img.ApplySnapshot("a"); err != nil {
		t.Fatal(err)
	}
	judgeOrder(t, dir, "revert to a", base, dev.take(), rand.New(rand.NewSource(1)))
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}
