package jobs_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	_ "blockd/drivers/throttle"
	"blockd/internal/graphtest"
	"blockd/objects"
)

// cbw-timeout with a slow target: the target is a throttle node over a
// raw file, in a group that writes 16 KiB/s. The first write's copy fits
// the group's empty bucket and fills it, so the copy before the next
// write waits about four seconds, longer than the one-second timeout.

const (
	cbwSize    = 4 << 20
	cbwOld     = 0x11
	cbwSlowOff = 1 << 20 // the write whose copy outlasts the timeout
)

// cbwFiles are the raw files under a copy-before-write filter.
type cbwFiles struct{ src, tgt string }

// newSlowCbw opens source, throttled target, filter (with extra options
// as JSON members) and snapshot-access node "acc" over it, and makes the
// first write so that the next copy is slow.
func newSlowCbw(t *testing.T, cbwOptions string) (*graphtest.Env, cbwFiles) {
	t.Helper()
	dir := t.TempDir()
	f := cbwFiles{src: filepath.Join(dir, "src.raw"), tgt: filepath.Join(dir, "tgt.raw")}
	if err := os.WriteFile(f.src, pattern(cbwOld, cbwSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.tgt, make([]byte, cbwSize), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := objects.NewRegistry(nil)
	e := graphtest.New(t, func(e *graphtest.Env) {
		objs.RegisterCommands(e.Reg)
		e.G.SetObjects(objs)
	})
	e.Must(t, "object-add", `{"qom-type": "throttle-group", "id": "slow", "limits": {"bps-write": 16384}}`)
	e.Must(t, "blockdev-add", fmt.Sprintf(`{"driver": "file", "node-name": "src", "filename": %q}`, f.src))
	e.Must(t, "blockdev-add", fmt.Sprintf(`{"driver": "throttle", "node-name": "tgt", "throttle-group": "slow",
		"file": {"driver": "file", "filename": %q}}`, f.tgt))
	e.Must(t, "blockdev-add", `{"driver": "copy-before-write", "node-name": "cbw", "file": "src", "target": "tgt"`+
		cbwOptions+`}`)
	e.Must(t, "blockdev-add", `{"driver": "snapshot-access", "node-name": "acc", "file": "cbw"}`)
	if err := e.IO(t, "cbw").WriteAt(pattern(0x22, 64<<10), 0, 0); err != nil {
		t.Fatalf("first write: %v", err)
	}
	return e, f
}

// closeGraph closes every node, as quit does.
func closeGraph(e *graphtest.Env) { _ = e.O.Do(e.G.CloseAll) }

func fileAt(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[off : off+n]
}

// The slow copy's write fails with ETIMEDOUT and leaves the source as it
// was; so does the next write of the cluster, which waits for the copy
// still in flight. The snapshot reads the point in time, and the copy
// reaches the target before the filter closes.
func TestCbwTimeoutFailsTheGuestWrite(t *testing.T) {
	t.Parallel()
	e, f := newSlowCbw(t, `, "cbw-timeout": 1`)
	cbw := e.IO(t, "cbw")
	for i := 0; i < 2; i++ {
		if err := cbw.WriteAt(pattern(0x33, 64<<10), cbwSlowOff, 0); !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("write %d with the copy outlasting cbw-timeout: %v, want ETIMEDOUT", i+1, err)
		}
	}
	if got := fileAt(t, f.src, cbwSlowOff, 64<<10); !bytes.Equal(got, pattern(cbwOld, 64<<10)) {
		t.Fatal("a timed-out write changed the source")
	}
	snap := make([]byte, cbwSize)
	if err := e.IO(t, "acc").ReadAt(snap, 0); err != nil {
		t.Fatalf("snapshot read: %v", err)
	}
	firstDiff(t, "snapshot", snap, pattern(cbwOld, cbwSize))
	closeGraph(e)
	if got := fileAt(t, f.tgt, cbwSlowOff, 64<<10); !bytes.Equal(got, pattern(cbwOld, 64<<10)) {
		t.Fatal("the timed-out copy did not reach the target before the filter closed")
	}
}

// With break-snapshot the write goes on and the snapshot can no longer
// be read anywhere; later writes copy nothing.
func TestCbwTimeoutBreaksTheSnapshot(t *testing.T) {
	t.Parallel()
	e, f := newSlowCbw(t, `, "cbw-timeout": 1, "on-cbw-error": "break-snapshot"`)
	cbw := e.IO(t, "cbw")
	if err := cbw.WriteAt(pattern(0x33, 64<<10), cbwSlowOff, 0); err != nil {
		t.Fatalf("write with the copy outlasting cbw-timeout: %v", err)
	}
	if err := cbw.WriteAt(pattern(0x44, 64<<10), 2<<20, 0); err != nil {
		t.Fatalf("write after the break: %v", err)
	}
	for _, off := range []int64{0, cbwSlowOff, 3 << 20} {
		if err := e.IO(t, "acc").ReadAt(make([]byte, 4096), off); !errors.Is(err, syscall.EACCES) {
			t.Fatalf("snapshot read at %d after the break: %v, want EACCES", off, err)
		}
	}
	if got := fileAt(t, f.src, cbwSlowOff, 64<<10); !bytes.Equal(got, pattern(0x33, 64<<10)) {
		t.Fatal("the write did not reach the source")
	}
	closeGraph(e)
	if got := fileAt(t, f.tgt, 2<<20, 64<<10); bytes.Equal(got, pattern(cbwOld, 64<<10)) {
		t.Fatal("a write after the break copied its cluster")
	}
}

// cbw-timeout 0 waits for the slow copy: the write succeeds and the
// snapshot still reads the point in time, the slow cluster from the
// target.
func TestCbwTimeoutZeroWaits(t *testing.T) {
	t.Parallel()
	e, f := newSlowCbw(t, `, "cbw-timeout": 0`)
	if err := e.IO(t, "cbw").WriteAt(pattern(0x33, 64<<10), cbwSlowOff, 0); err != nil {
		t.Fatalf("write with a slow copy: %v", err)
	}
	snap := make([]byte, cbwSize)
	if err := e.IO(t, "acc").ReadAt(snap, 0); err != nil {
		t.Fatalf("snapshot read: %v", err)
	}
	firstDiff(t, "snapshot", snap, pattern(cbwOld, cbwSize))
	if got := fileAt(t, f.src, cbwSlowOff, 64<<10); !bytes.Equal(got, pattern(0x33, 64<<10)) {
		t.Fatal("the write did not reach the source")
	}
	if got := fileAt(t, f.tgt, cbwSlowOff, 64<<10); !bytes.Equal(got, pattern(cbwOld, 64<<10)) {
		t.Fatal("the target lacks the slow cluster's old data")
	}
}
