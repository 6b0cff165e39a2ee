package fuse

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"blockd/blockio"
	"blockd/internal/errtext"
)

// rawFS answers the kernel's requests for the one inode of the export
// (the root, which is the exported file). Requests run concurrently, each
// on its own goroutine; operations it does not implement answer ENOSYS.
type rawFS struct {
	gofuse.RawFileSystem
	e *Export
}

func (*rawFS) String() string { return "blockd" }

// Fallocate modes (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// status turns a device error into the errno the client sees.
func status(err error) gofuse.Status {
	if err == nil {
		return gofuse.OK
	}
	switch {
	case errors.Is(err, blockio.ErrReadOnly):
		return gofuse.Status(syscall.EROFS)
	case errors.Is(err, blockio.ErrNotSupported):
		return gofuse.Status(syscall.EOPNOTSUPP)
	case errors.Is(err, blockio.ErrOutOfRange):
		return gofuse.Status(syscall.EINVAL)
	}
	return gofuse.Status(errtext.Errno(err))
}

// Lookup: the export has no directory entries.
func (*rawFS) Lookup(<-chan struct{}, *gofuse.InHeader, string, *gofuse.EntryOut) gofuse.Status {
	return gofuse.ENOENT
}

func (fs *rawFS) GetAttr(_ <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	if !fs.e.enter() {
		return gofuse.EIO
	}
	defer fs.e.leave()
	return fs.e.getattr(in.NodeId, out)
}

func (e *Export) getattr(ino uint64, out *gofuse.AttrOut) gofuse.Status {
	length, err := e.dev.Size()
	if err != nil {
		return status(err)
	}
	blocks := (length + 511) / 512
	if as, ok := e.dev.(AllocatedSizer); ok {
		if n, ok := as.AllocatedSize(); ok && n > 0 {
			blocks = (n + 511) / 512
		}
	}
	now := uint64(time.Now().Unix())
	e.attrMu.Lock()
	out.Attr = gofuse.Attr{
		Ino:    ino,
		Size:   uint64(length),
		Blocks: uint64(blocks),
		Atime:  now, Mtime: now, Ctime: now,
		Mode:  e.mode,
		Nlink: 1,
		Owner: gofuse.Owner{Uid: e.uid, Gid: e.gid},
		// The reference reports its node's request alignment, which
		// is 1 for buffered images.
		Blksize: 1,
	}
	e.attrMu.Unlock()
	out.SetTimeout(time.Second)
	return gofuse.OK
}

// settable are the attributes the reference's library passes on; the
// file handle and lock owner are not attributes.
const settable = gofuse.FATTR_MODE | gofuse.FATTR_UID | gofuse.FATTR_GID | gofuse.FATTR_SIZE |
	gofuse.FATTR_ATIME | gofuse.FATTR_MTIME | gofuse.FATTR_KILL_SUIDGID |
	gofuse.FATTR_ATIME_NOW | gofuse.FATTR_MTIME_NOW | gofuse.FATTR_CTIME

// SetAttr supports resizing and changing mode, and owner when mounted
// with allow_other, as far as the change can actually grant access.
func (fs *rawFS) SetAttr(_ <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	e := fs.e
	if !e.enter() {
		return gofuse.EIO
	}
	defer e.leave()
	toSet := in.Valid & settable
	supported := uint32(gofuse.FATTR_SIZE | gofuse.FATTR_MODE)
	if e.allowOther {
		supported |= gofuse.FATTR_UID | gofuse.FATTR_GID
	}
	if toSet&^supported != 0 {
		return gofuse.Status(syscall.ENOTSUP)
	}
	if toSet&gofuse.FATTR_MODE != 0 {
		// Without allow_other nobody but the owner can reach the file.
		if !e.allowOther && in.Mode&0o077 != 0 {
			return gofuse.EPERM
		}
		if !e.writable && in.Mode&0o222 != 0 {
			return gofuse.EROFS
		}
	}
	if toSet&gofuse.FATTR_SIZE != 0 {
		if !e.writable {
			return gofuse.EACCES
		}
		if err := e.truncate(int64(in.Size)); err != nil {
			return status(err)
		}
	}
	e.attrMu.Lock()
	if toSet&gofuse.FATTR_MODE != 0 {
		e.mode = in.Mode&0o7777 | syscall.S_IFREG
	}
	if toSet&gofuse.FATTR_UID != 0 {
		e.uid = in.Uid
	}
	if toSet&gofuse.FATTR_GID != 0 {
		e.gid = in.Gid
	}
	e.attrMu.Unlock()
	return e.getattr(in.NodeId, out)
}

// truncate resizes the device. Writable and growable exports hold the
// resize permission for their whole life, so no permission change is
// needed here.
func (e *Export) truncate(size int64) error {
	if size < 0 {
		return blockio.ErrOutOfRange
	}
	e.resizeMu.Lock()
	defer e.resizeMu.Unlock()
	return e.dev.Truncate(size)
}

// growTo grows the device to at least size; it never shrinks it, so
// concurrent writes past the end may grow it in any order.
func (e *Export) growTo(size int64) error {
	e.resizeMu.Lock()
	defer e.resizeMu.Unlock()
	cur, err := e.dev.Size()
	if err != nil || cur >= size {
		return err
	}
	return e.dev.Truncate(size)
}

func (*rawFS) Open(_ <-chan struct{}, _ *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	return gofuse.OK
}

func (*rawFS) Release(<-chan struct{}, *gofuse.ReleaseIn) {}

// Read is clipped at the end of the device: clients expect short reads
// at EOF.
func (fs *rawFS) Read(_ <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	e := fs.e
	if !e.enter() {
		return nil, gofuse.EIO
	}
	defer e.leave()
	length, err := e.dev.Size()
	if err != nil {
		return nil, status(err)
	}
	off := int64(in.Offset)
	n := int64(in.Size)
	if off >= length {
		return gofuse.ReadResultData(nil), gofuse.OK
	}
	n = min(n, length-off, int64(len(buf)))
	if err := e.dev.ReadAt(buf[:n], off); err != nil {
		return nil, status(err)
	}
	return gofuse.ReadResultData(buf[:n]), gofuse.OK
}

// Write is clipped at the end of the device unless the export is
// growable, in which case the device grows first.
func (fs *rawFS) Write(_ <-chan struct{}, in *gofuse.WriteIn, data []byte) (uint32, gofuse.Status) {
	e := fs.e
	if !e.writable {
		return 0, gofuse.EACCES
	}
	if !e.enter() {
		return 0, gofuse.EIO
	}
	defer e.leave()
	length, err := e.dev.Size()
	if err != nil {
		return 0, status(err)
	}
	off := int64(in.Offset)
	n := int64(len(data))
	if off+n > length {
		if e.growable {
			if err := e.growTo(off + n); err != nil {
				return 0, status(err)
			}
		} else {
			n = max(length-off, 0)
		}
	}
	if n == 0 {
		return 0, gofuse.OK
	}
	if err := e.dev.WriteAt(data[:n], off, 0); err != nil {
		return 0, status(err)
	}
	return uint32(n), gofuse.OK
}

// Fallocate: punch-hole discards, zero-range writes zeroes, a plain
// allocation is only possible at the end (it grows the device); anything
// else is not supported.
func (fs *rawFS) Fallocate(_ <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	e := fs.e
	if !e.writable {
		return gofuse.EACCES
	}
	if !e.enter() {
		return gofuse.EIO
	}
	defer e.leave()
	blkLen, err := e.dev.Size()
	if err != nil {
		return status(err)
	}
	off, length, mode := int64(in.Offset), int64(in.Length), in.Mode
	if mode&fallocKeepSize != 0 {
		length = min(length, blkLen-off)
	}
	switch {
	case mode == 0:
		if off < blkLen {
			return gofuse.Status(syscall.EOPNOTSUPP)
		}
		return status(e.growTo(off + length))
	case mode&fallocPunchHole != 0:
		if mode&fallocKeepSize == 0 {
			return gofuse.EINVAL
		}
		if length <= 0 {
			return gofuse.OK
		}
		return status(e.dev.Discard(off, length))
	case mode&fallocZeroRange != 0:
		if mode&fallocKeepSize == 0 && off+length > blkLen {
			if err := e.growTo(off + length); err != nil {
				return status(err)
			}
		}
		if length <= 0 {
			return gofuse.OK
		}
		return status(e.dev.WriteZeroes(off, length, 0))
	}
	return gofuse.Status(syscall.EOPNOTSUPP)
}

// Fsync flushes the device; so does Flush, which the kernel sends when a
// client closes its file descriptor.
func (fs *rawFS) Fsync(<-chan struct{}, *gofuse.FsyncIn) gofuse.Status {
	if !fs.e.enter() {
		return gofuse.EIO
	}
	defer fs.e.leave()
	return status(fs.e.dev.Flush())
}

func (fs *rawFS) Flush(<-chan struct{}, *gofuse.FlushIn) gofuse.Status {
	return fs.Fsync(nil, nil)
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the device's block status.
func (fs *rawFS) Lseek(_ <-chan struct{}, in *gofuse.LseekIn, out *gofuse.LseekOut) gofuse.Status {
	e := fs.e
	const seekData, seekHole = 3, 4
	if in.Whence != seekData && in.Whence != seekHole {
		return gofuse.EINVAL
	}
	if !e.enter() {
		return gofuse.EIO
	}
	defer e.leave()
	length, err := e.dev.Size()
	if err != nil {
		return status(err)
	}
	off := int64(in.Offset)
	for {
		if off >= length {
			// The end is an implicit hole.
			if off > length || in.Whence == seekData {
				return gofuse.Status(syscall.ENXIO)
			}
			out.Offset = uint64(off)
			return gofuse.OK
		}
		st, err := e.dev.BlockStatus(off, length-off)
		if err != nil {
			return status(err)
		}
		data := st.Flags&blockio.StatusData != 0
		if data == (in.Whence == seekData) {
			out.Offset = uint64(off)
			return gofuse.OK
		}
		if st.Length <= 0 { // never loop forever on a bad answer
			return gofuse.Status(syscall.ENXIO)
		}
		off += st.Length
	}
}

// StatFs answers what the reference's library answers for a file system
// without statfs: nothing but a block size and a name length.
func (*rawFS) StatFs(_ <-chan struct{}, _ *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	*out = gofuse.StatfsOut{}
	out.Bsize = 512
	out.NameLen = 255
	return gofuse.OK
}

// fusermountDetach lazily unmounts through the setuid helper, for
// processes that may not call umount2 themselves.
func fusermountDetach(path string) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return fmt.Errorf("cannot unmount '%s': no fusermount3 or fusermount", path)
		}
	}
	out, err := exec.Command(bin, "-u", "-z", "-q", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot unmount '%s': %s", path, strings.TrimSpace(string(out)))
	}
	return nil
}
