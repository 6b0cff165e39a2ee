package blockcore

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/qemu"
	"blockd/schema"
)

// Graph is the set of block nodes. It is owned by the Owner goroutine:
// every method must be called from there.
type Graph struct {
	edgeSeq uint64 // numbers edges in attach order
	log     *zap.Logger
	bus     *events.Bus
	nodes   map[string]*Node
	// named lists nodes in the order they got their names; queries list
	// the newest first, as qemu-storage-daemon does.
	named       namedList
	autoCounter uint64

	openTx []*tx           // transactions in progress, oldest first
	drains []*drainSection // drained sections in progress

	objects ObjectStore
	actions map[string]actionType // transaction action types (transaction.go)
}

// NewGraph returns an empty graph.
func NewGraph(log *zap.Logger, bus *events.Bus) *Graph {
	g := &Graph{log: log, bus: bus, nodes: map[string]*Node{}}
	g.registerActions()
	return g
}

// Logger returns the graph's logger, for drivers that log.
func (g *Graph) Logger() *zap.Logger { return g.log }

// Bus returns the event bus nodes and jobs publish on.
func (g *Graph) Bus() *events.Bus { return g.bus }

// Lookup returns the node with the given name, or nil.
func (g *Graph) Lookup(name string) *Node { return g.nodes[name] }

// Nodes lists all nodes, newest first.
func (g *Graph) Nodes() []*Node {
	out := g.named.slice()
	slices.Reverse(out)
	return out
}

// maxNodeName is QEMU's limit (the node_name buffer is 32 bytes).
const maxNodeName = 31

// assignName validates and registers a node's name within t
// (bdrv_assign_node_name). A node whose options give no node-name gets an
// automatic one; an explicit empty name is invalid, as in QEMU.
func (g *Graph) assignName(n *Node, name string, t *tx) error {
	if name == "" && (n.options == nil || n.options.NodeName == nil) {
		// QEMU's id_generate: a counter from 0, unpadded, and two random
		// digits ("#block042", then "#block117", ...).
		name = fmt.Sprintf("#block%d%02d", g.autoCounter, rand.IntN(100))
		g.autoCounter++
		n.auto = true
	} else {
		if !qemu.IDWellFormed(name) {
			return schema.Errorf("Invalid node-name: '%s'", name)
		}
		if g.nodes[name] != nil {
			return schema.Errorf("Duplicate nodes with node-name='%s'", name)
		}
		if len(name) > maxNodeName {
			return schema.Errorf("Node name too long")
		}
	}
	n.name = name
	g.nodes[name] = n
	g.named.add(n)
	t.onAbort(func() { g.unregister(n) })
	return nil
}

func (g *Graph) unregister(n *Node) {
	delete(g.nodes, n.name)
	g.named.remove(n)
}

// attach adds an edge from parent to child within t (bdrv_attach_child).
func (g *Graph) attach(parent Parent, child *Node, name string, role Role, t *tx) *Child {
	g.edgeSeq++
	c := &Child{Name: name, Role: role, Parent: parent, Node: child, seq: g.edgeSeq}
	c.gate = &edgeGate{}
	c.gate.set(child)
	child.parents = slices.Insert(child.parents, 0, c)
	// The undo is registered before the driver is asked anything, so an
	// abort (also after a panic in the driver) finds the edge.
	t.onAbort(func() { g.detachEdge(c) })
	if pn, ok := parent.(*Node); ok {
		pn.children = append(pn.children, c)
		// Start from what the parent needs now, as bdrv_attach_child does;
		// a refresh of the parent recomputes it.
		p, sh := pn.cumulativePerm()
		c.Perm, c.Shared = pn.childPerm(c, nil, p, sh)
	}
	return c
}

// detachEdge removes an edge from both ends.
func (g *Graph) detachEdge(c *Child) {
	if i := slices.Index(c.Node.parents, c); i >= 0 {
		c.Node.parents = slices.Delete(c.Node.parents, i, i+1)
	}
	if pn, ok := c.Parent.(*Node); ok {
		if i := slices.Index(pn.children, c); i >= 0 {
			pn.children = slices.Delete(pn.children, i, i+1)
		}
	}
}

// inUse reports whether anything but the monitor holds the node.
func (n *Node) inUse() bool { return len(n.parents) > 0 }

// releaseIfUnused closes a node that nobody holds any more, and then the
// children it held, within t (bdrv_unref reaching zero). The caller has
// just taken a parent from n; releaseIfUnused returns the nodes whose
// permissions (and image locks) the caller must refresh in t because of
// it: n if it stays open, else the former children that stay open, each
// of which lost a parent (bdrv_child_free refreshing the child's perms).
func (g *Graph) releaseIfUnused(n *Node, t *tx) []*Node {
	orphans := []*Node{n}
	g.release(n, t, &orphans)
	var live []*Node
	for _, k := range orphans {
		if g.nodes[k.name] == k && !slices.Contains(live, k) {
			live = append(live, k)
		}
	}
	return live
}

func (g *Graph) release(n *Node, t *tx, orphans *[]*Node) {
	if n.inUse() || n.monitorOwned {
		return
	}
	// Commit steps run in order: the node closes before its children, so
	// that its last flush (a format driver's metadata) can still reach
	// them, as bdrv_close runs the driver's close before unref'ing the
	// children.
	t.onCommit(func() { g.closeImpl(n) })
	for _, c := range slices.Clone(n.children) {
		g.detachEdge(c)
		t.onAbort(func() { g.reattach(c) })
		*orphans = append(*orphans, c.Node)
		g.release(c.Node, t, orphans)
	}
	g.unregister(n)
	t.onAbort(func() {
		g.nodes[n.name] = n
		g.named.add(n)
	})
}

func (g *Graph) reattach(c *Child) {
	c.Node.parents = slices.Insert(c.Node.parents, 0, c)
	if pn, ok := c.Parent.(*Node); ok {
		pn.children = append(pn.children, c)
	}
}

func (g *Graph) closeImpl(n *Node) {
	if n.impl == nil {
		return
	}
	if err := n.storeBitmaps(); err != nil {
		g.log.Warn("storing persistent bitmaps failed", zap.String("node", n.name), zap.Error(err))
	}
	if err := n.impl.Close(); err != nil {
		g.log.Warn("closing node failed", zap.String("node", n.name), zap.Error(err))
	}
	n.impl = nil
}

// Delete is blockdev-del: remove a monitor-owned node nobody uses, and
// the implicit children only it held.
func (g *Graph) Delete(name string) error {
	n := g.nodes[name]
	if n == nil {
		return schema.Errorf("Failed to find node with node-name='%s'", name)
	}
	if hasBackend(n) {
		return schema.Errorf("Node %s is in use", name)
	}
	if b := opBlocker(n); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", name, b)
	}
	if !n.monitorOwned {
		return schema.Errorf("Node %s is not owned by the monitor", name)
	}
	if n.inUse() {
		return schema.Errorf("Block device %s is in use", name)
	}
	for _, c := range n.children {
		if c.frozen {
			return frozenLinkError(c)
		}
		if err := checkReleasable(c.Node, c); err != nil {
			return err
		}
	}
	// No drain: the node has no parents, so no request can come through
	// it, and closing it must still be able to flush into its children.
	t := g.begin()
	n.monitorOwned = false
	t.onAbort(func() { n.monitorOwned = true })
	return t.finish(g.refreshPerms(g.releaseIfUnused(n, t), nil, t))
}

// CloseAll closes every node (shutdown), parents before children.
func (g *Graph) CloseAll() {
	var roots []*Node
	for n := range g.named.all() {
		if !n.inUse() {
			roots = append(roots, n)
		}
	}
	for _, n := range topoOrder(roots) {
		g.closeImpl(n)
	}
	g.nodes = map[string]*Node{}
	g.named = namedList{}
}
