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

// openRecording opens a copy of the image file at path on a recDev.
func openRecording(t *testing.T, path string) (*recDev, *Image) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dev := &recDev{memDev: &memDev{b: b}}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return dev, img
}

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
// prefix of an operation's writes and every state a power loss can leave
// (the writes since the last flush, any subset), qemu-img check finds
// nothing but leaks.
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

// judgeOrder checks every kill and power-loss state of one operation:
// qemu-img check finds nothing but leaks in any of them. It also holds
// the operation to the metadata switch's shape: the header is the only
// write below the file's previous end (everything else goes to fresh
// clusters), with a flush before and after it.
func judgeOrder(t *testing.T, dir, name string, base []byte, ev []devEvent, rng *rand.Rand) {
	t.Helper()
	inPlace := 0
	for i, e := range ev {
		if e.flush {
			continue
		}
		if e.off < int64(len(base)) {
			inPlace++
			if e.off != 36 || len(e.data) != 36 || i == 0 || !ev[i-1].flush || i+1 == len(ev) || !ev[i+1].flush {
				t.Fatalf("%s: write %d of %d bytes at %#x lands inside the old image and is not the flushed header switch", name, i, len(e.data), e.off)
			}
		}
	}
	if inPlace != 1 {
		t.Fatalf("%s: %d header switches, want 1", name, inPlace)
	}
	judgeStates(t, dir, name, base, ev, rng, nil)
}

// judgeStates checks every state a kill or a power loss can leave of
// one operation's writes ev on base: qemu-img check finds nothing but
// leaks, and judge, when not nil, has nothing to say (it returns what is
// wrong with the state file at path).
func judgeStates(t *testing.T, dir, name string, base []byte, ev []devEvent, rng *rand.Rand, judge func(path string) string) {
	t.Helper()
	path := filepath.Join(dir, "state.qcow2")
	state := func(ws []devEvent) []byte {
		b := append([]byte(nil), base...)
		for _, w := range ws {
			b = applyWrite(b, w.off, w.data)
		}
		return b
	}
	var writes []devEvent
	for _, e := range ev {
		if !e.flush {
			writes = append(writes, e)
		}
	}
	check := func(ws []devEvent) (string, string) {
		if err := os.WriteFile(path, state(ws), 0o644); err != nil {
			t.Fatal(err)
		}
		if bad, out := judgeState(t, path); bad != "" {
			return bad, out
		}
		if judge != nil {
			return judge(path), ""
		}
		return "", ""
	}
	// Kills: every prefix of the writes.
	for k := 0; k <= len(writes); k++ {
		if bad, out := check(writes[:k]); bad != "" {
			t.Fatalf("%s, killed after write %d of %d: %s\n%s", name, k, len(writes), bad, out)
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
			losses++
			if bad, out := check(ws); bad != "" {
				t.Fatalf("%s, power loss after flush %d: %s\n%s", name, len(durable), bad, out)
			}
		}
		durable = append(durable, pending...)
	}
	t.Logf("%s: %d writes, %d flushes; %d kill states, %d power-loss states, all clean",
		name, len(writes), len(ev)-len(writes), len(writes)+1, losses)
}

// judgeState runs qemu-img check on path: bad is the first line that is
// not a leak report (empty when the image is clean or only leaks).
func judgeState(t *testing.T, path string) (bad, out string) {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "-f", "qcow2", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out = stderr.String() + stdout.String()
	var ee *exec.ExitError
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() != 3) {
		return fmt.Sprintf("qemu-img check: %v", err), out
	}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "Leaked cluster ") {
			return l, out
		}
	}
	return "", out
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
	dev, img := openRecording(t, path)
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
