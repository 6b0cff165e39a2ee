package file

import (
	"os"

	"blockd/blockio"
)

// Permission changes are two-phase, like QEMU's .bdrv_check_perm /
// .bdrv_set_perm / .bdrv_abort_perm_update: CheckPerm prepares (locks
// everything old and new state need, checks the other users' locks, opens
// a new fd if the access mode must change), then SetPerm commits or
// AbortPerm rolls back. Between the two the file holds the union of the
// old and new locks, so neither state can be taken away by someone else.

// pending is what CheckPerm prepared.
type pending struct {
	perm, shared blockio.Perm
	h            *handle // new fd when the open flags change, else nil
	cfg          *config // new options, for a reopen
}

// CheckPerm prepares taking perm while sharing only shared. It fails with
// QEMU's lock error (`Failed to get "write" lock`, `Failed to get shared
// "write" lock`, matching ErrLocked) when another user's locks conflict,
// or with an open error when auto-read-only needs a read-write fd that
// cannot be had. On failure nothing changes. A second CheckPerm replaces
// an unfinished one.
func (f *File) CheckPerm(perm, shared blockio.Perm) error {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	return f.checkPermLocked(perm, shared, nil)
}

// SetPerm commits perm/shared: the lock bytes then publish exactly them.
// Without a matching CheckPerm before it, it runs the check itself and
// can fail like CheckPerm.
func (f *File) SetPerm(perm, shared blockio.Perm) error {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	p := f.pend
	if p == nil || p.perm != perm || p.shared != shared || p.cfg != nil {
		if err := f.checkPermLocked(perm, shared, nil); err != nil {
			return err
		}
	}
	f.commitLocked()
	return nil
}

// AbortPerm drops what CheckPerm prepared and returns the locks to the
// state of the last SetPerm.
func (f *File) AbortPerm() {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	f.abortLocked()
}

func (f *File) checkPermLocked(perm, shared blockio.Perm, target *config) error {
	if f.h == nil {
		return os.ErrClosed
	}
	cfg := f.cfg
	if target != nil {
		cfg = *target
	}
	if p := f.pend; p != nil {
		switch {
		case p.h != nil || p.cfg != nil || target != nil:
			f.abortLocked()
		case p.perm == perm && p.shared == shared && openFlags(cfg, perm) == f.h.flags:
			// Prepared and checked exactly this already: the bytes are
			// held, so nobody can have taken a conflicting one since.
			return nil
		default:
			// A lock-only change replaced by another: prepareLocks moves
			// the held bytes straight to the new union, so bytes both
			// need are not unlocked and locked again.
			f.pend = nil
		}
	}

	// raw_reconfigure_getfd: a new fd if the access mode or O_DIRECT
	// changes (auto-read-only gaining or losing writers, or a reopen).
	var nh *handle
	if flags := openFlags(cfg, perm); flags != f.h.flags {
		var err error
		if nh, err = openHandle(f.filename, flags); err != nil {
			return err
		}
	}

	if err := f.prepareLocks(perm, shared); err != nil {
		if nh != nil {
			nh.close()
		}
		return err
	}
	// Copy the new state's locks to the new fd; the old one keeps its
	// locks until commit.
	if nh != nil && f.useLock {
		if err := f.lk.applyLockBytes(nh.fd, wantBytes(perm, shared), false, nil); err != nil {
			f.rollbackLocks()
			nh.close()
			return err
		}
	}
	f.pend = &pending{perm: perm, shared: shared, h: nh, cfg: target}
	return nil
}

// prepareLocks mirrors raw_handle_perm_lock(RAW_PL_PREPARE).
func (f *File) prepareLocks(perm, shared blockio.Perm) error {
	if !f.useLock {
		return nil
	}
	cur := wantBytes(f.perm, f.shared)
	next := wantBytes(perm, shared)
	union := lockBytes{cur.perm | next.perm, cur.unshared | next.unshared}
	if union == cur {
		// Only unlocking ahead: nothing to check, and it cannot conflict.
		// Bytes a replaced CheckPerm took beyond cur are released.
		f.rollbackLocks()
		return nil
	}
	// Only the bytes whose state differs from what the fd holds are
	// touched (held tracks them): none for those already locked, and
	// those a replaced CheckPerm took beyond union are released.
	err := f.lk.applyLockBytes(f.h.fd, union, true, &f.held)
	if err == nil {
		err = f.lk.checkLockBytes(f.h.fd, perm, shared)
	}
	if err != nil {
		f.rollbackLocks()
	}
	return err
}

// rollbackLocks mirrors RAW_PL_ABORT: back to the last set state.
func (f *File) rollbackLocks() {
	if !f.useLock || f.h == nil {
		return
	}
	if err := f.lk.applyLockBytes(f.h.fd, wantBytes(f.perm, f.shared), true, &f.held); err != nil {
		// Only unlocking, which should not fail; QEMU warns.
		f.warn("%s", err.Error())
	}
}

func (f *File) abortLocked() {
	if p := f.pend; p != nil && p.h != nil {
		p.h.close()
	}
	f.pend = nil
	f.rollbackLocks()
}

// commitLocked mirrors raw_set_perm (and raw_reopen_commit for the
// options): switch to the new fd, closing the old one and with it the
// old locks, or release the locks the new state does not need.
func (f *File) commitLocked() {
	p := f.pend
	f.pend = nil
	if p == nil {
		return
	}
	if p.h != nil || p.cfg != nil {
		f.mu.Lock() // waits for in-flight I/O on the old fd
		old := f.h
		if p.h != nil {
			f.h = p.h
		}
		if p.cfg != nil {
			f.cfg = *p.cfg
		}
		f.mu.Unlock()
		if p.h != nil {
			old.close()
			f.held = lockBytes{}
			if f.useLock {
				f.held = wantBytes(p.perm, p.shared)
			}
		}
	}
	f.perm, f.shared = p.perm, p.shared
	if f.useLock && p.h == nil {
		if err := f.lk.applyLockBytes(f.h.fd, wantBytes(p.perm, p.shared), true, &f.held); err != nil {
			f.warn("%s", err.Error())
		}
	}
}
