package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	snapCrashSize  = 4 << 20
	snapCrashBlock = 4096
)

// snapshotCrashHelper runs in the child: it writes a 4 KiB block, flushes,
// takes a snapshot, and now and then deletes an older one or reverts to
// one, forever. Every step is announced before it starts and after it
// ended: "w seq off" / "W seq" (flushed), "C name" / "c name",
// "D name" / "d name", "A name" / "a name".
func snapshotCrashHelper(spec string) int {
	f := strings.Fields(spec)
	seed, _ := strconv.ParseInt(f[1], 10, 64)
	fd, err := openFileDev(f[0], false)
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	img, err := Open(fd, OpenOptions{})
	if err != nil {
		fmt.Println("E", err)
		return 1
	}
	rng := rand.New(rand.NewSource(seed))
	var snaps []string
	buf := make([]byte, snapCrashBlock)
	for i := int64(1); ; i++ {
		off := rng.Int63n(snapCrashSize/snapCrashBlock) * snapCrashBlock
		fmt.Println("w", i, off)
		fillPattern(buf, i, off)
		if err := img.WriteAt(buf, off, 0); err != nil || img.Flush() != nil {
			fmt.Println("E write", err)
			return 1
		}
		fmt.Println("W", i)
		name := fmt.Sprint("s", i)
		fmt.Println("C", name)
		if _, err := img.CreateSnapshot(name, uint32(i), 0, 0, NoIcount); err != nil {
			fmt.Println("E create", err)
			return 1
		}
		fmt.Println("c", name)
		snaps = append(snaps, name)
		switch r := rng.Intn(4); {
		case len(snaps) > 4 || r == 0:
			k := rng.Intn(len(snaps))
			fmt.Println("D", snaps[k])
			if _, err := img.DeleteSnapshot("", snaps[k]); err != nil {
				fmt.Println("E delete", err)
				return 1
			}
			fmt.Println("d", snaps[k])
			snaps = append(snaps[:k], snaps[k+1:]...)
		case r == 1:
			k := rng.Intn(len(snaps))
			fmt.Println("A", snaps[k])
			if _, err := img.ApplySnapshot(snaps[k]); err != nil {
				fmt.Println("E apply", err)
				return 1
			}
			fmt.Println("a", snaps[k])
		}
	}
}

// snapModel is what the announced steps say the image holds: the
// sequence number of the last write of each block (0: never written).
type snapModel map[int64]int64

func (m snapModel) clone() snapModel {
	c := snapModel{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TestSnapshotCrash kills the engine while it writes, creates, deletes
// and reverts to internal snapshots. Afterwards qemu-img check finds
// nothing but leaked clusters: every change is built in fresh clusters
// and switched in by one header write (metaswitch.go), so no kill can
// leave a refcount and a COPIED flag disagreeing. The snapshot list holds every snapshot that was completed and not
// being deleted, none that was deleted; each snapshot reads as the image
// read when it was taken; and the active layer holds every flushed write
// (or, after an interrupted revert, the reverted-to snapshot's data).
// QCOW2_SNAPSHOT_KILLS sets the number of kills (default 12, 6 with
// -short).
func TestSnapshotCrash(t *testing.T) {
	requireQemu(t)
	kills := 12
	if testing.Short() {
		kills = 6
	}
	if s := os.Getenv("QCOW2_SNAPSHOT_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("QCOW2_SNAPSHOT_KILLS=%q: want a positive number", s)
		}
		kills = n
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	steps := 0
	for round := 0; round < kills; round++ {
		steps += snapshotCrashRound(t, dir, round, rng.Int63(), time.Duration(10+rng.Intn(150))*time.Millisecond)
	}
	if steps < kills*3 {
		t.Fatalf("the helper got through %d steps in %d rounds: too few to test snapshots", steps, kills)
	}
}

// snapshotCrashRound runs one kill and checks the image; it returns the
// number of steps the helper announced.
func snapshotCrashRound(t *testing.T, dir string, round int, seed int64, runFor time.Duration) int {
	path := filepath.Join(dir, fmt.Sprintf("snap%d.qcow2", round))
	newImageFile(t, path, CreateOptions{Size: snapCrashSize, ClusterSize: 4096})
	ls := runCrashHelper(t, fmt.Sprintf("snapshot %s %d", path, seed), runFor)

	// Replay the announcements.
	active := snapModel{}
	snaps := map[string]snapModel{} // completed and not being deleted
	maybe := map[string]snapModel{} // interrupted: may or may not exist
	var pendingOff, pendingSeq int64 = -1, 0
	var pendingApply snapModel
	for _, l := range ls {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] == "E" {
			t.Fatalf("round %d: helper: %q", round, l)
		}
		switch f[0] {
		case "w":
			pendingSeq, _ = strconv.ParseInt(f[1], 10, 64)
			pendingOff, _ = strconv.ParseInt(f[2], 10, 64)
		case "W":
			active[pendingOff] = pendingSeq
			pendingOff = -1
		case "C":
			maybe[f[1]] = active.clone()
		case "c":
			snaps[f[1]] = maybe[f[1]]
			delete(maybe, f[1])
		case "D":
			maybe[f[1]] = snaps[f[1]]
			delete(snaps, f[1])
		case "d":
			delete(maybe, f[1])
		case "A":
			pendingApply = snaps[f[1]]
		case "a":
			active, pendingApply = pendingApply.clone(), nil
		}
	}
	where := fmt.Sprintf("round %d (seed %d, %d steps, last %q)", round, seed, len(ls), lastLine(ls))

	r := exec.Command("qemu-img", "check", "-f", "qcow2", path)
	var stderr bytes.Buffer
	r.Stderr = &stderr
	checkOut, _ := r.Output()
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(l, "ERROR") || strings.HasPrefix(l, "Warning") {
			t.Fatalf("%s: qemu-img check:\n%s%s", where, checkOut, stderr.String())
		}
	}

	// The snapshot list.
	list, err := exec.Command("qemu-img", "snapshot", "-l", path).Output()
	if err != nil {
		t.Fatalf("%s: qemu-img snapshot -l: %v", where, err)
	}
	present := map[string]bool{}
	for _, l := range strings.Split(string(list), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] != "ID" && f[0] != "Snapshot" {
			present[f[1]] = true
		}
	}
	for name := range snaps {
		if !present[name] {
			t.Fatalf("%s: snapshot %s lost:\n%s", where, name, list)
		}
	}
	for name := range present {
		if _, ok := snaps[name]; !ok {
			if _, ok := maybe[name]; !ok {
				t.Fatalf("%s: snapshot %s should be gone:\n%s", where, name, list)
			}
		}
	}

	// Contents: each snapshot as the image was when it was taken.
	blocks := map[int64]bool{}
	for _, m := range append([]snapModel{active}, modelsOf(snaps, maybe)...) {
		for off := range m {
			blocks[off] = true
		}
	}
	if pendingOff >= 0 {
		blocks[pendingOff] = true
	}
	for name := range present {
		want := snaps[name]
		if want == nil {
			want = maybe[name]
		}
		raw := filepath.Join(dir, fmt.Sprintf("snap%d-%s.raw", round, name))
		if o, err := exec.Command("qemu-img", "convert", "-l", "snapshot.name="+name, "-O", "raw", path, raw).CombinedOutput(); err != nil {
			t.Fatalf("%s: reading snapshot %s: %v\n%s", where, name, err, o)
		}
		data, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(raw)
		for off := range blocks {
			if got, w := blockSeq(data[off:off+snapCrashBlock], off), want[off]; got != w {
				t.Fatalf("%s: snapshot %s block %#x holds write %d, want %d", where, name, off, got, w)
			}
		}
	}
	// The active layer.
	img, fd := openImage(t, path, OpenOptions{ReadOnly: true})
	defer func() { img.Close(); fd.Close() }()
	buf := make([]byte, snapCrashBlock)
	for off := range blocks {
		if err := img.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		got := blockSeq(buf, off)
		ok := got == active[off] || (off == pendingOff && got == pendingSeq) ||
			(pendingApply != nil && got == pendingApply[off])
		if !ok {
			t.Fatalf("%s: active block %#x holds write %d, want %d", where, off, got, active[off])
		}
	}
	return len(ls)
}

func modelsOf(ms ...map[string]snapModel) []snapModel {
	var out []snapModel
	for _, m := range ms {
		for _, v := range m {
			out = append(out, v)
		}
	}
	return out
}

// blockSeq is the write sequence number a block's pattern records, 0 for
// zeroes, -1 for anything else.
func blockSeq(b []byte, off int64) int64 {
	if bytes.Equal(b, make([]byte, len(b))) {
		return 0
	}
	s := int64(binary.LittleEndian.Uint64(b) >> 40)
	want := make([]byte, len(b))
	fillPattern(want, s, off)
	if !bytes.Equal(b, want) {
		return -1
	}
	return s
}

func lastLine(ls []string) string {
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}
