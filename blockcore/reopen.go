package blockcore

import (
	"blockd/schema"
)

// Reopen is blockdev-reopen (and x-blockdev-reopen): every listed node,
// and the children that inherit options from it, is reopened with the
// given options, all or nothing. Options left out return to their
// defaults. On any failure every node, edge, option, descriptor and lock
// is as it was before.
func (g *Graph) Reopen(list []*schema.BlockdevOptions) error {
	q := newReopenQueue()
	for _, o := range list {
		if o.NodeName == nil {
			return schema.Errorf("node-name not specified")
		}
		n := g.nodes[*o.NodeName]
		if n == nil {
			return schema.Errorf("Failed to find node with node-name='%s'", *o.NodeName)
		}
		q.add(n, flattenOptions(o), nil, 0, false)
	}
	return g.reopenQueued(q)
}

// SetReadOnly reopens n read-only or read-write keeping its other options,
// with the children that inherit from it (its implicit file, which
// follows it, and backing files, which stay read-only), as
// bdrv_reopen_set_read_only does for jobs and snapshots. Permissions are
// re-checked for the new state; anything refused leaves every node,
// descriptor and lock as it was.
func (g *Graph) SetReadOnly(n *Node, readOnly bool) error {
	opts := newFlat()
	opts.set("read-only", readOnly)
	q := newReopenQueue()
	q.add(n, opts, nil, 0, true)
	return g.reopenQueued(q)
}

// reopenQueued is bdrv_reopen_multiple over a built queue.
func (g *Graph) reopenQueued(q *reopenQueue) error {
	if len(q.entries) == 0 {
		return nil // qemu-storage-daemon aborts on an empty list
	}
	resume := g.drain(q.quiesceSet())
	defer resume()
	t := g.begin()
	if err := g.reopenPrepare(q, t); err != nil {
		return t.finish(err)
	}
	// Commit with every reopened node drained: flags, descriptors and
	// driver state change while no request is inside. Nothing in the
	// commit does I/O through a drained node.
	wasRO := make([]bool, len(q.entries))
	for i, e := range q.entries {
		wasRO[i] = e.n.readOnly
	}
	resumeAll := g.drain(q.queued())
	defer resumeAll()
	_ = t.finish(nil)
	resumeAll()
	resume()
	for i, e := range q.entries {
		e.n.reopenBitmapsPost(wasRO[i])
	}
	g.releaseReplaced(q)
	return nil
}

// reopenPrepare flushes and prepares every entry in queue order, then
// checks the permissions of the whole queue as one change. The commit
// steps are registered in t, in QEMU's order (entries in reverse).
func (g *Graph) reopenPrepare(q *reopenQueue, t *tx) error {
	for _, e := range q.entries {
		if e.n.readOnly || e.n.impl == nil {
			continue
		}
		if err := e.n.impl.Flush(); err != nil {
			return schema.Errorf("Error flushing drive: %s", schema.AsError(err).Desc)
		}
	}
	for _, e := range q.entries {
		if err := g.prepareEntry(e, t); err != nil {
			return err
		}
	}
	// Everything whose parents changed: the reopened nodes and the
	// children they let go, listed as QEMU prepends them.
	var roots []*Node
	for _, e := range q.entries {
		roots = append([]*Node{e.n}, roots...)
		if e.oldBacking != nil {
			roots = append([]*Node{e.oldBacking}, roots...)
		}
		if e.oldFile != nil {
			roots = append([]*Node{e.oldFile}, roots...)
		}
	}
	if err := g.refreshPerms(roots, q, t); err != nil {
		return err
	}
	for i := len(q.entries) - 1; i >= 0; i-- {
		e := q.entries[i]
		t.onCommit(func() { g.commitEntry(e) })
	}
	return nil
}
