package rbdtest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	_ "blockd/drivers/rbd"
	"blockd/events"
	"blockd/schema"
)

// openNode opens an rbd node in an in-process graph and returns its data
// path (the node's gate in front of the driver).
func openNode(t *testing.T, conf, img string) blockio.Device { return openNodeTB(t, conf, img) }

func openNodeTB(t testing.TB, conf, img string) blockio.Device {
	t.Helper()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	var opts schema.BlockdevOptions
	if err := schema.Decode([]byte(blockdevJSON("r", conf, img)), &opts); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(&opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.CloseAll() })
	return g.Lookup("r").IO()
}

// 64 writes of 64 KiB in flight at once on one node (each its own
// goroutine, librbd completing them on its threads), then 64 concurrent
// reads: every byte is where it was written. Run under -race this also
// checks the completion path between librbd's threads and Go.
func TestConcurrentWrites(t *testing.T) {
	conf := needCluster(t)
	img := newImage(t, 16<<20)
	dev := openNode(t, conf, img)
	const n, size = 64, 64 << 10
	pattern := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, size) }
	// Spread over the image, several per object, out of order.
	off := func(i int) int64 { return int64((i*37)%n) * (256 << 10) }
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dev.WriteAt(pattern(i), off(i), 0); err != nil {
				errs <- fmt.Errorf("write %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			if err := dev.ReadAt(buf, off(i)); err != nil {
				errs <- fmt.Errorf("read %d: %w", i, err)
				return
			}
			if !bytes.Equal(buf, pattern(i)) {
				errs <- fmt.Errorf("read %d at %d: got %#x..., want %#x", i, off(i), buf[0], i+1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Block status follows librbd's object map: a new image is one zero
// extent, a write makes its whole object data, discard and write-zeroes
// with unmap make it zero again; truncate grows and shrinks the image.
func TestBlockStatusAndTruncate(t *testing.T) {
	conf := needCluster(t)
	img := newImage(t, 32<<20)
	dev := openNode(t, conf, img)
	const obj = 4 << 20
	status := func(off, length int64) blockio.Status {
		t.Helper()
		st, err := dev.BlockStatus(off, length)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	isZero := func(st blockio.Status) bool {
		return st.Flags&blockio.StatusZero != 0 && st.Flags&blockio.StatusData == 0
	}
	if st := status(0, 32<<20); !isZero(st) || st.Length != 32<<20 {
		t.Fatalf("new image: %+v", st)
	}
	if err := dev.WriteAt(bytes.Repeat([]byte{7}, 4096), 2*obj+obj/2, 0); err != nil {
		t.Fatal(err)
	}
	if st := status(0, 32<<20); !isZero(st) || st.Length != 2*obj {
		t.Fatalf("before the written object: %+v", st)
	}
	if st := status(2*obj+100, 32<<20-2*obj-100); st.Flags&blockio.StatusData == 0 || st.Length != obj-100 {
		t.Fatalf("in the written object: %+v", st)
	}
	if st := status(3*obj, 5*obj); !isZero(st) || st.Length != 5*obj {
		t.Fatalf("after the written object: %+v", st)
	}
	if err := dev.WriteZeroes(2*obj, obj, blockio.MayUnmap); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := dev.ReadAt(buf, 2*obj+obj/2); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("after write-zeroes: %v %#x", err, buf[0])
	}
	if err := dev.WriteAt(bytes.Repeat([]byte{9}, 4096), obj, 0); err != nil {
		t.Fatal(err)
	}
	if err := dev.Discard(obj, obj); err != nil {
		t.Fatal(err)
	}
	if err := dev.ReadAt(buf, obj); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("after discard: %v %#x", err, buf[0])
	}
	if st := status(0, 32<<20); !isZero(st) || st.Length != 32<<20 {
		t.Fatalf("after discard and unmapping zeroes: %+v", st)
	}

	if err := dev.Truncate(40 << 20); err != nil {
		t.Fatal(err)
	}
	if s, _ := dev.Size(); s != 40<<20 {
		t.Fatalf("size after growing: %d", s)
	}
	if err := dev.ReadAt(buf, 40<<20-4096); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("grown range: %v %#x", err, buf[0])
	}
	if err := dev.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	if err := dev.ReadAt(buf, 8<<20); err == nil {
		t.Fatal("read past the end after shrinking succeeded")
	}
}

// Empty reads and writes end at once without reaching librbd: there is
// no buffer to pin (librbd's synchronous calls and the asynchronous
// start share that guard).
func TestEmptyRequests(t *testing.T) {
	conf := needCluster(t)
	dev := openNode(t, conf, newImage(t, 1<<20))
	if err := dev.ReadAt([]byte{}, 4096); err != nil {
		t.Fatalf("empty read: %v", err)
	}
	if err := dev.WriteAt([]byte{}, 4096, 0); err != nil {
		t.Fatalf("empty write: %v", err)
	}
}
