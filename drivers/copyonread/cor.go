// Package copyonread owns the copy-on-read filter driver: a read through
// the node of a range that its file child does not define, but a layer of
// the child's backing chain down to bottom does, also writes the data
// read into the child, widened to the child's whole clusters, so the next
// read finds it there (QEMU's copy-on-read driver with
// BDRV_REQ_COPY_ON_READ). Writes pass through.
// A copy-up and a write through the filter to the same range exclude each
// other, so a copy-up never puts older backing data over a newer write.
package copyonread

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "copy-on-read", Filter: true, IsFilter: true, Open: open})
}

// node is one open copy-on-read node.
type node struct {
	blockio.Forward                // the child, whose chain is read and which is written
	bottom          blockio.Device // the lowest layer copied from; nil: the whole chain
	locks           *blockio.RangeLock
	cluster         int64 // the child's cluster size, which copy-ups round to; 0: none
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	n := &node{Forward: blockio.Forward{Child: oc.File.Node.IO()}, locks: blockio.NewRangeLock(),
		cluster: oc.Graph.ClusterSize(oc.File.Node)}
	if b := oc.Options.Cor.Bottom; b != nil {
		bn := oc.Graph.Lookup(*b)
		if bn == nil {
			return nil, schema.Errorf("Bottom node '%s' not found", *b)
		}
		n.bottom = bn.IO()
	}
	return n, nil
}

// Perms is cor_child_perm: what the parents need, passed through, plus
// write-unchanged for the data copied up. The block-stream job's filter
// takes the same.
func Perms(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	const pass = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	return perm&pass | blockio.PermWriteUnchanged, shared&pass | blockio.PermWriteUnchanged | (blockio.PermAll &^ pass)
}

func (n *node) ChildPerm(_ *blockcore.Child, _ blockcore.NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	return Perms(perm, shared)
}

// layers lists the child's backing chain below it, down to bottom
// included (bdrv_is_allocated_above(backing, bottom, include_base)).
func (n *node) layers() []blockio.Device {
	var out []blockio.Device
	dev := n.Child
	for {
		if dev = blockio.BackingOf(dev); dev == nil {
			return out
		}
		out = append(out, dev)
		if dev == n.bottom {
			return out
		}
	}
}

// ReadAt is cor_co_preadv_part: without bottom the whole request is a
// copy-on-read; with bottom the request is cut where the chain's answer
// changes, and only the pieces the child does not define but a layer
// down to bottom does are.
func (n *node) ReadAt(p []byte, off int64) error {
	if n.bottom == nil {
		return n.readCopyingUp(p, off)
	}
	for len(p) > 0 {
		length := int64(len(p))
		st, err := n.Child.BlockStatus(off, length)
		if err != nil {
			return err
		}
		length = min(length, st.Length)
		copyUp := false
		if st.Flags&blockio.StatusAllocated == 0 {
			alloc, l, err := blockio.AllocatedAbove(n.layers(), off, length)
			// A failed status query still copies up, as the reference does.
			copyUp = alloc || err != nil
			if err == nil && l > 0 {
				length = l
			}
		}
		if copyUp {
			err = n.readCopyingUp(p[:length], off)
		} else {
			err = n.Child.ReadAt(p[:length], off)
		}
		if err != nil {
			return err
		}
		p, off = p[length:], off+length
	}
	return nil
}

// maxBounce is QEMU's MAX_BOUNCE_BUFFER: the most one copy-up step reads
// and writes at once.
const maxBounce = 32768 * 512

// readCopyingUp is a read with BDRV_REQ_COPY_ON_READ reaching the child
// (bdrv_aligned_preadv, then bdrv_co_do_copy_on_readv): unless the child
// defines the whole range, the range is widened to whole clusters of the
// child, and every part of them the child does not define is read
// through it and written into it (data unchanged: write-unchanged), as
// zeroes when it reads as zeroes. Whole clusters are what QEMU copies so
// that no later write needs the backing file again; a cluster of zeroes
// then becomes a zero cluster rather than allocated data. The widened
// range is locked against writes through the filter.
func (n *node) readCopyingUp(p []byte, off int64) error {
	length := int64(len(p))
	st, err := n.Child.BlockStatus(off, length)
	if err != nil {
		return err
	}
	if st.Flags&blockio.StatusAllocated != 0 && st.Length >= length {
		return n.Child.ReadAt(p, off)
	}
	start, end := off, off+length
	if cs := n.cluster; cs > 0 {
		start, end = start/cs*cs, (end+cs-1)/cs*cs
	}
	size, err := n.Child.Size()
	if err != nil {
		return err
	}
	end = min(end, size) // an image may end inside its last cluster
	defer n.locks.Lock(start, end-start)()
	for pos := start; pos < end; {
		step := min(end-pos, maxBounce)
		allocated := false
		if st, err := n.Child.BlockStatus(pos, step); err == nil {
			// A failed query is taken for unallocated: the read that
			// follows will report a useful error if there is one.
			step, allocated = min(step, st.Length), st.Flags&blockio.StatusAllocated != 0
		}
		// The part of [pos, pos+step) the caller asked for.
		lo, hi := max(pos, off), min(pos+step, off+length)
		if allocated {
			if lo < hi {
				if err := n.Child.ReadAt(p[lo-off:hi-off], lo); err != nil {
					return err
				}
			}
		} else {
			buf := make([]byte, step)
			if pos >= off && pos+step <= off+length {
				buf = p[pos-off : pos+step-off] // inside the request: no bounce
			}
			if err := n.copyUp(buf, pos); err != nil {
				return err
			}
			if lo < hi {
				copy(p[lo-off:hi-off], buf[lo-pos:hi-pos])
			}
		}
		pos += step
	}
	return nil
}

// copyUp reads a range through the child and writes it into the child.
func (n *node) copyUp(p []byte, off int64) error {
	if err := n.Child.ReadAt(p, off); err != nil {
		return err
	}
	if blockio.AllZero(p) {
		err := n.Child.WriteZeroes(off, int64(len(p)), 0)
		if err == nil {
			return nil
		}
	}
	return n.Child.WriteAt(p, off, 0)
}

func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	defer n.locks.Lock(off, int64(len(p)))()
	return n.Child.WriteAt(p, off, f)
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	defer n.locks.Lock(off, length)()
	return n.Child.WriteZeroes(off, length, f)
}

func (n *node) Discard(off, length int64) error {
	defer n.locks.Lock(off, length)()
	return n.Child.Discard(off, length)
}

func (n *node) Close() error { return nil }

// NoStrongOptionList: the driver declares no strong options, so queries
// describe the node with a json: filename.
func (n *node) NoStrongOptionList() {}
