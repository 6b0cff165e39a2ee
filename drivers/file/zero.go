package file

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// errNoFastZero: no fallocate method worked; the caller falls back to
// writing zeroes (unless NoFallback).
var errNoFastZero = errors.New("no efficient write-zeroes method")

// WriteZeroes makes [off, off+length) read as zeroes, extending the file
// if the range ends past it. It follows handle_aiocb_write_zeroes(_unmap):
// with MayUnmap and discard=unmap, punch a hole; else FALLOC_FL_ZERO_RANGE;
// else punch and re-allocate; else plain fallocate past EOF; else write
// zero buffers, unless NoFallback asks for ErrNotSupported.
func (f *File) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	if err := checkReq(off, length); err != nil || length == 0 {
		return err
	}
	err := f.use(func(h *handle, c *config) error {
		if !h.writable() {
			return blockio.ErrReadOnly
		}
		defer f.changed()
		var r *serialReq
		if h.direct() {
			r = f.serial.begin(alignDown(off, h.align), alignUp(off+length, h.align), false)
		}
		restOff, restLen, err := f.zeroFast(h, off, length, flags&blockio.MayUnmap != 0 && c.discardUnmap)
		f.serial.end(r) // writeZeroBuffers registers its own writes
		if err != errNoFastZero {
			return err
		}
		if flags&blockio.NoFallback != 0 {
			return blockio.ErrNotSupported
		}
		return f.writeZeroBuffers(h, restOff, restLen)
	})
	if err == nil && flags&blockio.FUA != 0 {
		err = f.Flush()
	}
	return err
}

// zeroFast tries the fallocate methods. On errNoFastZero it returns the
// part of the range still to be zeroed.
func (f *File) zeroFast(h *handle, off, length int64, unmap bool) (int64, int64, error) {
	if unmap && !f.noPunch.Load() {
		// A hole punched with KEEP_SIZE does not grow the file, so punch
		// only up to EOF and zero the rest below, which extends it.
		end := off + length
		punchEnd := end
		var st unix.Stat_t
		if fstat(h.fd, &st) == nil {
			punchEnd = min(end, st.Size)
		}
		if off < punchEnd {
			err := fallocate(h.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, punchEnd-off)
			switch {
			case err == nil:
				if punchEnd == end {
					return off, 0, nil
				}
				off, length = punchEnd, end-punchEnd
			case err == unix.ENOTSUP, err == unix.EINVAL, err == unix.EBUSY:
				// Could not deallocate with a zero guarantee: write zeroes.
			default:
				return off, length, os.NewSyscallError("fallocate", err)
			}
		}
	}

	if !f.noZeroRange.Load() {
		err := fallocate(h.fd, unix.FALLOC_FL_ZERO_RANGE, off, length)
		if err == nil {
			return off, 0, nil
		}
		if err == unix.ENOTSUP {
			f.noZeroRange.Store(true)
		} else if err != unix.EINVAL {
			// EINVAL: some file systems reject unaligned ranges; go on.
			return off, length, os.NewSyscallError("fallocate", err)
		}
	}

	if !f.noPunch.Load() && !f.noFallocate.Load() {
		err := fallocate(h.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		switch err {
		case nil:
			err = fallocate(h.fd, 0, off, length)
			if err == nil {
				return off, 0, nil
			}
			if err != unix.ENOTSUP {
				return off, length, os.NewSyscallError("fallocate", err)
			}
			f.noFallocate.Store(true)
		case unix.EINVAL:
			f.warn("Your file system is misbehaving: fallocate(FALLOC_FL_PUNCH_HOLE) " +
				"returned EINVAL. Please report this bug to your file system vendor.")
		case unix.ENOTSUP:
			f.noPunch.Store(true)
		default:
			return off, length, os.NewSyscallError("fallocate", err)
		}
	}

	// Last resort: past EOF, plain fallocate extends the file with zeroes.
	var st unix.Stat_t
	if !f.noFallocate.Load() && fstat(h.fd, &st) == nil && off >= st.Size {
		err := fallocate(h.fd, 0, off, length)
		if err == nil {
			return off, 0, nil
		}
		if err != unix.ENOTSUP {
			return off, length, os.NewSyscallError("fallocate", err)
		}
		f.noFallocate.Store(true)
	}
	return off, length, errNoFastZero
}

// writeZeroBuffers is the block layer's fallback: write real zeroes.
func (f *File) writeZeroBuffers(h *handle, off, length int64) error {
	for length > 0 {
		n := min(length, bounceSize)
		if err := f.writeAt(h, zeroes(int(n)), off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Discard deallocates [off, off+length) when discard=unmap, by punching a
// hole; reads then return zeroes. With discard=ignore it does nothing, and
// like QEMU's bdrv_co_pdiscard a file system without hole punching is not
// an error: discard is only a hint.
func (f *File) Discard(off, length int64) error {
	if err := checkReq(off, length); err != nil || length == 0 {
		return err
	}
	return f.use(func(h *handle, c *config) error {
		if !c.discardUnmap {
			return nil
		}
		if !h.writable() {
			return blockio.ErrReadOnly
		}
		if f.noPunch.Load() {
			return nil
		}
		defer f.changed()
		var r *serialReq
		if h.direct() {
			r = f.serial.begin(alignDown(off, h.align), alignUp(off+length, h.align), false)
		}
		defer f.serial.end(r)
		switch err := fallocate(h.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length); err {
		case nil:
			return nil
		case unix.ENOTSUP:
			f.noPunch.Store(true)
			return nil
		default:
			return os.NewSyscallError("fallocate", err)
		}
	})
}

// fallocate retries EINTR and folds "not supported" errnos into ENOTSUP
// like QEMU's translate_err.
func fallocate(fd int, mode uint32, off, length int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, length)
		switch err {
		case unix.EINTR:
			continue
		case unix.ENODEV, unix.ENOSYS, unix.EOPNOTSUPP, unix.ENOTTY:
			return unix.ENOTSUP
		}
		return err
	}
}
