package file

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// handle is one open file description and what was learned about it.
// A File swaps handles when a permission change or reopen needs other
// open flags; the locks live on the description, so they move with it.
type handle struct {
	fd       int
	flags    int   // access mode and O_DIRECT as opened
	align    int64 // request alignment: offsets and lengths
	memAlign int   // buffer address alignment
}

func (h *handle) writable() bool { return h.flags&unix.O_ACCMODE == unix.O_RDWR }
func (h *handle) direct() bool   { return h.flags&unix.O_DIRECT != 0 }

func (h *handle) close() error {
	if h.fd < 0 {
		return nil
	}
	err := unix.Close(h.fd)
	h.fd = -1
	return err
}

// openHandle opens name like qemu_open does and, with O_DIRECT, probes the
// alignment like raw_probe_alignment. O_CLOEXEC matters beyond hygiene: a
// child process inheriting the fd would keep the image locks alive.
func openHandle(name string, flags int) (*handle, error) {
	fd, err := openRetry(name, flags|unix.O_CLOEXEC)
	if err != nil {
		errno := asErrno(err)
		// qemu_open_internal: a clearer message when only O_DIRECT failed.
		if errno == unix.EINVAL && flags&unix.O_DIRECT != 0 {
			if fd2, err2 := openRetry(name, (flags&^unix.O_DIRECT)|unix.O_CLOEXEC); err2 == nil {
				unix.Close(fd2)
				return nil, errorf(errno, "Could not open '%s': filesystem does not support O_DIRECT", name)
			}
		}
		return nil, errnoErrorf(errno, "Could not open '%s'", name)
	}
	h := &handle{fd: fd, flags: flags, align: 1, memAlign: 1}
	if flags&unix.O_DIRECT != 0 && !dioByteAligned(fd) {
		if !h.probeAlignment() {
			unix.Close(fd)
			return nil, errorf(unix.EINVAL, "Could not find working O_DIRECT alignment")
		}
	}
	return h, nil
}

func openRetry(name string, flags int) (int, error) {
	for {
		fd, err := unix.Open(name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err != unix.EINTR {
			return err
		}
	}
}

const (
	maxBlockSize = 4096 // QEMU's MAX_BLOCKSIZE
	// XFS_IOC_DIOINFO, _IOR('X', 30, struct dioattr): x/sys/unix has no
	// XFS ioctls.
	ioctlXFSDIOINFO = 0x800c581e
)

// dioByteAligned: NFS takes O_DIRECT requests of any alignment, and
// probing it would wrongly find 1 and fall back to 4k.
func dioByteAligned(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.NFS_SUPER_MAGIC
}

// probeAlignment mirrors raw_probe_alignment: ask the kernel (block size
// ioctl, XFS dioinfo), else find the smallest read that O_DIRECT accepts.
// A read of 1 byte succeeding means probing failed (e.g. an empty file
// returns EOF before checking alignment), so the safe maximum is used.
func (h *handle) probeAlignment() bool {
	maxAlign := max(maxBlockSize, os.Getpagesize())
	alignments := []int{1, 512, 1024, 2048, 4096}

	if sz, err := unix.IoctlGetUint32(h.fd, unix.BLKSSZGET); err == nil && sz > 0 {
		h.align = int64(sz)
	}
	var dio struct{ mem, minIO, maxIO uint32 }
	if ioctl(h.fd, ioctlXFSDIOINFO, unsafe.Pointer(&dio)) == nil && dio.minIO > 0 {
		h.align = int64(dio.minIO)
	}
	if h.align <= 1 {
		h.align = 0
		buf := alignedBuf(maxAlign, maxAlign)
		for _, a := range alignments {
			if ioAligned(h.fd, buf[:a]) {
				h.align = int64(a)
				if a == 1 {
					h.align = int64(maxAlign)
				}
				break
			}
		}
	}
	h.memAlign = 0
	buf := alignedBuf(2*maxAlign, maxAlign)
	for _, a := range alignments {
		if ioAligned(h.fd, buf[a:a+maxAlign]) {
			h.memAlign = a
			if a == 1 {
				h.memAlign = int(h.align)
			}
			break
		}
	}
	return h.align > 0 && h.memAlign > 0
}

// ioAligned: Linux answers EINVAL for misaligned O_DIRECT reads; any other
// error is a real I/O problem that says nothing about alignment.
func ioAligned(fd int, buf []byte) bool {
	_, err := unix.Pread(fd, buf, 0)
	return err != unix.EINVAL
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// alignedBuf returns n bytes starting at a multiple of align. Go's heap
// does not move objects, so the address stays aligned.
func alignedBuf(n, align int) []byte {
	if align <= 1 {
		return make([]byte, n)
	}
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

func bufAligned(p []byte, align int) bool {
	return align <= 1 || len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))&uintptr(align-1) == 0
}
