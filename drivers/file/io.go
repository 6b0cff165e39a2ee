package file

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// The file is a growable device, as a QEMU file node is below its format
// driver: reads past the end return zeroes and writes past the end extend
// the file. Guest-visible bounds are the business of the layers above.

// use runs fn with the current handle and options, holding mu for reading
// so that the fd cannot be closed or swapped meanwhile. fn must not call
// back into a public method (RWMutex read locks do not nest safely).
func (f *File) use(fn func(h *handle, c *config) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.h == nil {
		return os.ErrClosed
	}
	return fn(f.h, &f.cfg)
}

func checkReq(off, length int64) error {
	if off < 0 || length < 0 || length > math.MaxInt64-off {
		return fmt.Errorf("%w: offset %d length %d", blockio.ErrOutOfRange, off, length)
	}
	return nil
}

// ReadAt fills p from offset off; bytes past the end of the file read as
// zeroes (QEMU's bdrv_aligned_preadv does the same for file nodes).
func (f *File) ReadAt(p []byte, off int64) error {
	if err := checkReq(off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	return f.use(func(h *handle, _ *config) error { return f.readAt(h, p, off) })
}

// StartWriteback starts writing the file's dirty pages back without
// waiting (sync_file_range with SYNC_FILE_RANGE_WRITE alone, which
// neither waits nor reports earlier write-back errors: Flush still
// does). Nothing to do under O_DIRECT or cache.no-flush.
func (f *File) StartWriteback() error {
	return f.use(func(h *handle, c *config) error {
		if h.direct() || c.noFlush || !h.writable() {
			return nil
		}
		return os.NewSyscallError("sync_file_range", unix.SyncFileRange(h.fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE))
	})
}

// PageCached reports that the file is read and written through the page
// cache (not O_DIRECT): copying it costs memory bandwidth, not latency.
func (f *File) PageCached() bool {
	cached := false
	_ = f.use(func(h *handle, _ *config) error {
		cached = !h.direct()
		return nil
	})
	return cached
}

// SendRange lends sink the fd itself: a file's bytes are where they are.
// Not under O_DIRECT, where the data is not in the page cache and
// sendfile would read it through the cache behind the node's back.
func (f *File) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	if err := checkReq(off, n); err != nil {
		return err
	}
	return f.use(func(h *handle, _ *config) error {
		if h.direct() {
			return blockio.ErrNotSupported
		}
		return sink(blockio.FileRange{FD: h.fd, Offset: off,
			ReadAt: func(p []byte, at int64) error { return preadFull(h, p, off+at) }})
	})
}

// WriteAt writes p at off, extending the file if needed. FUA is emulated
// with a flush afterwards, as QEMU's block layer does for file-posix,
// which has no native FUA; cache.no-flush therefore also drops it.
func (f *File) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if err := checkReq(off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	err := f.use(func(h *handle, _ *config) error {
		if !h.writable() {
			return blockio.ErrReadOnly
		}
		defer f.changed()
		return f.writeAt(h, p, off)
	})
	if err == nil && flags&blockio.FUA != 0 {
		err = f.Flush()
	}
	return err
}

// Flush makes written data durable with fdatasync. After a failed
// fdatasync without O_DIRECT every later flush fails too: Linux marks
// the failed pages clean, so a retry would falsely report success
// (QEMU's page_cache_inconsistent).
func (f *File) Flush() error {
	return f.use(func(h *handle, c *config) error {
		if c.noFlush {
			return nil
		}
		if e := f.cacheErr.Load(); e != 0 {
			return os.NewSyscallError("fdatasync", unix.Errno(e))
		}
		gen := f.writeGen.Load()
		if gen == f.flushedGen.Load() {
			return nil
		}
		for {
			f.syncs.Add(1)
			err := unix.Fdatasync(h.fd)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if !h.direct() {
					f.cacheErr.CompareAndSwap(0, int32(asErrno(err)))
				}
				return os.NewSyscallError("fdatasync", err)
			}
			for {
				// A concurrent flush may have covered more already.
				done := f.flushedGen.Load()
				if done >= gen || f.flushedGen.CompareAndSwap(done, gen) {
					return nil
				}
			}
		}
	})
}

// changed counts a finished change of the file for Flush. It runs after
// the change, so that a flush that has read the count before cannot
// claim to cover it.
func (f *File) changed() { f.writeGen.Add(1) }

// Size is the length of the file, found like QEMU's raw_getlength with
// lseek(SEEK_END) (which, unlike fstat, fails on files such as procfs
// entries whose size means nothing).
func (f *File) Size() (int64, error) {
	var size int64
	err := f.use(func(h *handle, _ *config) error {
		var err error
		size, err = h.length()
		return err
	})
	return size, err
}

func (h *handle) length() (int64, error) {
	n, errno := lseek(h.fd, 0, unix.SEEK_END)
	if errno != 0 {
		return 0, os.NewSyscallError("lseek", errno)
	}
	return n, nil
}

// Truncate sets the file length exactly (raw_co_truncate with
// preallocation off). Whether the caller may resize is the graph's
// decision (the resize permission); the driver just truncates.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return errorf(blockio.ErrOutOfRange, "Image size cannot be negative")
	}
	return f.use(func(h *handle, _ *config) error {
		if !h.writable() {
			return errorf(blockio.ErrReadOnly, "Image is read-only")
		}
		defer f.changed()
		var st unix.Stat_t
		if err := fstat(h.fd, &st); err != nil {
			return errnoErrorf(asErrno(err), "Could not stat file")
		}
		for {
			err := unix.Ftruncate(h.fd, size)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return errnoErrorf(asErrno(err), "Could not resize file")
			}
			break
		}
		if st.Size == 0 && size >= 512 {
			allocateFirstBlock(h, size)
		}
		return nil
	})
}

// allocateFirstBlock mirrors QEMU: a file grown from empty gets its first
// block written, so that later O_DIRECT alignment probing finds real data
// (it also makes qemu-img map show the same first extent as QEMU does).
// QEMU writes 512 bytes even into a smaller file, growing it; sizes below
// 512 are left alone here so that Truncate stays exact. Failures are
// ignored, this is an optimisation.
func allocateFirstBlock(h *handle, size int64) {
	n := maxBlockSize
	if size < maxBlockSize {
		n = 512
	}
	_, _ = pwriteFull(h.fd, zeroes(n), 0)
}

// preadFull reads len(p) bytes at off, zero-filling past the end of the
// file. Under O_DIRECT an EINVAL after some progress is the unaligned tail
// after a short read at EOF, not an error (handle_aiocb_rw_linear).
func preadFull(h *handle, p []byte, off int64) error {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(h.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err == unix.EINVAL && h.direct() && n > 0 {
			break
		}
		if err != nil {
			return os.NewSyscallError("pread", err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	clear(p[n:])
	return nil
}

// pwriteFull writes all of p at off. A write that makes no progress is
// reported as EINVAL, as QEMU does for short writes.
func pwriteFull(fd int, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, os.NewSyscallError("pwrite", err)
		}
		if m == 0 {
			return n, os.NewSyscallError("pwrite", unix.EINVAL)
		}
		n += m
	}
	return n, nil
}
