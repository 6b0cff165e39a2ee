package blockcore

import (
	"blockd/schema"
)

// opBlocker is QEMU's op blocker on a node, if any: a job holding it, or a
// node using it as its backing file. The newest parent's blocker wins, as
// QEMU reports the first of its list.
func opBlocker(n *Node) string {
	for _, c := range n.parents {
		if b, ok := c.Parent.(interface{ Blocker() string }); ok {
			return b.Blocker()
		}
		if pn, ok := c.Parent.(*Node); ok && c.Name == "backing" {
			return "node is used as backing hd of '" + pn.name + "'"
		}
	}
	return ""
}

// OpBlocker is opBlocker for jobs, which check it on the nodes they
// would use (bdrv_op_is_blocked).
func OpBlocker(n *Node) string { return opBlocker(n) }

// IsRoot is bdrv_is_root_node: nothing but block backends (exports,
// tools) uses n.
func (n *Node) IsRoot() bool {
	for _, c := range n.parents {
		if v, ok := c.Parent.(graphVertex); !ok || v.VertexType() != "block-backend" {
			return false
		}
	}
	return true
}

func hasBackend(n *Node) bool {
	for _, c := range n.parents {
		if v, ok := c.Parent.(graphVertex); ok && v.VertexType() == "block-backend" {
			return true
		}
	}
	return false
}

// Snapshot is blockdev-snapshot: overlay, an opened image without a
// backing file, goes on top of node and takes over node's users; node
// becomes the overlay's backing file and is reopened read-only
// (external_snapshot_prepare and _commit with bdrv_append). The overlay's
// header is not rewritten, as in QEMU.
func (g *Graph) Snapshot(nodeName, overlayName string) error {
	return g.DoAction("blockdev-snapshot", &schema.BlockdevSnapshotArgs{Node: nodeName, Overlay: overlayName})
}

// prepareSnapshot is blockdev-snapshot's prepare: node is quiesced from
// here to clean (jobs see it as a pause), and drained while the overlay
// is appended and until the transaction ends.
func (g *Graph) prepareSnapshot(a *schema.BlockdevSnapshotArgs) (*TxAction, error) {
	n := g.nodes[a.Node]
	if n == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Node, a.Node)
	}
	s := &externalSnapshot{g: g, old: n, t: g.begin()}
	s.endQuiesce = g.quiesce([]*Node{n})
	if err := snapshotSource(n); err != nil {
		return s.action(), err
	}
	o := g.nodes[a.Overlay]
	if o == nil {
		return s.action(), schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Overlay, a.Overlay)
	}
	s.resume = g.drain(topoOrder([]*Node{n}))
	return s.action(), g.appendOverlayTx(n, o, s.t)
}

// snapshotSource checks that n may get an overlay and flushes it.
func snapshotSource(n *Node) error {
	if b := opBlocker(n); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", n.name, b)
	}
	if !n.readOnly {
		if err := n.OwnerIO().Flush(); err != nil {
			return schema.Errorf("Failed to flush node '%s': %v", n.name, err)
		}
	}
	return nil
}

// appendOverlayTx is external_snapshot_prepare's checks and bdrv_append
// within t: o takes over n's users and gets n as its backing file. The
// caller keeps n's subtree drained until t is finished.
func (g *Graph) appendOverlayTx(n, o *Node, t *tx) error {
	if hasBackend(o) {
		return schema.Errorf("The overlay is already in use")
	}
	if b := opBlocker(o); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", o.name, b)
	}
	if o.Backing() != nil {
		return schema.Errorf("The overlay already has a backing image")
	}
	if _, ok := o.impl.(BackingUser); !ok || !o.drv.SupportsBacking {
		return schema.Errorf("The overlay does not support backing images")
	}
	if reaches(n, o) {
		return schema.Errorf("Making '%s' a backing child of '%s' would create a cycle", n.name, o.name)
	}
	if err := checkMovable(n, nil); err != nil {
		return err
	}
	g.moveParents(n, o, nil, t)
	c := g.attach(o, n, "backing", RoleBacking, t)
	g.notifyBacking(c)
	t.onAbort(func() { o.impl.(BackingUser).SetBacking(nil) })
	return g.refreshPerms([]*Node{o}, nil, t)
}

// afterAppend is external_snapshot_commit: the old image becomes
// read-only; as in QEMU, a failure to reopen it is not the snapshot's.
func (g *Graph) afterAppend(n *Node) {
	if n.readOnly {
		return
	}
	if err := g.SetReadOnly(n, true); err != nil {
		g.log.Sugar().Warnf("could not reopen '%s' read-only after the snapshot: %v", n.name, err)
	}
}

// reaches reports whether to is from itself or below it (a cycle check).
func reaches(from, to *Node) bool {
	if from == to {
		return true
	}
	for _, c := range from.children {
		if reaches(c.Node, to) {
			return true
		}
	}
	return false
}
