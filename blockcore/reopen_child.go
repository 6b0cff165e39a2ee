package blockcore

import (
	"slices"

	"blockd/schema"
)

// reopenChild is bdrv_reopen_parse_file_or_backing with
// bdrv_set_file_or_backing_noperm: when the options name another node
// (or null, for backing) than the current child, the edge is switched
// within t; permissions are refreshed later for the whole queue, and the
// replaced child is released only once everything has committed.
func (g *Graph) reopenChild(e *reopenEntry, opts *flatOpts, name string, t *tx) error {
	n := e.n
	v, ok := opts.get(name)
	if !ok {
		return nil
	}
	var to *Node
	switch x := v.(type) {
	case nil:
	case string:
		if to = g.nodes[x]; to == nil {
			return schema.Errorf("Cannot find device='' nor node-name='%s'", x)
		}
	default:
		return nil // flattened options hold nothing else here
	}
	edge := n.Child(name)
	var old *Node
	if edge != nil {
		old = edge.Node
	}
	if old == to {
		return nil
	}
	if old != nil {
		if jobFilterChild(old) != nil && old.auto {
			if old.Backing() == to {
				return nil // bdrv_skip_implicit_filters
			}
			return schema.Errorf("Cannot replace implicit %s child of %s", name, n.name)
		}
	}
	backing := name == "backing"
	if backing && !n.drv.SupportsBacking {
		return schema.Errorf("Driver '%s' of node '%s' does not support backing files", n.drv.Name, n.name)
	}
	role := RoleBacking
	if !backing {
		if edge == nil {
			return schema.Errorf("Cannot set file child to format node without file child")
		}
		role = edge.Role
	}
	if to != nil && below(to, n) {
		return schema.Errorf("Making '%s' a %s child of '%s' would create a cycle", to.name, name, n.name)
	}
	if edge != nil {
		if edge.frozen {
			return frozenLinkError(edge)
		}
		if err := checkReleasable(old, edge); err != nil {
			return err
		}
	}
	g.switchChild(n, edge, to, name, role, t)
	if backing {
		e.oldBacking, e.backingChanged = old, true
	} else {
		e.oldFile, e.fileChanged = old, true
	}
	return nil
}

// switchChild replaces n's edge (nil: none) by a new one to to (nil:
// none) within t. An abort restores the exact order of every list it
// touched, which queries show.
func (g *Graph) switchChild(n *Node, edge *Child, to *Node, name string, role Role, t *tx) {
	kids := slices.Clone(n.children)
	var old *Node
	var oldParents, toParents []*Child
	if edge != nil {
		old = edge.Node
		oldParents = slices.Clone(old.parents)
	}
	if to != nil {
		toParents = slices.Clone(to.parents)
	}
	t.onAbort(func() {
		n.children = kids
		if old != nil {
			old.parents = oldParents
		}
		if to != nil {
			to.parents = toParents
		}
	})
	if edge != nil {
		g.detachEdge(edge)
		if old.reopen.inheritsFrom == n {
			old.reopen.inheritsFrom = nil
			t.onAbort(func() { old.reopen.inheritsFrom = n })
		}
	}
	if to == nil {
		return
	}
	inherits := inheritsRecursively(to, n)
	g.attach(n, to, name, role, t)
	if inherits && to.reopen.inheritsFrom != n {
		prev := to.reopen.inheritsFrom
		to.reopen.inheritsFrom = n
		t.onAbort(func() { to.reopen.inheritsFrom = prev })
	}
}

// inheritsRecursively is bdrv_inherits_from_recursive.
func inheritsRecursively(child, parent *Node) bool {
	for child != nil && child != parent {
		child = child.reopen.inheritsFrom
	}
	return child == parent && parent != nil
}

// below reports whether to is from or one of its descendants
// (bdrv_recurse_has_child).
func below(from, to *Node) bool {
	if from == to {
		return true
	}
	for _, c := range from.children {
		if below(c.Node, to) {
			return true
		}
	}
	return false
}

// notifyChildren hands a reopened node's driver the children it switched
// to (at commit, while the node is drained).
func (g *Graph) notifyChildren(e *reopenEntry) {
	n := e.n
	if e.fileChanged {
		if fu, ok := n.impl.(FileUser); ok {
			fu.SetFile(n.File().io)
		}
	}
	if e.backingChanged {
		if bu, ok := n.impl.(BackingUser); ok {
			if b := n.Backing(); b != nil {
				bu.SetBacking(b.io)
			} else {
				bu.SetBacking(nil)
			}
		}
	}
}

// releaseReplaced closes the children a reopen replaced if nobody uses
// them any more, and relaxes the permissions of their own children that
// stay (as blockdev-del does).
func (g *Graph) releaseReplaced(q *reopenQueue) {
	for _, e := range q.entries {
		for _, old := range []*Node{e.oldBacking, e.oldFile} {
			if old == nil || g.nodes[old.name] != old {
				continue
			}
			t := g.begin()
			live := g.releaseIfUnused(old, t)
			if err := t.finish(g.refreshPerms(live, nil, t)); err != nil {
				g.log.Warn("relaxing permissions after a reopen failed")
			}
		}
	}
}
