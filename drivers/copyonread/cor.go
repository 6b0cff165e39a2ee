// Package copyonread owns the copy-on-read filter driver: a read through
// the node of a range that its file child does not define, but a layer of
// the child's backing chain down to bottom does, also writes the data
// read into the child, so the next read finds it there (QEMU's
// copy-on-read driver with BDRV_REQ_COPY_ON_READ). Writes pass through.
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
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	n := &node{Forward: blockio.Forward{Child: oc.File.Node.IO()}, locks: blockio.NewRangeLock()}
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

// ReadAt is cor_co_preadv_part: the request is cut where the chain's
// answer changes; each piece the child does not define but a layer down
// to bottom does is copied up.
func (n *node) ReadAt(p []byte, off int64) error {
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
			err = n.copyUp(p[:length], off)
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

// copyUp reads a range through the child and writes it into the child
// (data unchanged, hence write-unchanged), as zeroes when it reads as
// zeroes, under the range lock.
func (n *node) copyUp(p []byte, off int64) error {
	unlock := n.locks.Lock(off, int64(len(p)))
	defer unlock()
	if err := n.Child.ReadAt(p, off); err != nil {
		return err
	}
	if allZero(p) {
		err := n.Child.WriteZeroes(off, int64(len(p)), 0)
		if err == nil {
			return nil
		}
	}
	return n.Child.WriteAt(p, off, 0)
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
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
