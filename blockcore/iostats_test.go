package blockcore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"blockd/blockcore"
	"blockd/blockio"
)

// Requests through a raw node on a file node are counted on both nodes,
// exactly: operations, bytes, the highest write, and a latency histogram
// holding every request.
// Concurrent writers and a reader taking snapshots keep the race detector
// busy.
func TestIOStatsCountsEveryRequest(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "raw", "node-name": "r", "file": {"driver": "file", "node-name": "f", "filename": %q}}`, img))
	r, f := e.node(t, "r"), e.node(t, "f")
	var u *blockcore.Child
	if err := e.do(func() (err error) {
		u, err = e.g.AttachUser(user("io"), r, "root", pR|pW, pR|pW|pWU|pRS)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	const writers, perWriter, size = 4, 50, 4096
	stop := make(chan struct{})
	var snaps sync.WaitGroup
	snaps.Add(1)
	go func() {
		defer snaps.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = r.Stats().Snapshot()
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for i := range perWriter {
				off := int64((w*perWriter + i) * size)
				if err := u.IO().WriteAt(buf, off, 0); err != nil {
					t.Error(err)
				}
				if err := r.IO().ReadAt(buf[:512], off); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	snaps.Wait()
	if err := r.IO().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.IO().Discard(0, 8192); err != nil && !errors.Is(err, blockio.ErrNotSupported) {
		t.Fatal(err)
	}

	n := uint64(writers * perWriter)
	for _, node := range []*blockcore.Node{r, f} {
		s := node.Stats().Snapshot()
		w, rd, fl := s.Ops[blockcore.OpWrite], s.Ops[blockcore.OpRead], s.Ops[blockcore.OpFlush]
		if w.Ops != n || w.Bytes != n*size || w.Failed != 0 {
			t.Errorf("%s writes: %+v, want %d ops of %d bytes", node.Name(), w, n, size)
		}
		if rd.Ops != n || rd.Bytes != n*512 || rd.Failed != 0 {
			t.Errorf("%s reads: ops %d bytes %d failed %d, want %d, %d, 0", node.Name(), rd.Ops, rd.Bytes, rd.Failed, n, n*512)
		}
		if fl.Ops != 1 {
			t.Errorf("%s flushes: %d", node.Name(), fl.Ops)
		}
		if s.WrHighestOffset != int64(n*size) {
			t.Errorf("%s highest write end %d, want %d", node.Name(), s.WrHighestOffset, n*size)
		}
		for _, op := range blockcore.IOOps {
			var sum uint64
			for _, c := range s.Ops[op].Latency {
				sum += c
			}
			if sum != s.Ops[op].Ops {
				t.Errorf("%s %s: histogram holds %d requests of %d", node.Name(), op, sum, s.Ops[op].Ops)
			}
		}
		if s.LastIO.IsZero() || time.Since(s.LastIO) > time.Minute {
			t.Errorf("%s last I/O at %v", node.Name(), s.LastIO)
		}
	}
	_ = e.do(func() error { e.g.DetachUser(u); return nil })
}

func TestLatencyBuckets(t *testing.T) {
	var s blockcore.IOStats
	now := blockcore.StartIO()
	// A request that has not started yet takes no time: bucket 0.
	s.Account(blockcore.OpRead, 0, 1, now+blockcore.IOStart(time.Hour), nil)
	s.Account(blockcore.OpRead, 0, 1, now-blockcore.IOStart(10*time.Second), nil)
	s.Account(blockcore.OpRead, 0, 7, now, errors.New("EIO"))
	rd := s.Snapshot().Ops[blockcore.OpRead]
	if rd.Ops != 3 || rd.Failed != 1 || rd.Bytes != 2 {
		t.Fatalf("reads %+v, want 3 ops, 1 failed, 2 bytes", rd)
	}
	got := rd.Latency
	if got[0] != 1 || got[blockcore.LatencyBuckets-1] != 1 {
		t.Fatalf("buckets %v", got)
	}
	if b := blockcore.LatencyBound(0); b < time.Microsecond || b > 2*time.Microsecond {
		t.Fatalf("first bound %v", b)
	}
	var nilStats *blockcore.IOStats
	nilStats.Account(blockcore.OpRead, 0, 1, now, nil) // counts nothing, no panic
}

// A range lent through a user edge, a raw node and its file node is a
// read on both nodes; a lending the sink declines counts nothing, since
// the caller reads the range again the usual way.
func TestLentRangesCountAsReads(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "raw", "node-name": "r", "offset": 4096, "file": {"driver": "file", "node-name": "f", "filename": %q}}`, img))
	r, f := e.node(t, "r"), e.node(t, "f")
	var u *blockcore.Child
	if err := e.do(func() (err error) {
		u, err = e.g.AttachUser(user("io"), r, "root", pR, pR|pW|pWU|pRS)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.do(func() error { e.g.DetachUser(u); return nil }) }()
	got := make([]byte, 8192)
	err := blockio.SendRange(u.IO(), 100, 8192, func(fr blockio.FileRange) error {
		if fr.Offset != 4096+100 {
			t.Errorf("lent at file offset %d, want %d", fr.Offset, 4096+100)
		}
		return fr.ReadAt(got, 0)
	})
	if err != nil || string(got) != string(data[4196:4196+8192]) {
		t.Fatalf("lent range: %v, data equal %v", err, string(got) == string(data[4196:4196+8192]))
	}
	declined := errors.New("declined")
	if err := blockio.SendRange(u.IO(), 0, 4096, func(blockio.FileRange) error { return declined }); !errors.Is(err, declined) {
		t.Fatalf("declined lending: %v", err)
	}
	for _, node := range []*blockcore.Node{r, f} {
		rd := node.Stats().Snapshot().Ops[blockcore.OpRead]
		if rd.Ops != 1 || rd.Bytes != 8192 || rd.Failed != 0 {
			t.Errorf("%s reads: ops %d bytes %d failed %d, want 1, 8192, 0", node.Name(), rd.Ops, rd.Bytes, rd.Failed)
		}
	}
}
