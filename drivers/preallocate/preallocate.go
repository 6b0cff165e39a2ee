// Package preallocate owns the preallocate filter: while its parents may
// write and resize (a writable format node above it), a write past the
// end of the file first extends the file with zeroes up to prealloc-size
// beyond the write, rounded up to prealloc-align, so that a growing image
// allocates in large steps. The node's size stays the end of the data
// written; the file is cut back to it when the node closes or its
// parents stop writing. Zero writes inside the preallocated tail are
// skipped: it already reads as zeroes.
package preallocate

import (
	"sync"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "preallocate", Filter: true, IsFilter: true, Open: open})
}

const mib = 1 << 20

type node struct {
	blockio.Forward // reads, discards, flushes, block status
	align, extra    int64

	mu sync.Mutex
	// active: the parents hold write and resize, so the node may change
	// the file's size (has_prealloc_perms).
	active bool
	// dataEnd, zeroStart and fileEnd are the end of the data, where the
	// zeroes written by the node begin, and the file's length; -1 while
	// unknown.
	dataEnd, zeroStart, fileEnd int64
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Prealloc
	n := &node{Forward: blockio.Forward{Child: oc.File.Node.IO()}, align: mib, extra: 128 * mib, dataEnd: -1, zeroStart: -1, fileEnd: -1}
	if o.PreallocSize != nil {
		if *o.PreallocSize < 0 {
			return nil, schema.Errorf("Parameter 'prealloc-size' expects a non-negative number below 2^64")
		}
		n.extra = *o.PreallocSize
	}
	if o.PreallocAlign != nil {
		if *o.PreallocAlign < 0 {
			return nil, schema.Errorf("Parameter 'prealloc-align' expects a non-negative number below 2^64")
		}
		n.align = *o.PreallocAlign
	}
	if n.align%512 != 0 {
		return nil, schema.Errorf("prealloc-align parameter of preallocate filter is not aligned to 512")
	}
	return n, nil
}

func canWriteResize(p blockio.Perm) bool {
	return p&blockio.PermWrite != 0 && p&blockio.PermResize != 0
}

// ChildPerm is preallocate_child_perm: with writers that resize, the node
// takes write and resize on the file and shares neither, as it changes
// the file's length at any time.
func (n *node) ChildPerm(c *blockcore.Child, st blockcore.NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	np, ns := blockcore.DefaultPerms(c.Role, st, perm, shared)
	if canWriteResize(perm) {
		np |= blockio.PermWrite | blockio.PermResize
		ns &^= blockio.PermWrite | blockio.PermResize
	}
	return np, ns
}

func (n *node) CheckPerm(perm, shared blockio.Perm) error { return nil }
func (n *node) AbortPerm()                                {}

// SetPerm starts preallocating when the parents write and resize, and
// gives the tail back when they stop.
func (n *node) SetPerm(perm, shared blockio.Perm) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if canWriteResize(perm) {
		n.active = true
		return
	}
	if n.active {
		n.dropTail()
		n.active = false
	}
}

// dropTail is preallocate_drop_resize: the file is cut back to the data.
func (n *node) dropTail() {
	if n.dataEnd >= 0 && n.dataEnd < n.fileEnd {
		_ = n.Child.Truncate(n.dataEnd)
	}
	n.dataEnd, n.zeroStart, n.fileEnd = -1, -1, -1
}

// handleWrite is QEMU's handle_write: before a write ending past the data,
// it moves the end of the data and, when the write also passes the end of
// the file, preallocates. It reports whether a zero write there can be
// skipped (the range already reads as zeroes).
func (n *node) handleWrite(off, length int64, mergeZero bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.active {
		return false
	}
	end := off + length
	if n.dataEnd < 0 {
		size, err := n.Child.Size()
		if err != nil {
			return false
		}
		n.dataEnd = size
		if n.fileEnd < 0 {
			n.fileEnd = size
		}
	}
	if end <= n.dataEnd {
		return false
	}
	n.dataEnd = end
	if n.zeroStart < 0 || !mergeZero {
		n.zeroStart = end
	}
	if n.fileEnd < 0 {
		// A preallocation failed before: no more attempts.
		return false
	}
	if end <= n.fileEnd {
		return mergeZero && off >= n.zeroStart
	}
	start := n.fileEnd
	if mergeZero {
		start = min(off, n.fileEnd)
	}
	align := max(n.align, 1)
	pend := (end + n.extra + align - 1) / align * align
	if err := n.Child.WriteZeroes(start, pend-start, blockio.NoFallback); err != nil {
		n.fileEnd = -1
		return false
	}
	n.fileEnd = pend
	return mergeZero
}

func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	n.handleWrite(off, int64(len(p)), false)
	return n.Child.WriteAt(p, off, f)
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	if n.handleWrite(off, length, f&^blockio.NoFallback == 0) {
		return nil
	}
	return n.Child.WriteZeroes(off, length, f)
}

// Size is the end of the data while preallocating, else the file's.
func (n *node) Size() (int64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.active && n.dataEnd >= 0 {
		return n.dataEnd, nil
	}
	return n.Child.Size()
}

// Truncate inside the preallocated tail only moves the end of the data.
func (n *node) Truncate(size int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.active && n.dataEnd >= 0 && size > n.dataEnd && size <= n.fileEnd {
		n.dataEnd = size
		return nil
	}
	if err := n.Child.Truncate(size); err != nil {
		return err
	}
	if n.active {
		n.dataEnd, n.zeroStart, n.fileEnd = size, size, size
	}
	return nil
}

// Close gives the preallocated tail back.
func (n *node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropTail()
	return nil
}

// NoStrongOptionList: queries describe the node with a json: filename.
func (n *node) NoStrongOptionList() {}

// ReopenPrepare is preallocate_reopen_prepare: new sizes, checked as at
// open; the commit runs drained.
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	align, extra := int64(mib), int64(128*mib)
	if v, ok := rs.Int("prealloc-align"); ok {
		align = v
	}
	if v, ok := rs.Int("prealloc-size"); ok {
		extra = v
	}
	if align%512 != 0 {
		return nil, nil, schema.Errorf("prealloc-align parameter of preallocate filter is not aligned to 512")
	}
	return func() {
		n.mu.Lock()
		n.align, n.extra = align, extra
		n.mu.Unlock()
	}, func() {}, nil
}
