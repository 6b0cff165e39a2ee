package blockcore

import (
	"fmt"

	"blockd/blockio"
)

// Role describes what a child is to its parent, as QEMU's BdrvChildRole:
// it decides the child's default permissions.
type Role uint8

const (
	RoleData     Role = 1 << iota // guest data lives here
	RoleMetadata                  // format metadata lives here
	RoleFiltered                  // a filter's single child, passed through
	RoleCOW                       // a backing file read for unallocated ranges
	RolePrimary                   // the parent's main child (its file or filtered child)

	// RoleImage is a format driver's file child.
	RoleImage = RoleData | RoleMetadata | RolePrimary
	// RoleBacking is a backing child.
	RoleBacking = RoleCOW
	// RoleFilteredPrimary is a filter driver's (raw without offset) child.
	RoleFilteredPrimary = RoleFiltered | RolePrimary
)

// Parent is whoever holds a child edge: a node, or a user that is not a
// node (a job, an export). Desc is how permission errors name it.
type Parent interface {
	ParentDesc() string
}

// Child is one edge of the graph: Parent uses Node under Name with a role
// and a pair of permission sets.
type Child struct {
	Name   string
	Role   Role
	Parent Parent
	Node   *Node
	Perm   blockio.Perm // what the parent needs
	Shared blockio.Perm // what the parent lets others do

	gate   *edgeGate // Node's data path, for IO; shared by copies of the edge
	frozen bool      // a job depends on this link (frozen.go)
	seq    uint64    // attach order, for graph dumps
}

// Node is a block node. All fields are owned by the graph owner goroutine,
// except the data path (Node.IO), which any goroutine may use.
type Node struct {
	name     string
	auto     bool // named #blockNNN by blockd, not by the user
	namedIdx int  // its place in Graph.named
	drv      *Driver
	impl     Impl
	io       *gate
	parent   Parent // set when the node is itself a Parent through its edges

	readOnly   bool
	forceShare bool
	// autoBackingFile is QEMU's auto_backing_file: the backing file the
	// image header names, or the filename of the backing opened from it.
	autoBackingFile string
	monitorOwned    bool // created by blockdev-add (or --blockdev) at top level
	options         Options

	dirty     []*DirtyBitmap  // dirty bitmaps, newest first (dirty_bitmaps.go)
	threshold *writeThreshold // block-set-write-threshold, once set

	reopen reopenInfo // what a reopen needs to know (reopen_opts.go)

	children []*Child // in attach order: file before backing
	parents  []*Child // newest first, as QEMU links new parents at the head

	permSeen permInputs // what the last permission refresh saw (perm.go)
	topoMark uint64     // the last topoOrder walk that reached the node
}

// Name returns the node name.
func (n *Node) Name() string { return n.name }

// ParentDesc makes a node a Parent for permission messages.
func (n *Node) ParentDesc() string { return fmt.Sprintf("node '%s'", n.name) }

// Driver returns the node's driver.
func (n *Node) Driver() *Driver { return n.drv }

// ReadOnly reports whether the node is read-only.
func (n *Node) ReadOnly() bool { return n.readOnly }

// Impl returns the driver's state for the node.
func (n *Node) Impl() Impl { return n.impl }

// Child returns the child edge with the given name, or nil.
func (n *Node) Child(name string) *Child {
	for _, c := range n.children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Children returns the node's child edges in attach order.
func (n *Node) Children() []*Child { return n.children }

// Parents returns the edges that use this node, newest first.
func (n *Node) Parents() []*Child { return n.parents }

// Backing returns the node's backing child node, or nil.
func (n *Node) Backing() *Node {
	if c := n.Child("backing"); c != nil {
		return c.Node
	}
	return nil
}

// File returns the node's file child node, or nil.
func (n *Node) File() *Node {
	name := "file"
	if n.drv != nil {
		name = n.drv.fileChildName()
	}
	if c := n.Child(name); c != nil {
		return c.Node
	}
	return nil
}

// IO is the node's data path: safe for concurrent use from any goroutine,
// and drained by the owner before it changes the node.
func (n *Node) IO() blockio.Device { return n.io }

// cumulativePerm is the union of what the parents need and the
// intersection of what they share (bdrv_get_cumulative_perm).
func (n *Node) cumulativePerm() (perm, shared blockio.Perm) {
	shared = blockio.PermAll
	for _, c := range n.parents {
		perm |= c.Perm
		shared &= c.Shared
	}
	return perm, shared
}

// SetAutoBackingFile records that the image header now names this backing
// file (after a driver rewrote it, as bdrv_change_backing_file does).
func (n *Node) SetAutoBackingFile(name string) { n.autoBackingFile = name }
