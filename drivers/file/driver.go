package file

import (
	"os"
	"syscall"

	"blockd/blockcore"
	"blockd/blockio"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "file", Protocol: true, Open: openNode})
}

// node adapts a File to the block graph.
type node struct {
	*File
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
	f, err := Open(opts)
	if err != nil {
		return nil, err
	}
	return &node{f}, nil
}

// SetPerm commits permissions the graph checked with CheckPerm; the lock
// steps cannot fail after a successful check.
func (n *node) SetPerm(perm, shared blockio.Perm) { _ = n.File.SetPerm(perm, shared) }

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
