package blockcore

import (
	"slices"
	"strings"
	"sync/atomic"

	"blockd/blockio"
	"blockd/schema"
)

// Permission changes follow QEMU 7.2's block.c: the affected nodes are put
// in topological order (parents before children); for each node the
// parents' permissions are checked against each other, then the node's
// driver is asked to accept the cumulative permissions (the file driver
// takes image locks here) and the node's own child edges get their new
// permissions, which the next nodes in the order then check. Every step
// registers its undo in the transaction, so a refusal anywhere restores
// every edge and every driver state.

//
// A node below the roots whose inputs (its parent edges and whether it is
// writable) are what its last refresh worked from is skipped: every check
// would pass again, the driver would be handed what it already holds, and
// the child edges would come out unchanged, so its children are skipped
// in turn unless something else reaches them. A refresh therefore costs
// driver calls (image locks) only where permissions change, in the same
// order as a full pass.

// refreshPerms recomputes permissions below roots within t.
func (g *Graph) refreshPerms(roots []*Node, q *reopenQueue, t *tx) error {
	isRoot := func(n *Node) bool { return slices.Contains(roots, n) }
	if len(roots) > 8 {
		set := make(map[*Node]bool, len(roots))
		for _, r := range roots {
			set[r] = true
		}
		isRoot = func(n *Node) bool { return set[n] }
	}
	for _, n := range topoOrder(roots) {
		if !isRoot(n) && !q.has(n) && n.permSeen.matches(n, q) {
			continue
		}
		if err := parentConflict(n); err != nil {
			return err
		}
		if err := g.refreshNodePerm(n, q, t); err != nil {
			return err
		}
		n.recordPermInputs(q, t)
	}
	return nil
}

// permInputs is what a node's last permission refresh worked from.
type permInputs struct {
	valid    bool
	writable bool
	parents  []edgePerm
}

type edgePerm struct {
	c            *Child
	perm, shared blockio.Perm
}

// matches reports whether n's inputs are still those recorded in in.
func (in *permInputs) matches(n *Node, q *reopenQueue) bool {
	if !in.valid || in.writable != q.writable(n) || len(in.parents) != len(n.parents) {
		return false
	}
	for i, c := range n.parents {
		if e := in.parents[i]; e.c != c || e.perm != c.Perm || e.shared != c.Shared {
			return false
		}
	}
	return true
}

// recordPermInputs remembers what n was just refreshed with, within t.
func (n *Node) recordPermInputs(q *reopenQueue, t *tx) {
	old := n.permSeen
	in := permInputs{valid: true, writable: q.writable(n), parents: make([]edgePerm, len(n.parents))}
	for i, c := range n.parents {
		in.parents[i] = edgePerm{c, c.Perm, c.Shared}
	}
	n.permSeen = in
	t.onAbort(func() { n.permSeen = old })
}

// topoOrder lists the nodes reachable from roots, every parent before its
// children (bdrv_topological_dfs).
func topoOrder(roots []*Node) []*Node {
	// A fresh mark per walk instead of a set: the walk is the part of a
	// refresh that grows with the subgraph, so it must stay cheap.
	mark := topoMarks.Add(1)
	var post []*Node
	var visit func(n *Node)
	visit = func(n *Node) {
		if n.topoMark == mark {
			return
		}
		n.topoMark = mark
		for _, c := range n.children {
			visit(c.Node)
		}
		post = append(post, n)
	}
	// QEMU prepends each finished root's subtree in front of the list, so
	// later roots come first.
	var order []*Node
	for _, r := range roots {
		start := len(post)
		visit(r)
		part := append([]*Node(nil), post[start:]...)
		reverse(part)
		order = append(part, order...)
	}
	return order
}

// topoMarks numbers topoOrder's walks. Each graph is walked only by its
// owner goroutine, and walks of different graphs touch different nodes.
var topoMarks atomic.Uint64

func reverse(s []*Node) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// parentConflict checks every ordered pair of parents of n: a must share
// everything b requires (bdrv_parent_perms_conflict / bdrv_a_allow_b).
func parentConflict(n *Node) error {
	for _, a := range n.parents {
		for _, b := range n.parents {
			if a == b || b.Perm&a.Shared == b.Perm {
				continue
			}
			return schema.Errorf("Permission conflict on node '%s': permissions '%s' are both required by %s (uses node '%s' as '%s' child) and unshared by %s (uses node '%s' as '%s' child).",
				n.name, permPhrase(b.Perm&^a.Shared),
				b.Parent.ParentDesc(), n.name, b.Name,
				a.Parent.ParentDesc(), n.name, a.Name)
		}
	}
	return nil
}

// permPhrase names permissions as QEMU's messages do ("consistent read").
func permPhrase(p blockio.Perm) string {
	return strings.ReplaceAll(p.String(), "-", " ")
}

// refreshNodePerm is bdrv_node_refresh_perm: validate the cumulative
// permissions against the node's state, let the driver accept them, and
// recompute the permissions of the node's child edges.
func (g *Graph) refreshNodePerm(n *Node, q *reopenQueue, t *tx) error {
	perm, shared := n.cumulativePerm()
	if perm&(blockio.PermWrite|blockio.PermWriteUnchanged) != 0 && !q.writable(n) {
		if !n.writableNow() {
			return schema.Errorf("Block node is read-only")
		}
		return schema.Errorf("Read-only block node '%s' cannot support read-write users", n.name)
	}
	if ph, ok := n.impl.(PermHandler); ok {
		var err error
		if rp, reopening := n.impl.(ReopenPermHandler); reopening && q.has(n) {
			err = rp.CheckPermReopen(q.state(n), perm, shared)
		} else {
			err = ph.CheckPerm(perm, shared)
		}
		if err != nil {
			return err
		}
		t.onAbort(ph.AbortPerm)
		t.onCommit(func() {
			// Commit re-reads the cumulative permissions: later steps of
			// the same transaction may have changed the parents again.
			p, s := n.cumulativePerm()
			ph.SetPerm(p, s)
		})
	}
	for _, c := range n.children {
		cp, cs := n.childPerm(c, q, perm, shared)
		setChildPerm(c, cp, cs, t)
	}
	return nil
}

func setChildPerm(c *Child, perm, shared blockio.Perm, t *tx) {
	oldPerm, oldShared := c.Perm, c.Shared
	c.Perm, c.Shared = perm, shared
	t.onAbort(func() { c.Perm, c.Shared = oldPerm, oldShared })
}

// childPerm is bdrv_child_perm: what n needs from child c given what n's
// own parents need from n.
func (n *Node) childPerm(c *Child, q *reopenQueue, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	var np, ns blockio.Perm
	if cp, ok := n.impl.(ChildPermer); ok {
		np, ns = cp.ChildPerm(c, q.view(n), perm, shared)
	} else {
		np, ns = DefaultPerms(c.Role, q.view(n), perm, shared)
	}
	if c.Node != nil && c.Node.forceShare {
		ns = blockio.PermAll
	}
	return np, ns
}

// NodeState is what default permissions depend on: whether the parent
// node will be writable (taking a pending reopen into account).
type NodeState struct {
	Writable bool
}

// Permissions a filter passes through to its child, and those it always
// lets others take (block.c DEFAULT_PERM_PASSTHROUGH / _UNCHANGED).
const (
	permPassthrough = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	permUnchanged   = blockio.PermAll &^ permPassthrough
)

// DefaultPerms is bdrv_default_perms: the permissions a parent in state st
// takes on a child with the given role, given its own parents' perm and
// shared sets.
func DefaultPerms(role Role, st NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	switch {
	case role&RoleFiltered != 0:
		return perm & permPassthrough, (shared & permPassthrough) | permUnchanged
	case role&RoleCOW != 0:
		perm &= blockio.PermConsistentRead
		if shared&blockio.PermWrite != 0 {
			shared = blockio.PermWrite | blockio.PermResize
		} else {
			shared = 0
		}
		return perm, shared | blockio.PermConsistentRead | blockio.PermWriteUnchanged
	}
	perm, shared = perm&permPassthrough, (shared&permPassthrough)|permUnchanged
	if role&RoleMetadata != 0 {
		// Format drivers write metadata even when their users don't, and
		// nobody else may change the file under them.
		if st.Writable {
			perm |= blockio.PermWrite | blockio.PermResize
		}
		perm |= blockio.PermConsistentRead
		shared &^= blockio.PermWrite | blockio.PermResize
	}
	if role&RoleData != 0 {
		shared &^= blockio.PermResize
		if perm&blockio.PermWriteUnchanged != 0 {
			perm |= blockio.PermWrite
		}
		if perm&blockio.PermWrite != 0 {
			perm |= blockio.PermResize
		}
	}
	return perm, shared
}

// writableNow reports whether the node is open read-write.
func (n *Node) writableNow() bool { return !n.readOnly }
