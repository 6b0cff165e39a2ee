package file

import (
	"os"
	"syscall"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "file", Protocol: true, Open: openNode,
		Create: func(filename string, size int64, _, _ string) error {
			return Create(CreateOptions{Filename: filename, Size: size})
		}})
}

// node adapts a File to the block graph.
type node struct {
	*File
	opts   Options
	reopen *Reopen // prepared by CheckPermReopen, finished by SetPerm/AbortPerm
	// reopenOld are the options before the prepared reopen.
	reopenOld Options
}

var _ blockcore.ReopenPermHandler = (*node)(nil)

// prManagers is the part of the object store the pr-manager option uses.
type prManagers interface {
	PRManager(id string) error
}

func openNode(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.File
	opts := Options{
		Filename:     o.Filename,
		ReadOnly:     oc.ReadOnly,
		AutoReadOnly: oc.AutoReadOnly,
		DiscardUnmap: oc.DiscardUnmap,
	}
	if o.Locking != nil {
		opts.Locking = LockMode(*o.Locking)
	}
	if c := oc.Options.Cache; c != nil {
		opts.Direct = c.Direct != nil && *c.Direct
		opts.NoFlush = c.NoFlush != nil && *c.NoFlush
	}
	// raw_open_common's order: the reservation manager is looked up
	// before the file is opened. Only SCSI passthrough of a host_device
	// node uses it, so a file node just checks that it exists (and, as
	// in QEMU, does not keep object-del from removing it).
	if o.PrManager != nil {
		pr, _ := oc.Graph.Objects().(prManagers)
		if pr == nil {
			return nil, schema.Errorf("No persistent reservation manager with id '%s'", *o.PrManager)
		}
		if err := pr.PRManager(*o.PrManager); err != nil {
			return nil, err
		}
	}
	f, err := Open(opts)
	if err != nil {
		return nil, err
	}
	// Linux AIO needs O_DIRECT; checked once the file is open, as QEMU.
	if o.Aio != nil && *o.Aio == "native" && !opts.Direct {
		_ = f.Close()
		return nil, schema.Errorf("aio=native was specified, but it requires cache.direct=on, which was not specified.")
	}
	return &node{File: f, opts: opts}, nil
}

// CheckPermReopen prepares reopening the file with the reopen's options
// (read-only, auto-read-only, cache modes, discard) together with its new
// permissions, as raw_check_perm does with a reopen state.
func (n *node) CheckPermReopen(rs *blockcore.ReopenState, perm, shared blockio.Perm) error {
	o := n.opts
	o.ReadOnly, o.AutoReadOnly = rs.ReadOnly, rs.AutoReadOnly
	o.Direct, o.NoFlush, o.DiscardUnmap = rs.CacheDirect, rs.CacheNoFlush, rs.DiscardUnmap
	r, err := n.ReopenPrepare(ReopenOptions{
		ReadOnly: o.ReadOnly, AutoReadOnly: o.AutoReadOnly, Direct: o.Direct,
		NoFlush: o.NoFlush, DiscardUnmap: o.DiscardUnmap, Perm: perm, Shared: shared,
	})
	if err != nil {
		return err
	}
	n.reopen, n.reopenOld = r, n.opts
	n.opts = o
	return nil
}

// AbortPerm rolls back a prepared reopen or permission change.
func (n *node) AbortPerm() {
	if n.reopen != nil {
		n.reopen.Abort()
		n.reopen = nil
		n.opts = n.reopenOld
		return
	}
	n.File.AbortPerm()
}

// SetPerm commits permissions the graph checked with CheckPerm (or a
// reopen prepared with them); the lock steps cannot fail after a
// successful check.
func (n *node) SetPerm(perm, shared blockio.Perm) {
	if n.reopen != nil {
		n.reopen.Commit()
		n.reopen = nil
		return
	}
	_ = n.File.SetPerm(perm, shared)
}

// ExactFilename is the file's name as given.
func (n *node) ExactFilename() string { return n.Filename() }

// AllocatedSize is the space the file takes on the host.
func (n *node) AllocatedSize() (int64, bool) {
	st, err := os.Stat(n.Filename())
	if err != nil {
		return 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return sys.Blocks * 512, true
}

// DirtyFlag: the file driver answers bdrv_get_info and is never dirty.
func (n *node) DirtyFlag() bool { return false }
