// Package file is blockd's protocol driver for regular image files, the
// counterpart of QEMU's file-posix ("driver": "file"). It owns everything
// between a block node and the host file: opening it with QEMU's flags and
// error texts, the data path (pread/pwrite, O_DIRECT bounce buffering,
// fallocate-based zeroing and discard, fdatasync), block status from
// SEEK_DATA/SEEK_HOLE, QEMU-compatible image locking on bytes 100+i and
// 200+i of the file so that blockd and QEMU processes see each other's
// permissions, and re-opening the file with other flags for
// blockdev-reopen and auto-read-only.
//
// The package knows nothing of the block graph: the graph decides which
// permissions a node needs and calls CheckPerm/SetPerm/AbortPerm, and it
// enforces that only resize-capable users grow the file.
package file

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// LockMode is the file driver's "locking" option.
type LockMode string

const (
	LockAuto LockMode = "auto" // lock if the host has OFD locks, else don't
	LockOn   LockMode = "on"   // lock; fall back to POSIX locks with a warning
	LockOff  LockMode = "off"  // take no image locks
)

// Options are the blockdev-add options of a file node that this driver
// acts on. Graph-level options (node-name, detect-zeroes, ...) are not here.
type Options struct {
	Filename string
	ReadOnly bool
	// AutoReadOnly opens the file read-only until a user needs to write
	// (QEMU's auto-read-only: the fd is reopened read-write in CheckPerm).
	AutoReadOnly bool
	Direct       bool     // cache.direct: O_DIRECT
	NoFlush      bool     // cache.no-flush: Flush does nothing
	Locking      LockMode // "" means auto
	// DiscardUnmap is discard=unmap: Discard punches holes and
	// WriteZeroes with MayUnmap may deallocate. Otherwise (discard=ignore)
	// Discard succeeds without doing anything.
	DiscardUnmap bool
	// Warn receives QEMU's warnings (lock fallback, failed unlocks).
	// Nil discards them.
	Warn func(msg string)
}

// config holds the options that blockdev-reopen may change. It is read by
// the data path under File.mu and replaced under its write lock.
type config struct {
	readOnly     bool
	autoReadOnly bool
	direct       bool
	noFlush      bool
	discardUnmap bool
}

// File is an open image file. All methods are safe for concurrent use;
// the data path (blockio.Device) runs in parallel, the permission and
// reopen calls are serialised among themselves.
type File struct {
	filename string
	warnFn   func(string)

	// mu protects h and cfg: every data-path call holds it for reading
	// while it uses the fd, so that swapping or closing the fd (write
	// lock) never pulls it from under a pread.
	mu  sync.RWMutex
	h   *handle // nil once closed
	cfg config

	// permMu serialises the control path (permissions, reopen, close);
	// it is taken before mu. Fields below it change only under it.
	permMu  sync.Mutex
	useLock bool
	lk      lockCmds
	perm    blockio.Perm // permissions of the last SetPerm
	shared  blockio.Perm
	held    lockBytes // bytes locked on h.fd
	pend    *pending  // state prepared by CheckPerm, not yet set

	serial serializer // orders read-modify-write cycles under O_DIRECT

	// cacheErr is the errno of a failed fdatasync without O_DIRECT: after
	// it the page cache may hold data that never reaches the disk, so
	// QEMU fails every later flush too.
	cacheErr atomic.Int32
	// writeGen counts finished changes of the file, flushedGen is the
	// count the last successful fdatasync covered: a flush with nothing
	// new to make durable returns at once (QEMU's write_gen and
	// flushed_gen), so closing or deleting an unwritten node costs no
	// disk flush.
	writeGen, flushedGen atomic.Uint64
	syncs                atomic.Uint64 // fdatasync calls made
	// Methods found unsupported by the file system; not tried again.
	noZeroRange atomic.Bool
	noPunch     atomic.Bool
	noFallocate atomic.Bool
}

var _ blockio.Device = (*File)(nil)

// Open opens a regular file the way QEMU's raw_open_common does. No image
// lock is taken yet: a new node holds no permissions (perm 0, shared all)
// until SetPerm.
func Open(o Options) (*File, error) {
	if o.Filename == "" {
		return nil, errorf(nil, "The 'file' block driver requires a file name")
	}
	mode := o.Locking
	if mode == "" {
		mode = LockAuto
	}
	f := &File{
		filename: o.Filename,
		warnFn:   o.Warn,
		cfg: config{
			readOnly:     o.ReadOnly,
			autoReadOnly: o.AutoReadOnly,
			direct:       o.Direct,
			noFlush:      o.NoFlush,
			discardUnmap: o.DiscardUnmap,
		},
		shared: blockio.PermAll,
	}
	switch mode {
	case LockOn:
		f.useLock = true
		if !hasOFDLocks() {
			f.warn("File lock requested but OFD locking syscall is unavailable, " +
				"falling back to POSIX file locks")
			f.warn("Due to the implementation, locks can be lost unexpectedly.")
		}
	case LockOff:
	case LockAuto:
		f.useLock = hasOFDLocks()
	default:
		return nil, errorf(unix.EINVAL, "Parameter 'locking' does not accept value '%s'", o.Locking)
	}
	f.lk = pickLockCmds()

	h, err := openHandle(o.Filename, openFlags(f.cfg, 0))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := fstat(h.fd, &st); err != nil {
		h.close()
		return nil, errnoErrorf(asErrno(err), "Could not stat file")
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		h.close()
		return nil, errorf(unix.EINVAL, "'file' driver requires '%s' to be a regular file", o.Filename)
	}
	// bdrv_open_driver refreshes the node size right after opening.
	if _, err := h.length(); err != nil {
		h.close()
		return nil, errnoErrorf(asErrno(err), "Could not refresh total sector count")
	}
	f.h = h
	return f, nil
}

// Close releases the file and with it every image lock it holds.
// Closing twice is harmless.
func (f *File) Close() error {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	if f.pend != nil && f.pend.h != nil {
		f.pend.h.close()
	}
	f.pend = nil
	f.mu.Lock()
	h := f.h
	f.h = nil
	f.mu.Unlock()
	if h == nil {
		return nil
	}
	f.held = lockBytes{}
	if err := h.close(); err != nil {
		return &os.PathError{Op: "close", Path: f.filename, Err: err}
	}
	return nil
}

// Filename is the path the file was opened with.
func (f *File) Filename() string { return f.filename }

// Perm returns the permissions of the last successful SetPerm (perm 0 and
// shared all after Open).
func (f *File) Perm() (perm, shared blockio.Perm) {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	return f.perm, f.shared
}

// RequestAlignment is the alignment the host needs for offsets and
// lengths (QEMU's bl.request_alignment): 1 without O_DIRECT. The driver
// handles unaligned requests itself; the graph needs the value for QEMU's
// "Cannot get 'write' permission without 'resize'" check.
func (f *File) RequestAlignment() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.h == nil {
		return 1
	}
	return f.h.align
}

// MemAlignment is the buffer alignment that avoids a bounce copy (QEMU's
// opt_mem_alignment).
func (f *File) MemAlignment() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.h == nil || f.h.memAlign <= 1 {
		return 1
	}
	return max(f.h.memAlign, os.Getpagesize())
}

func (f *File) warn(format string, args ...any) {
	if f.warnFn != nil {
		f.warnFn(fmt.Sprintf(format, args...))
	}
}

// openFlags mirrors raw_parse_flags: with auto-read-only the file is only
// opened read-write while some user holds a writing permission.
func openFlags(c config, perm blockio.Perm) int {
	rw := !c.readOnly
	if c.autoReadOnly {
		rw = rw && perm&(blockio.PermWrite|blockio.PermWriteUnchanged|blockio.PermResize) != 0
	}
	flags := unix.O_RDONLY
	if rw {
		flags = unix.O_RDWR
	}
	if c.direct {
		flags |= unix.O_DIRECT
	}
	return flags
}
