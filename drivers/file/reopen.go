package file

import "blockd/blockio"

// ReopenOptions are the new values of everything blockdev-reopen may
// change on a file node, given in full (like blockdev-reopen's options,
// a field left false means false), and the permissions the node's users
// will hold afterwards. Filename, locking and the other options QEMU
// refuses to change are not here.
type ReopenOptions struct {
	ReadOnly     bool
	AutoReadOnly bool
	Direct       bool
	NoFlush      bool
	DiscardUnmap bool
	Perm, Shared blockio.Perm
}

// Reopen is a prepared reopen; exactly one of Commit and Abort finishes it.
type Reopen struct {
	f    *File
	p    *pending
	opts ReopenOptions
	done bool
}

// ReopenPrepare is the prepare phase of blockdev-reopen (QEMU runs it in
// raw_check_perm with the reopen state): when the open flags change it
// opens a new fd with them, prepares the locks for the new permissions on
// the current fd (checking the other users' locks) and copies them to the
// new fd. The old fd stays in use until Commit. On error nothing changed;
// errors are QEMU's open and lock errors.
//
// Until Commit or Abort, no other permission call may be made on the File
// (the graph runs them inside one transaction); one would cancel the
// reopen, and Commit would then redo the check and apply what it can.
func (f *File) ReopenPrepare(o ReopenOptions) (*Reopen, error) {
	f.permMu.Lock()
	defer f.permMu.Unlock()
	cfg := o.config()
	if err := f.checkPermLocked(o.Perm, o.Shared, &cfg); err != nil {
		return nil, err
	}
	return &Reopen{f: f, p: f.pend, opts: o}, nil
}

// Commit switches to the new fd and options and closes the old fd.
func (r *Reopen) Commit() {
	if r == nil || r.done {
		return
	}
	r.done = true
	f := r.f
	f.permMu.Lock()
	defer f.permMu.Unlock()
	if f.pend != r.p {
		// Cancelled by another permission call: prepare again. Commit
		// cannot fail, so a failure leaves the file as it is, like a
		// failed unlock in QEMU's commit is only warned about.
		cfg := r.opts.config()
		if err := f.checkPermLocked(r.opts.Perm, r.opts.Shared, &cfg); err != nil {
			f.warn("%s", err.Error())
			return
		}
	}
	f.commitLocked()
}

// Abort closes the new fd and returns the locks to their state before
// ReopenPrepare.
func (r *Reopen) Abort() {
	if r == nil || r.done {
		return
	}
	r.done = true
	f := r.f
	f.permMu.Lock()
	defer f.permMu.Unlock()
	if f.pend == r.p {
		f.abortLocked()
	}
}

func (o ReopenOptions) config() config {
	return config{
		readOnly:     o.ReadOnly,
		autoReadOnly: o.AutoReadOnly,
		direct:       o.Direct,
		noFlush:      o.NoFlush,
		discardUnmap: o.DiscardUnmap,
	}
}
