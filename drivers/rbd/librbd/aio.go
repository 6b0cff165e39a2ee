package librbd

import (
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pending maps the number a completion carries to what runs when it
// ends. Completions carry a number, not a Go pointer, because librbd
// keeps the argument past the call that hands it over.
var pending = struct {
	sync.Mutex
	next uintptr
	m    map[uintptr]func(ret int64)
}{m: map[uintptr]func(int64){}}

func register(done func(ret int64)) uintptr {
	pending.Lock()
	defer pending.Unlock()
	pending.next++
	pending.m[pending.next] = done
	return pending.next
}

func take(id uintptr) func(ret int64) {
	pending.Lock()
	defer pending.Unlock()
	done := pending.m[id]
	delete(pending.m, id)
	return done
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
				if done := take(id); done != nil {
					done(ret)
				}
			}
			if int(n) < len(comps) {
				break
			}
		}
	}
}

// start submits one request; done runs on the poller with librbd's
// return value when it ends. It fails, and done never runs, when librbd
// refuses the request.
func (im *Image) start(submit func(c uintptr) int32, done func(ret int64)) error {
	id := register(done)
	var c uintptr
	if r := lib.aioCreateCompletion(id, 0, &c); r < 0 {
		take(id)
		return errno(int64(r))
	}
	if r := submit(c); r < 0 {
		take(id)
		lib.aioRelease(c)
		return errno(int64(r))
	}
	return nil
}

// aio runs one request that carries no data back and parks the calling
// goroutine (not an OS thread) until it ends. Any number run
// concurrently.
func (im *Image) aio(submit func(c uintptr) int32) error {
	return wait(func(done func(error)) error {
		return im.start(submit, func(ret int64) { done(retErr(ret)) })
	})
}

// retErr is the error of librbd's return value: negative is an errno.
func retErr(ret int64) error {
	if ret < 0 {
		return errno(ret)
	}
	return nil
}

// startData submits a request on the buffer p, pinned from submission
// until librbd ends the request (or refuses it). An empty p has nothing
// to pin or move: done runs at once with 0.
func (im *Image) startData(p []byte, submit func(buf unsafe.Pointer, c uintptr) int32, done func(ret int64)) error {
	if len(p) == 0 {
		done(0)
		return nil
	}
	pin := new(runtime.Pinner)
	pin.Pin(&p[0])
	err := im.start(func(c uintptr) int32 { return submit(unsafe.Pointer(&p[0]), c) },
		func(ret int64) { pin.Unpin(); done(ret) })
	if err != nil {
		pin.Unpin()
	}
	return err
}

// StartRead starts reading len(p) bytes at off (rbd_aio_read) and calls
// done on the poller when they are in p. As in ReadAt, a short read
// leaves zeroes in the rest of p. The error is librbd's refusal to
// start, and then done is never called.
func (im *Image) StartRead(p []byte, off int64, done func(error)) error {
	return im.startData(p, func(buf unsafe.Pointer, c uintptr) int32 {
		return lib.aioRead(im.h, uint64(off), uintptr(len(p)), buf, c)
	}, func(ret int64) {
		if ret >= 0 && int(ret) < len(p) {
			clear(p[ret:])
		}
		done(retErr(ret))
	})
}

// StartWrite starts writing p at off (rbd_aio_write) and calls done on
// the poller when librbd has it. The error is librbd's refusal to
// start, and then done is never called.
func (im *Image) StartWrite(p []byte, off int64, done func(error)) error {
	return im.startData(p, func(buf unsafe.Pointer, c uintptr) int32 {
		return lib.aioWrite(im.h, uint64(off), uintptr(len(p)), buf, c)
	}, func(ret int64) { done(retErr(ret)) })
}

var errChanPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// wait runs an asynchronous request and parks the calling goroutine
// until it ends.
func wait(start func(done func(error)) error) error {
	ch := errChanPool.Get().(chan error)
	defer errChanPool.Put(ch)
	// Buffered: the poller never blocks on the send.
	if err := start(func(err error) { ch <- err }); err != nil {
		return err
	}
	return <-ch
}

// ReadAt reads len(p) bytes at off (rbd_aio_read). A short read (past
// the end of a shrunk image) leaves zeroes in the rest of p.
func (im *Image) ReadAt(p []byte, off int64) error {
	return wait(func(done func(error)) error { return im.StartRead(p, off, done) })
}

// WriteAt writes p at off (rbd_aio_write).
func (im *Image) WriteAt(p []byte, off int64) error {
	return wait(func(done func(error)) error { return im.StartWrite(p, off, done) })
}

// Discard is rbd_aio_discard.
func (im *Image) Discard(off, length int64) error {
	return im.aio(func(c uintptr) int32 {
		return lib.aioDiscard(im.h, uint64(off), uint64(length), c)
	})
}

// WriteZeroes is rbd_aio_write_zeroes; without mayUnmap the range stays
// allocated (thick provisioning).
func (im *Image) WriteZeroes(off, length int64, mayUnmap bool) error {
	var flags int32
	if !mayUnmap {
		flags = writeZeroesThickProv
	}
	return im.aio(func(c uintptr) int32 {
		return lib.aioWriteZeroes(im.h, uint64(off), uintptr(length), c, flags, 0)
	})
}

// Flush is rbd_aio_flush: every write completed before it is durable.
func (im *Image) Flush() error {
	return im.aio(func(c uintptr) int32 { return lib.aioFlush(im.h, c) })
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
