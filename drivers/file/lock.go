package file

import (
	"sync"
	"syscall"

	"blockd/blockio"
)

// Image locking, compatible with QEMU (block/file-posix.c): permissions
// are published as shared (read) locks on single bytes of the image file.
// A holder of permission bit i locks byte 100+i; a user that does NOT
// share bit i locks byte 200+i. Taking permission i conflicts with anyone
// holding 200+i; refusing to share i conflicts with anyone holding 100+i.
// Conflicts are found with F_OFD_GETLK for a write lock, which ignores
// our own open file description. Open file description (OFD) locks
// belong to the fd rather than the process, so two Files in one process
// conflict exactly like two QEMU processes do.

const (
	lockPermBase   = 100 // RAW_LOCK_PERM_BASE
	lockSharedBase = 200 // RAW_LOCK_SHARED_BASE

	// OFD lock commands (linux/amd64); package syscall does not define them.
	fOFDGetlk = 36
	fOFDSetlk = 37
)

// QEMU's bdrv_perm_names, used in lock error messages.
var lockPermNames = [...]string{"consistent read", "write", "write unchanged", "resize"}

// lockBytes is a set of locked bytes: perm bits at 100+i, unshared bits
// at 200+i. Only the bits of blockio.PermLockable take part.
type lockBytes struct {
	perm     blockio.Perm
	unshared blockio.Perm
}

type lockCmds struct{ get, set int }

var ofdProbe struct {
	once sync.Once
	ok   bool
}

// hasOFDLocks mirrors qemu_probe_lock_ops: try F_OFD_GETLK on /dev/null.
func hasOFDLocks() bool {
	ofdProbe.once.Do(func() {
		fd, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		defer syscall.Close(fd)
		fl := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
		ofdProbe.ok = syscall.FcntlFlock(uintptr(fd), fOFDGetlk, &fl) == nil
	})
	return ofdProbe.ok
}

// pickLockCmds: OFD locks when available, else (locking=on) POSIX locks,
// which are per process and dropped when any fd of the file is closed.
func pickLockCmds() lockCmds {
	if hasOFDLocks() {
		return lockCmds{get: fOFDGetlk, set: fOFDSetlk}
	}
	return lockCmds{get: syscall.F_GETLK, set: syscall.F_SETLK}
}

func (lk lockCmds) setByte(fd int, off int64, typ int16) syscall.Errno {
	fl := syscall.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	for {
		err := syscall.FcntlFlock(uintptr(fd), lk.set, &fl)
		if err == nil {
			return 0
		}
		if errno := asErrno(err); errno != syscall.EINTR {
			return errno
		}
	}
}

// testByte mirrors qemu_lock_fd_test(fd, off, 1, true): EAGAIN when
// another description holds any lock on the byte.
func (lk lockCmds) testByte(fd int, off int64) syscall.Errno {
	fl := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: off, Len: 1}
	for {
		err := syscall.FcntlFlock(uintptr(fd), lk.get, &fl)
		if err == nil {
			break
		}
		if errno := asErrno(err); errno != syscall.EINTR {
			return errno
		}
	}
	if fl.Type != syscall.F_UNLCK {
		return syscall.EAGAIN
	}
	return 0
}

// applyLockBytes mirrors raw_apply_lock_bytes: lock the bytes in want
// that are not locked yet and, with unlock, release those held but no
// longer wanted. held tracks the fd's state; nil means the state is
// unknown (a fresh fd: assume nothing is locked, or everything when
// unlocking, as QEMU does).
func (lk lockCmds) applyLockBytes(fd int, want lockBytes, unlock bool, held *lockBytes) error {
	var cur lockBytes
	switch {
	case held != nil:
		cur = *held
	case unlock:
		cur = lockBytes{blockio.PermLockable, blockio.PermLockable}
	}
	steps := []struct {
		base       int64
		want, have blockio.Perm
		track      *blockio.Perm
	}{
		{lockPermBase, want.perm, cur.perm, nil},
		{lockSharedBase, want.unshared, cur.unshared, nil},
	}
	if held != nil {
		steps[0].track, steps[1].track = &held.perm, &held.unshared
	}
	for _, s := range steps {
		for i := range len(lockPermNames) {
			bit := blockio.Perm(1) << i
			off := s.base + int64(i)
			switch {
			case s.want&bit != 0 && s.have&bit == 0:
				if errno := lk.setByte(fd, off, syscall.F_RDLCK); errno != 0 {
					return lockErrorf(errno, "Failed to lock byte %d", off)
				}
				if s.track != nil {
					*s.track |= bit
				}
			case unlock && s.have&bit != 0 && s.want&bit == 0:
				if errno := lk.setByte(fd, off, syscall.F_UNLCK); errno != 0 {
					return errnoErrorf(errno, "Failed to unlock byte %d", off)
				}
				if s.track != nil {
					*s.track &^= bit
				}
			}
		}
	}
	return nil
}

// checkLockBytes mirrors raw_check_lock_bytes: can we take perm and
// refuse to share what shared leaves out, given the others' locks?
func (lk lockCmds) checkLockBytes(fd int, perm, shared blockio.Perm) error {
	for i, name := range lockPermNames {
		if perm&(1<<i) == 0 {
			continue
		}
		if errno := lk.testByte(fd, lockSharedBase+int64(i)); errno != 0 {
			return lockErrorf(errno, "Failed to get \"%s\" lock", name)
		}
	}
	for i, name := range lockPermNames {
		if shared&(1<<i) != 0 {
			continue
		}
		if errno := lk.testByte(fd, lockPermBase+int64(i)); errno != 0 {
			return lockErrorf(errno, "Failed to get shared \"%s\" lock", name)
		}
	}
	return nil
}

// wantBytes is the lock set that publishes (perm, shared).
func wantBytes(perm, shared blockio.Perm) lockBytes {
	return lockBytes{
		perm:     perm & blockio.PermLockable,
		unshared: ^shared & blockio.PermLockable,
	}
}
