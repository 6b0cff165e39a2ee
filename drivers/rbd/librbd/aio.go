package librbd

import (
	"runtime"
	"sync"
	"unsafe"
)

// pending maps the number a completion carries to the goroutine waiting
// for it. Completions carry a number, not a Go pointer, because librbd
// keeps the argument past the call that hands it over.
var pending = struct {
	sync.Mutex
	next uintptr
	m    map[uintptr]chan struct{}
}{m: map[uintptr]chan struct{}{}}

var chanPool = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

func register(ch chan struct{}) uintptr {
	pending.Lock()
	defer pending.Unlock()
	pending.next++
	pending.m[pending.next] = ch
	return pending.next
}

func unregister(id uintptr) {
	pending.Lock()
	delete(pending.m, id)
	pending.Unlock()
}

// onCompletion runs on a librbd thread (rbd_callback_t): it only wakes
// the waiter, which reads the result and releases the completion.
func onCompletion(_, arg uintptr) {
	pending.Lock()
	ch := pending.m[arg]
	delete(pending.m, arg)
	pending.Unlock()
	if ch != nil {
		ch <- struct{}{} // buffered: never blocks librbd's thread
	}
}

// aio submits one request and parks the calling goroutine (not an OS
// thread) until librbd completes it. Any number run concurrently.
func (im *Image) aio(submit func(c uintptr) int32) (int64, error) {
	ch := chanPool.Get().(chan struct{})
	id := register(ch)
	var c uintptr
	if r := lib.aioCreateCompletion(id, completionCB, &c); r < 0 {
		unregister(id)
		chanPool.Put(ch)
		return 0, errno(int64(r))
	}
	if r := submit(c); r < 0 {
		unregister(id)
		lib.aioRelease(c)
		chanPool.Put(ch)
		return 0, errno(int64(r))
	}
	<-ch
	chanPool.Put(ch)
	ret := lib.aioGetReturnValue(c)
	lib.aioRelease(c)
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
