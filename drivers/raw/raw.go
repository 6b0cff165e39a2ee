// Package raw owns the raw format driver: its file child's bytes as they
// are, optionally a window [offset, offset+size) of them. Without a window
// it is a filter and passes permissions straight through.
package raw

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "raw", Filter: true, Open: open, Create: createImage})
}

// createImage makes a raw image: a file of the given size, sparse.
func createImage(filename string, size int64, _, _ string) error {
	return file.Create(file.CreateOptions{Filename: filename, Size: size})
}

// node is one open raw node. Offset and size change only in a reopen
// commit, while the node is drained.
type node struct {
	file      blockio.Device
	offset    int64
	hasOffset bool  // offset was given, even as 0: it is a strong option
	size      int64 // -1: follows the file
	hasSize   bool
}

const sectorSize = 512

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Raw
	n := &node{file: oc.File.Node.IO(), size: -1}
	if o.Offset != nil {
		n.offset, n.hasOffset = *o.Offset, true
	}
	if o.Size != nil {
		n.size, n.hasSize = *o.Size, true
	}
	if err := checkWindow(n.file, n.offset, n.hasSize, n.size); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *node) Size() (int64, error) {
	if n.hasSize {
		return n.size, nil
	}
	l, err := n.file.Size()
	if err != nil {
		return 0, err
	}
	return l - n.offset, nil
}

// check validates a request against the window.
func (n *node) check(off, length int64) error {
	if !n.hasSize && n.offset == 0 {
		return nil // the file checks its own bounds
	}
	size, err := n.Size()
	if err != nil {
		return err
	}
	return blockio.CheckRange(off, length, size)
}

func (n *node) ReadAt(p []byte, off int64) error {
	if err := n.check(off, int64(len(p))); err != nil {
		return err
	}
	return n.file.ReadAt(p, off+n.offset)
}

// StartWriteback: a raw node's writes are its file's.
func (n *node) StartWriteback() error { return blockio.StartWriteback(n.file) }

// SendRange: a raw node's bytes are its file's, shifted by the window.
func (n *node) SendRange(off, length int64, sink func(blockio.FileRange) error) error {
	if err := n.check(off, length); err != nil {
		return err
	}
	return blockio.SendRange(n.file, off+n.offset, length, sink)
}

func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	if err := n.check(off, int64(len(p))); err != nil {
		return err
	}
	return n.file.WriteAt(p, off+n.offset, f)
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	if err := n.check(off, length); err != nil {
		return err
	}
	return n.file.WriteZeroes(off+n.offset, length, f)
}

func (n *node) Discard(off, length int64) error {
	if err := n.check(off, length); err != nil {
		return err
	}
	return n.file.Discard(off+n.offset, length)
}

func (n *node) Flush() error { return n.file.Flush() }

func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	if err := n.check(off, length); err != nil {
		return blockio.Status{}, err
	}
	st, err := n.file.BlockStatus(off+n.offset, length)
	if err != nil {
		return st, err
	}
	// raw_co_block_status: the data is where the file says, shifted.
	st.Flags |= blockio.StatusOffsetValid | blockio.StatusAllocated
	st.HostOffset = off + n.offset
	return st, nil
}

func (n *node) Truncate(size int64) error {
	if n.hasSize {
		return schema.Errorf("Cannot resize fixed-size raw disks")
	}
	return n.file.Truncate(size + n.offset)
}

func (n *node) Close() error { return nil }

// StrongOptions: a window changes what the node presents. As QEMU's
// append_strong_runtime_options, an option counts when it was given, even
// with its default value ("offset": 0).
func (n *node) StrongOptions() map[string]any {
	m := map[string]any{}
	if n.hasOffset {
		m["offset"] = n.offset
	}
	if n.hasSize {
		m["size"] = n.size
	}
	return m
}

// ForwardsInfo: raw's bdrv_get_info asks its file child, so queries show
// a dirty flag exactly when the child has one (a file does, null-co not).
func (n *node) ForwardsInfo() {}

// ChildPerm is raw_child_perm: the defaults, but write and resize only
// when the parents need them.
func (n *node) ChildPerm(c *blockcore.Child, st blockcore.NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	np, ns := blockcore.DefaultPerms(c.Role, st, perm, shared)
	np &^= blockio.PermWrite | blockio.PermResize
	np |= perm & (blockio.PermWrite | blockio.PermResize)
	return np, ns
}
