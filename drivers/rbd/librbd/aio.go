package librbd

import (
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pending maps the number a completion carries to the goroutine waiting
// for it. Completions carry a number, not a Go pointer, because librbd
// keeps the argument past the call that hands it over.
var pending = struct {
	sync.Mutex
	next uintptr
	m    map[uintptr]chan int64
}{m: map[uintptr]chan int64{}}

var chanPool = sync.Pool{New: func() any { return make(chan int64, 1) }}

func register(ch chan int64) uintptr {
	pending.Lock()
	defer pending.Unlock()
	pending.next++
	pending.m[pending.next] = ch
	return pending.next
}

func take(id uintptr) chan int64 {
	pending.Lock()
	defer pending.Unlock()
	ch := pending.m[id]
	delete(pending.m, id)
	return ch
}

// eventTypeEventfd is librbd's EVENT_TYPE_EVENTFD (EVENT_TYPE_PIPE is 1).
const eventTypeEventfd = 2

// startPoller makes librbd signal finished requests on an eventfd that a
// goroutine waits on through Go's poller: no librbd thread ever enters
// Go, and one wake-up harvests every completion that is ready.
func (im *Image) startPoller() error {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return err
	}
	if r := lib.setImageNotification(im.h, int32(fd), eventTypeEventfd); r < 0 {
		unix.Close(fd)
		return errno(int64(r))
	}
	// A non-blocking descriptor: reads park the goroutine in the poller.
	im.events = os.NewFile(uintptr(fd), "rbd-completions")
	im.polled = make(chan struct{})
	go im.poll()
	return nil
}

// poll delivers completions until the eventfd is closed. The counter is
// read (and reset) before the queue is drained, so a completion queued
// after the drain has signalled again and none is missed.
func (im *Image) poll() {
	defer close(im.polled)
	var buf [8]byte
	comps := make([]uintptr, 64)
	for {
		if _, err := im.events.Read(buf[:]); err != nil || im.stopping.Load() {
			return
		}
		for {
			n := lib.pollIOEvents(im.h, unsafe.Pointer(&comps[0]), int32(len(comps)))
			for _, c := range comps[:max(n, 0)] {
				id := lib.aioGetArg(c)
				ret := lib.aioGetReturnValue(c)
				lib.aioRelease(c)
				if ch := take(id); ch != nil {
					ch <- ret // buffered: never blocks the poller
				}
			}
			if int(n) < len(comps) {
				break
			}
		}
	}
}

// aio submits one request and parks the calling goroutine (not an OS
// thread) until the poller hands it the result. Any number run
// concurrently.
func (im *Image) aio(submit func(c uintptr) int32) (int64, error) {
	ch := chanPool.Get().(chan int64)
	id := register(ch)
	var c uintptr
	if r := lib.aioCreateCompletion(id, 0, &c); r < 0 {
		take(id)
		chanPool.Put(ch)
		return 0, errno(int64(r))
	}
	if r := submit(c); r < 0 {
		take(id)
		lib.aioRelease(c)
		chanPool.Put(ch)
		return 0, errno(int64(r))
	}
	ret := <-ch
	chanPool.Put(ch)
	if ret < 0 {
		return ret, errno(ret)
	}
	return ret, nil
}

// ReadAt reads len(p) bytes at off (rbd_aio_read). A short read (past
// the end of a shrunk image) leaves zeroes in the rest of p.
func (im *Image) ReadAt(p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	var pin runtime.Pinner
	pin.Pin(&p[0])
	defer pin.Unpin()
	n, err := im.aio(func(c uintptr) int32 {
		return lib.aioRead(im.h, uint64(off), uintptr(len(p)), unsafe.Pointer(&p[0]), c)
	})
	if err != nil {
		return err
	}
	if int(n) < len(p) {
		clear(p[n:])
	}
	return nil
}

// WriteAt writes p at off (rbd_aio_write).
func (im *Image) WriteAt(p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	var pin runtime.Pinner
	pin.Pin(&p[0])
	defer pin.Unpin()
	_, err := im.aio(func(c uintptr) int32 {
		return lib.aioWrite(im.h, uint64(off), uintptr(len(p)), unsafe.Pointer(&p[0]), c)
	})
	return err
}

// Discard is rbd_aio_discard.
func (im *Image) Discard(off, length int64) error {
	_, err := im.aio(func(c uintptr) int32 {
		return lib.aioDiscard(im.h, uint64(off), uint64(length), c)
	})
	return err
}

// WriteZeroes is rbd_aio_write_zeroes; without mayUnmap the range stays
// allocated (thick provisioning).
func (im *Image) WriteZeroes(off, length int64, mayUnmap bool) error {
	var flags int32
	if !mayUnmap {
		flags = writeZeroesThickProv
	}
	_, err := im.aio(func(c uintptr) int32 {
		return lib.aioWriteZeroes(im.h, uint64(off), uintptr(length), c, flags, 0)
	})
	return err
}

// Flush is rbd_aio_flush: every write completed before it is durable.
func (im *Image) Flush() error {
	_, err := im.aio(func(c uintptr) int32 { return lib.aioFlush(im.h, c) })
	return err
}

// diffs maps the argument of a running rbd_diff_iterate2 to its visitor.
var diffs = struct {
	sync.Mutex
	next uintptr
	m    map[uintptr]func(off, length uint64, exists bool) bool
}{m: map[uintptr]func(off, length uint64, exists bool) bool{}}

// diffStop is what the visitor answers to end the iteration early.
const diffStop = -9000

func onDiffExtent(off, length, exists, arg uintptr) uintptr {
	diffs.Lock()
	fn := diffs.m[arg]
	diffs.Unlock()
	if fn == nil || !fn(uint64(off), uint64(length), uint32(exists) != 0) {
		stop := int32(diffStop)
		return uintptr(uint32(stop))
	}
	return 0
}

// DiffIterate calls visit for each extent of [off, off+length) that
// exists or was discarded since the image's creation
// (rbd_diff_iterate2 from no snapshot, parent included), in offset
// order, until visit returns false. stopped reports that it did.
func (im *Image) DiffIterate(off, length uint64, wholeObject bool, visit func(off, length uint64, exists bool) bool) (stopped bool, err error) {
	diffs.Lock()
	diffs.next++
	id := diffs.next
	diffs.m[id] = visit
	diffs.Unlock()
	defer func() {
		diffs.Lock()
		delete(diffs.m, id)
		diffs.Unlock()
	}()
	var whole int32
	if wholeObject {
		whole = 1
	}
	r := lib.rbdDiffIterate2(im.h, nil, off, length, 1, whole, diffCB, id)
	if r == diffStop {
		return true, nil
	}
	if r < 0 {
		return false, errno(int64(r))
	}
	return false, nil
}
