package file

import (
	"fmt"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// BlockStatus mirrors raw_co_block_status with want_zero, plus what
// QEMU's generic layer adds for a protocol node: data extents are
// StatusData, holes (and the trailing hole) StatusZero, and everything is
// StatusAllocated with StatusOffsetValid and HostOffset == off, the file
// being the bottom of the graph (qemu-img map shows "present": true,
// "offset" for holes too). When the file system cannot tell, everything
// is data. The range is cut at the end of the file; a query at or past it
// fails with ErrOutOfRange.
func (f *File) BlockStatus(off, length int64) (blockio.Status, error) {
	if err := checkReq(off, length); err != nil {
		return blockio.Status{}, err
	}
	var st blockio.Status
	err := f.use(func(h *handle, _ *config) error {
		size, err := h.length()
		if err != nil {
			return err
		}
		if length == 0 || off >= size {
			return fmt.Errorf("%w: block status at %d, length %d, size %d",
				blockio.ErrOutOfRange, off, length, size)
		}
		length = min(length, size-off)

		// The driver answers for aligned ranges (QEMU's generic layer
		// widens the query to the request alignment and trims the answer).
		start := alignDown(off, h.align)
		flags, n := findStatus(h, start, alignUp(off+length, h.align)-start, size)
		n -= off - start
		if n <= 0 {
			// Cannot happen with a sane lseek; never return an empty range.
			flags, n = blockio.StatusData, length
		}
		st = blockio.Status{
			Flags:      flags | blockio.StatusOffsetValid | blockio.StatusAllocated,
			Length:     min(n, length),
			HostOffset: off,
		}
		return nil
	})
	return st, err
}

// findStatus returns the status at off and how far it extends (maybe past
// length, which the caller trims).
func findStatus(h *handle, off, length, size int64) (blockio.StatusFlags, int64) {
	data, hole, errno := findAllocation(h.fd, off)
	switch {
	case errno == unix.ENXIO:
		return blockio.StatusZero, length // trailing hole
	case errno != 0:
		return blockio.StatusData, length // no information: no holes
	case data == off:
		// Data up to the next hole; a partial block at EOF rounds up.
		return blockio.StatusData, alignUp(hole-off, h.align)
	default:
		return blockio.StatusZero, data - off
	}
}

// findAllocation mirrors QEMU's find_allocation: if off is in data, data
// is off and hole the start of the next hole; if off is in a non-trailing
// hole, hole is off and data the start of the next data. ENXIO means a
// trailing hole (or a file truncated behind our back); other errnos mean
// nothing is known. The lseeks move the fd's file position, which this
// driver never uses (it does positioned I/O only).
func findAllocation(fd int, off int64) (data, hole int64, errno unix.Errno) {
	d, err := lseek(fd, off, unix.SEEK_DATA)
	if err != 0 {
		return 0, 0, err
	}
	if d < off {
		return 0, 0, unix.EIO // not a valid lseek answer
	}
	if d > off {
		return d, off, 0
	}
	hl, err := lseek(fd, off, unix.SEEK_HOLE)
	if err != 0 {
		return 0, 0, err
	}
	if hl < off {
		return 0, 0, unix.EIO
	}
	if hl > off {
		return off, hl, 0
	}
	// In data, then in a hole: a hole was dug meanwhile. Know nothing.
	return 0, 0, unix.EBUSY
}

func lseek(fd int, off int64, whence int) (int64, unix.Errno) {
	for {
		n, err := unix.Seek(fd, off, whence)
		if err == nil {
			return n, 0
		}
		if errno := asErrno(err); errno != unix.EINTR {
			return 0, errno
		}
	}
}
