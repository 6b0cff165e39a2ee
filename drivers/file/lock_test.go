package file

import (
	"syscall"
	"testing"

	"blockd/blockio"
)

const (
	cr     = blockio.PermConsistentRead
	wr     = blockio.PermWrite
	wu     = blockio.PermWriteUnchanged
	resize = blockio.PermResize
	all    = blockio.PermAll
)

func TestLockBytesPublished(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p})
	// A new node holds nothing: QEMU starts at perm 0, shared all.
	wantHeld(t, p, lockBytes{})
	if perm, shared := f.Perm(); perm != 0 || shared != all {
		t.Fatalf("initial perm %v shared %v", perm, shared)
	}
	if err := f.SetPerm(permQcow2Parent, sharedQcow2Parent); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr | wr | resize, unshared: wr | resize})
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr})
	// Bits outside the lockable set (graph-mod) take no bytes.
	if err := f.SetPerm(cr|blockio.PermGraphMod, all); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr})
	f.Close()
	wantHeld(t, p, lockBytes{})
}

// Two Files on one image conflict like two QEMU processes (OFD locks
// belong to the open file description, not the process).
func TestLockConflicts(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	a := mustOpen(t, Options{Filename: p})
	b := mustOpen(t, Options{Filename: p})
	if err := a.SetPerm(permQcow2Parent, sharedQcow2Parent); err != nil {
		t.Fatal(err)
	}
	aBytes := lockBytes{perm: cr | wr | resize, unshared: wr | resize}

	wantLocked(t, b.CheckPerm(cr|wr, all), `Failed to get "write" lock`)
	wantLocked(t, b.SetPerm(cr, cr|wu), `Failed to get shared "write" lock`)
	wantLocked(t, b.SetPerm(cr|resize, all), `Failed to get "resize" lock`)
	wantLocked(t, b.SetPerm(cr, all&^resize), `Failed to get shared "resize" lock`)
	// Failed attempts leave nothing behind.
	wantHeld(t, p, aBytes)
	if perm, shared := b.Perm(); perm != 0 || shared != all {
		t.Fatalf("failed SetPerm changed b's state to %v / %v", perm, shared)
	}
	// What a does share can be taken.
	if err := b.SetPerm(cr|wu, all&^wu); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr | wr | wu | resize, unshared: wr | wu | resize})
	// And now a cannot take write-unchanged, nor can b's unsharing be ignored.
	wantLocked(t, a.SetPerm(permQcow2Parent|wu, sharedQcow2Parent), `Failed to get "write unchanged" lock`)

	// Once a is gone its permissions are free.
	a.Close()
	c := mustOpen(t, Options{Filename: p})
	if err := c.SetPerm(wr|resize, all); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The remaining QEMU permission name.
	if err := b.SetPerm(0, all&^cr); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, Options{Filename: p})
	wantLocked(t, d.SetPerm(cr, all), `Failed to get "consistent read" lock`)
}

// CheckPerm holds the union of the old and new locks until SetPerm or
// AbortPerm, like QEMU's RAW_PL_PREPARE.
func TestCheckSetAbort(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p})
	if err := f.SetPerm(cr|wr, all); err != nil {
		t.Fatal(err)
	}
	if err := f.CheckPerm(cr, cr|wu); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr | wr, unshared: wr | resize})
	f.AbortPerm()
	wantHeld(t, p, lockBytes{perm: cr | wr})
	if perm, _ := f.Perm(); perm != cr|wr {
		t.Fatalf("abort changed perm to %v", perm)
	}

	if err := f.CheckPerm(cr, cr|wu); err != nil {
		t.Fatal(err)
	}
	if err := f.SetPerm(cr, cr|wu); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{perm: cr, unshared: wr | resize})

	// A failed CheckPerm rolls back by itself.
	g := mustOpen(t, Options{Filename: p})
	if err := g.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	wantLocked(t, g.CheckPerm(cr|wr|resize, all&^cr), `Failed to get "write" lock`)
	wantHeld(t, p, lockBytes{perm: cr, unshared: wr | resize})
}

func TestLockingOff(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	a := mustOpen(t, Options{Filename: p, Locking: LockOff})
	if err := a.SetPerm(permQcow2Parent, 0); err != nil {
		t.Fatal(err)
	}
	wantHeld(t, p, lockBytes{})
	b := mustOpen(t, Options{Filename: p, Locking: LockOn})
	if err := b.SetPerm(permQcow2Parent, sharedQcow2Parent); err != nil {
		t.Fatal(err)
	}
	// a does not look at locks either.
	if err := a.SetPerm(permQcow2Parent|wu, 0); err != nil {
		t.Fatal(err)
	}
	c := mustOpen(t, Options{Filename: p, Locking: LockAuto})
	wantLocked(t, c.SetPerm(cr|wr, all), `Failed to get "write" lock`)
}

// Someone holding a write lock on a byte (QEMU never does; other tools
// might) makes taking our read lock fail: raw_apply_lock_bytes' text.
func TestLockByteHeldExclusively(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	lk := pickLockCmds()
	if errno := lk.setByte(fd, lockSharedBase+1, syscall.F_WRLCK); errno != 0 {
		t.Fatal(errno)
	}
	f := mustOpen(t, Options{Filename: p})
	wantLocked(t, f.SetPerm(cr, all&^wr), "Failed to lock byte 201")
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
}

// lockCallsOf counts the fcntl lock calls fn makes (file tests do not run
// in parallel, so the process-wide counter is theirs).
func lockCallsOf(fn func()) uint64 {
	before := LockCalls()
	fn()
	return LockCalls() - before
}

// A CheckPerm that replaces an unfinished one touches only the bytes whose
// state changes, and one that repeats it exactly makes no call at all
// (QEMU's raw_handle_perm_lock with its record of the locked bytes).
func TestRecheckTouchesOnlyChangedBytes(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p})
	if !f.useLock {
		t.Skip("SKIPPED: no OFD locks on this host")
	}
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		do    func() error
		calls uint64
		held  lockBytes
	}{
		// lock 101, test 200 and 201
		{"take write", func() error { return f.CheckPerm(cr|wr, all) }, 3, lockBytes{perm: cr | wr}},
		{"same again", func() error { return f.CheckPerm(cr|wr, all) }, 0, lockBytes{perm: cr | wr}},
		// unlock 101, lock 103, test 200 and 203
		{"resize instead", func() error { return f.CheckPerm(cr|resize, all) }, 4, lockBytes{perm: cr | resize}},
		{"commit it", func() error { return f.SetPerm(cr|resize, all) }, 0, lockBytes{perm: cr | resize}},
		// only unlocking ahead: nothing checked until the commit
		{"drop resize", func() error { return f.CheckPerm(cr, all) }, 0, lockBytes{perm: cr | resize}},
		// lock 201 (the check replaces the pending drop), test 200 and 101
		{"unshare write", func() error { return f.CheckPerm(cr, all&^wr) }, 3, lockBytes{perm: cr | resize, unshared: wr}},
		// unlock 103
		{"commit", func() error { return f.SetPerm(cr, all&^wr) }, 1, lockBytes{perm: cr, unshared: wr}},
	}
	for _, s := range steps {
		var err error
		if n := lockCallsOf(func() { err = s.do() }); n != s.calls {
			t.Errorf("%s: %d lock calls, want %d", s.name, n, s.calls)
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wantHeld(t, p, s.held)
	}
	// Abort returns to the committed state touching only what differs.
	if err := f.CheckPerm(cr|wr, all&^wr); err != nil {
		t.Fatal(err)
	}
	if n := lockCallsOf(f.AbortPerm); n != 1 {
		t.Errorf("abort: %d lock calls, want 1 (unlock 101)", n)
	}
	wantHeld(t, p, lockBytes{perm: cr, unshared: wr})
}
