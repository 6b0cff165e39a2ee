package file

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

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

// lockCalls counts the fcntl lock calls of this process (F_OFD_GETLK,
// F_OFD_SETLK and their POSIX fallbacks), so tests and benchmarks can
// check how many a graph change costs.
var lockCalls atomic.Uint64

// LockCalls returns how many fcntl lock calls the file driver has made in
// this process.
func LockCalls() uint64 { return lockCalls.Load() }

// fcntlLock is the one place the driver calls fcntl for locks.
func fcntlLock(fd int, cmd int, fl *unix.Flock_t) error {
	lockCalls.Add(1)
	return unix.FcntlFlock(uintptr(fd), cmd, fl)
}

var ofdProbe struct {
	once sync.Once
	ok   bool
}

// hasOFDLocks mirrors qemu_probe_lock_ops: try F_OFD_GETLK on /dev/null.
func hasOFDLocks() bool {
	ofdProbe.once.Do(func() {
		fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		ofdProbe.ok = fcntlLock(fd, unix.F_OFD_GETLK, &fl) == nil
	})
	return ofdProbe.ok
}

// pickLockCmds: OFD locks when available, else (locking=on) POSIX locks,
// which are per process and dropped when any fd of the file is closed.
func pickLockCmds() lockCmds {
	if hasOFDLocks() {
		return lockCmds{get: unix.F_OFD_GETLK, set: unix.F_OFD_SETLK}
	}
	return lockCmds{get: unix.F_GETLK, set: unix.F_SETLK}
}

func (lk lockCmds) setByte(fd int, off int64, typ int16) unix.Errno {
	fl := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	for {
		err := fcntlLock(fd, lk.set, &fl)
		if err == nil {
			return 0
		}
		if errno := asErrno(err); errno != unix.EINTR {
			return errno
		}
	}
}

// testByte mirrors qemu_lock_fd_test(fd, off, 1, true): EAGAIN when
// another description holds any lock on the byte.
func (lk lockCmds) testByte(fd int, off int64) unix.Errno {
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	for {
		err := fcntlLock(fd, lk.get, &fl)
		if err == nil {
			break
		}
		if errno := asErrno(err); errno != unix.EINTR {
			return errno
		}
	}
	if fl.Type != unix.F_UNLCK {
		return unix.EAGAIN
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
				if errno := lk.setByte(fd, off, unix.F_RDLCK); errno != 0 {
					return lockErrorf(errno, "Failed to lock byte %d", off)
				}
				if s.track != nil {
					*s.track |= bit
				}
			case unlock && s.have&bit != 0 && s.want&bit == 0:
				if errno := lk.setByte(fd, off, unix.F_UNLCK); errno != 0 {
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
