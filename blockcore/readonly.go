package blockcore

import (
	"blockd/blockio"
	"blockd/schema"
)

// Reopener is implemented by format drivers that can switch a node
// between read-only and read-write. Its commit runs after the storage
// below has been reopened; exactly one of commit or abort follows.
type Reopener interface {
	ReopenPrepare(readOnly bool) (commit, abort func(), err error)
}

// ReopenPermHandler is implemented by protocol drivers whose reopen is part
// of their permission step (the file driver opens a new descriptor with
// the new access mode and moves its locks there): for a node being
// reopened the graph calls CheckPermReopen instead of CheckPerm, then
// SetPerm or AbortPerm as usual.
type ReopenPermHandler interface {
	PermHandler
	CheckPermReopen(readOnly bool, perm, shared blockio.Perm) error
}

// SetReadOnly reopens n and the storage below it (its file chain, not its
// backing) read-only or read-write, as bdrv_reopen_set_read_only does for
// commit. Permissions are re-checked for the new state over n's subtree;
// anything refused leaves every node, descriptor and lock as it was.
func (g *Graph) SetReadOnly(n *Node, readOnly bool) error {
	var chain []*Node
	for x := n; x != nil; x = x.File() {
		chain = append(chain, x)
	}
	// Only n is drained: requests reach the chain below through it, and
	// the file driver swaps its descriptor under its own lock, while a
	// format driver must still flush into its file during the reopen.
	resume := drain([]*Node{n})
	defer resume()
	t := &tx{}
	q := &reopenQueue{readOnly: map[*Node]bool{}}
	for _, x := range chain {
		if x.readOnly == readOnly {
			continue
		}
		_, fmtOK := x.impl.(Reopener)
		_, protoOK := x.impl.(ReopenPermHandler)
		if !fmtOK && !protoOK {
			return schema.Errorf("Block format '%s' used by node '%s' does not support reopening files", x.drv.Name, x.name)
		}
		q.readOnly[x] = readOnly
	}
	if err := g.refreshPerms([]*Node{n}, q, t); err != nil {
		return t.finish(err)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		x := chain[i]
		ro, ok := x.impl.(Reopener)
		if _, queued := q.readOnly[x]; !ok || !queued {
			continue
		}
		commit, abort, err := ro.ReopenPrepare(readOnly)
		if err != nil {
			return t.finish(err)
		}
		t.onAbort(abort)
		t.onCommit(commit)
	}
	for x := range q.readOnly {
		old := x.readOnly
		x.readOnly = readOnly
		x.io.readOnly = readOnly
		t.onAbort(func() { x.readOnly, x.io.readOnly = old, old })
	}
	return t.finish(nil)
}

// SetImpl replaces a node's driver state (a driver's reopen commit).
// Only valid while the node is drained, i.e. inside a reopen commit.
func (n *Node) SetImpl(impl Impl) { n.impl = impl }
