package file

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"blockd/blockio"
)

func accMode(t *testing.T, f *File) int { return fileFlags(t, f) & syscall.O_ACCMODE }

func currentFD(f *File) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.h.fd
}

func TestReopenReadOnlyToReadWrite(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p, ReadOnly: true})
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	oldFD := currentFD(f)
	r, err := f.ReopenPrepare(ReopenOptions{Perm: cr | wr, Shared: cr | wu})
	if err != nil {
		t.Fatal(err)
	}
	// Prepared: old fd still in use and read-only; both states locked.
	if currentFD(f) != oldFD || accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("prepare switched the fd")
	}
	if err := f.WriteAt([]byte{1}, 0, 0); !errors.Is(err, blockio.ErrReadOnly) {
		t.Fatalf("write while prepared: %v", err)
	}
	wantHeld(t, p, lockBytes{perm: cr | wr, unshared: wr | resize})

	r.Commit()
	r.Commit() // harmless
	if accMode(t, f) != syscall.O_RDWR {
		t.Fatal("commit left the fd read-only")
	}
	if err := f.WriteAt([]byte{1, 2, 3}, 0, 0); err != nil {
		t.Fatal(err)
	}
	wantData(t, f, 0, []byte{1, 2, 3})
	wantHeld(t, p, lockBytes{perm: cr | wr, unshared: wr | resize})
	if perm, shared := f.Perm(); perm != cr|wr || shared != cr|wu {
		t.Fatalf("perm after commit %v / %v", perm, shared)
	}

	// And back to read-only.
	r, err = f.ReopenPrepare(ReopenOptions{ReadOnly: true, Perm: cr, Shared: all})
	if err != nil {
		t.Fatal(err)
	}
	r.Commit()
	if accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("not read-only after reopen")
	}
	if err := f.WriteAt([]byte{1}, 0, 0); !errors.Is(err, blockio.ErrReadOnly) {
		t.Fatalf("write after reopen read-only: %v", err)
	}
	wantHeld(t, p, lockBytes{perm: cr})
}

func TestReopenAbort(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p, ReadOnly: true})
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	oldFD := currentFD(f)
	r, err := f.ReopenPrepare(ReopenOptions{Perm: permQcow2Parent, Shared: sharedQcow2Parent})
	if err != nil {
		t.Fatal(err)
	}
	r.Abort()
	r.Commit() // after Abort: nothing
	if currentFD(f) != oldFD || accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("abort changed the fd")
	}
	wantHeld(t, p, lockBytes{perm: cr})
	if err := f.WriteAt([]byte{1}, 0, 0); !errors.Is(err, blockio.ErrReadOnly) {
		t.Fatalf("write after abort: %v", err)
	}
}

func TestReopenConflict(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	other := mustOpen(t, Options{Filename: p})
	if err := other.SetPerm(cr, cr|wu); err != nil { // a reader that unshares write
		t.Fatal(err)
	}
	f := mustOpen(t, Options{Filename: p, ReadOnly: true})
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	before := heldBytes(t, p)
	_, err := f.ReopenPrepare(ReopenOptions{Perm: cr | wr, Shared: all})
	wantLocked(t, err, `Failed to get "write" lock`)
	wantHeld(t, p, before)
	if accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("failed reopen changed the fd")
	}
}

// Changing cache.direct reopens with O_DIRECT; data stays coherent.
func TestReopenDirect(t *testing.T) {
	p := newImage(t, directDir(t), 0)
	f := mustOpen(t, Options{Filename: p})
	data := bytes.Repeat([]byte("blockd"), 5000)
	if err := f.WriteAt(data, 3, 0); err != nil {
		t.Fatal(err)
	}
	r, err := f.ReopenPrepare(ReopenOptions{Direct: true, Perm: cr | wr, Shared: all})
	if err != nil {
		t.Fatal(err)
	}
	r.Commit()
	if fileFlags(t, f)&syscall.O_DIRECT == 0 || f.RequestAlignment() < 512 {
		t.Fatalf("not direct after reopen: alignment %d", f.RequestAlignment())
	}
	wantData(t, f, 3, data)
	if err := f.WriteAt([]byte("xyz"), 0, 0); err != nil {
		t.Fatal(err)
	}
	wantData(t, f, 0, append([]byte("xyz"), data...))
}

// auto-read-only: read-only until a writer comes, and back after.
func TestAutoReadOnly(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p, AutoReadOnly: true})
	if accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("auto-read-only did not open read-only")
	}
	if err := f.SetPerm(cr|wr, all); err != nil {
		t.Fatal(err)
	}
	if accMode(t, f) != syscall.O_RDWR {
		t.Fatal("writer did not get a read-write fd")
	}
	wantHeld(t, p, lockBytes{perm: cr | wr})
	if err := f.WriteAt([]byte{9}, 0, 0); err != nil {
		t.Fatal(err)
	}
	// Check then abort keeps the read-write fd.
	if err := f.CheckPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	f.AbortPerm()
	if accMode(t, f) != syscall.O_RDWR {
		t.Fatal("abort dropped the read-write fd")
	}
	if err := f.SetPerm(cr, all); err != nil {
		t.Fatal(err)
	}
	if accMode(t, f) != syscall.O_RDONLY {
		t.Fatal("fd stayed read-write without writers")
	}
	wantHeld(t, p, lockBytes{perm: cr})
	wantData(t, f, 0, []byte{9})
}
