package file

import (
	"sync"
)

// O_DIRECT needs offsets, lengths and buffer addresses aligned. Callers
// pass arbitrary requests, so the driver does what QEMU's block layer
// does for file-posix: bounce through an aligned buffer, and for writes
// that only cover part of a block, read the block, merge, write it back
// (read-modify-write). Like QEMU, such a write past the end of the file
// leaves the file grown to the next block boundary.

// bounceSize bounds the memory one request uses for bouncing; bigger
// requests go through it in pieces.
const bounceSize = 1 << 20

var bouncePool = sync.Pool{New: func() any {
	b := alignedBuf(bounceSize, maxBlockSize)
	return &b
}}

// getBounce returns an aligned buffer of n bytes and its release func.
func getBounce(n, align int) ([]byte, func()) {
	if n <= bounceSize && align <= maxBlockSize {
		bp := bouncePool.Get().(*[]byte)
		return (*bp)[:n], func() { bouncePool.Put(bp) }
	}
	return alignedBuf(n, align), func() {}
}

var (
	zeroOnce sync.Once
	zeroBuf  []byte
)

// zeroes returns n (at most bounceSize) zero bytes, aligned for O_DIRECT.
// The buffer is shared and must never be written to.
func zeroes(n int) []byte {
	zeroOnce.Do(func() { zeroBuf = alignedBuf(bounceSize, maxBlockSize) })
	return zeroBuf[:min(n, bounceSize)]
}

func alignDown(x, a int64) int64 { return x / a * a }
func alignUp(x, a int64) int64   { return alignDown(x+a-1, a) }

func (h *handle) aligned(p []byte, off int64) bool {
	return off%h.align == 0 && int64(len(p))%h.align == 0 && bufAligned(p, h.memAlign)
}

// chunkSize is the bounce piece for this handle: a multiple of the
// request alignment that holds at least two blocks.
func (h *handle) chunkSize() int64 {
	return max(alignDown(bounceSize, h.align), 2*h.align)
}

func (f *File) readAt(h *handle, p []byte, off int64) error {
	if !h.direct() || h.aligned(p, off) {
		return preadFull(h, p, off)
	}
	end := off + int64(len(p))
	for pos := off; pos < end; {
		start := alignDown(pos, h.align)
		stop := min(end, start+h.chunkSize())
		bufLen := alignUp(stop, h.align) - start
		buf, release := getBounce(int(bufLen), h.memAlign)
		err := preadFull(h, buf, start)
		if err == nil {
			copy(p[pos-off:stop-off], buf[pos-start:])
		}
		release()
		if err != nil {
			return err
		}
		pos = stop
	}
	return nil
}

func (f *File) writeAt(h *handle, p []byte, off int64) error {
	if !h.direct() {
		_, err := pwriteFull(h.fd, p, off)
		return err
	}
	end := off + int64(len(p))
	if off%h.align == 0 && end%h.align == 0 {
		// Whole blocks: no read-modify-write, so it only has to wait for
		// RMW cycles on the same blocks, not for other writes.
		r := f.serial.begin(off, end, false)
		defer f.serial.end(r)
		if bufAligned(p, h.memAlign) {
			_, err := pwriteFull(h.fd, p, off)
			return err
		}
		return f.writeBounced(h, p, off)
	}
	// Partial blocks: the whole padded range is exclusive, otherwise a
	// concurrent write into the same block could be undone by our
	// write-back of the block's old contents.
	r := f.serial.begin(alignDown(off, h.align), alignUp(end, h.align), true)
	defer f.serial.end(r)
	return f.writeBounced(h, p, off)
}

// writeBounced writes p at off through aligned bounce buffers, reading
// the partial first and last blocks first.
func (f *File) writeBounced(h *handle, p []byte, off int64) error {
	end := off + int64(len(p))
	for pos := off; pos < end; {
		start := alignDown(pos, h.align)
		stop := min(end, start+h.chunkSize())
		bufEnd := alignUp(stop, h.align)
		buf, release := getBounce(int(bufEnd-start), h.memAlign)
		err := f.fillBounce(h, buf, start, pos, stop)
		if err == nil {
			copy(buf[pos-start:], p[pos-off:stop-off])
			_, err = pwriteFull(h.fd, buf, start)
		}
		release()
		if err != nil {
			return err
		}
		pos = stop
	}
	return nil
}

// fillBounce reads the blocks of buf (which covers [start, start+len))
// that the data [from, to) does not cover completely.
func (f *File) fillBounce(h *handle, buf []byte, start, from, to int64) error {
	n := int64(len(buf))
	if from > start {
		if err := preadFull(h, buf[:h.align], start); err != nil {
			return err
		}
	}
	if to < start+n && (n > h.align || from == start) {
		// The last block, unless the head read above already covered it.
		if err := preadFull(h, buf[n-h.align:], start+n-h.align); err != nil {
			return err
		}
	}
	return nil
}
