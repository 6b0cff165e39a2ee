package blockio

import "strings"

// Perm is a set of block permissions, QEMU's BLK_PERM_* bits in the same
// order (the file driver's image locks use the bit index as a byte offset).
type Perm uint32

const (
	PermConsistentRead Perm = 1 << iota
	PermWrite
	PermWriteUnchanged
	PermResize
	// PermGraphMod is kept in the model for completeness; QEMU 7.2 no
	// longer requests or reports it, so nothing in blockd takes it and it
	// is not part of the image-locking byte range.
	PermGraphMod

	// PermLockable is the set the file driver mirrors into image locks.
	PermLockable = PermConsistentRead | PermWrite | PermWriteUnchanged | PermResize
	// PermAll is every permission a parent can share.
	PermAll = PermLockable
)

var permNames = []string{"consistent-read", "write", "write-unchanged", "resize", "graph-mod"}

// Names lists the permissions in p in QEMU's bit order.
func (p Perm) Names() []string {
	out := []string{}
	for i, n := range permNames {
		if p&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// String joins the QAPI names with ", " (for logs and tests). QEMU's
// permission-conflict messages spell names with spaces ("consistent
// read"); blockcore's permPhrase makes those.
func (p Perm) String() string { return strings.Join(p.Names(), ", ") }
