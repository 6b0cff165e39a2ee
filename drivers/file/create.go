package file

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// CreateOptions are blockdev-create's options for the file driver.
type CreateOptions struct {
	Filename      string
	Size          int64
	Preallocation string // off (default), falloc or full
	NoCOW         bool
}

// Create makes (or empties) a file of the given size, as QEMU's
// raw_co_create: create, set no-COW if asked, hold the creation locks
// (write and resize, sharing all but resize) while truncating to 0 and
// then to the size with the preallocation asked for.
func Create(o CreateOptions) error {
	f, err := CreateOpen(o)
	if err != nil {
		return err
	}
	return f.Close()
}

// CreateOpen is Create, returning the file still open with the creation
// locks held, for a format to be written onto it.
func CreateOpen(o CreateOptions) (*File, error) {
	switch o.Preallocation {
	case "", "off", "falloc", "full":
	default:
		return nil, errorf(syscall.EINVAL, "Unsupported preallocation mode: %s", o.Preallocation)
	}
	fd, err := syscall.Open(o.Filename, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, errnoErrorf(asErrno(err), "Could not create '%s'", o.Filename)
	}
	defer syscall.Close(fd)
	if o.NoCOW {
		// Best effort, as in QEMU: file systems without COW refuse it.
		if flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
			_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsNoCOW))
		}
	}
	f, err := Open(Options{Filename: o.Filename})
	if err != nil {
		return nil, err
	}
	err = f.prepareCreate(fd, o)
	f.changed() // written through fd: the next flush must sync
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) prepareCreate(fd int, o CreateOptions) error {
	perm, shared := blockio.PermWrite|blockio.PermResize, blockio.PermAll&^blockio.PermResize
	if err := f.CheckPerm(perm, shared); err != nil {
		return err
	}
	if err := f.SetPerm(perm, shared); err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	switch o.Preallocation {
	case "falloc":
		if o.Size > 0 {
			if err := unix.Fallocate(fd, 0, 0, o.Size); err != nil {
				return errnoErrorf(asErrno(err), "Could not preallocate data for the new file")
			}
		}
		return nil
	case "full":
		return writeZeroesTo(fd, o.Size)
	}
	return f.Truncate(o.Size)
}

// writeZeroesTo fills a file with size zero bytes (preallocation=full).
func writeZeroesTo(fd int, size int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		m, err := syscall.Pwrite(fd, buf[:n], off)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return errnoErrorf(asErrno(err), "Could not write zeros for preallocation")
		}
		off += int64(m)
	}
	if err := syscall.Fsync(fd); err != nil {
		return errnoErrorf(asErrno(err), "Could not flush file to disk")
	}
	return nil
}

// fsNoCOW is FS_NOCOW_FL (linux/fs.h).
const fsNoCOW = 0x00800000
