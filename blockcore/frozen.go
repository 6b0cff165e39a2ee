package blockcore

import (
	"blockd/schema"
)

// Frozen links (QEMU's bdrv_freeze_backing_chain): a job freezes the
// backing links it depends on, from its top node down to its base, for
// as long as it runs. No graph change may move or drop a frozen edge:
// reopen, snapshot, deletion and filter removal refuse with QEMU's texts,
// and the job unfreezes its links before it changes them itself.

// chainChild is bdrv_filter_or_cow_child: the edge a backing chain
// follows below n (its backing, or a filter's filtered child).
func chainChild(n *Node) *Child {
	if c := n.Child("backing"); c != nil {
		return c
	}
	if n.drv != nil && n.drv.Filter {
		for _, c := range n.children {
			if c.Role&RoleFiltered != 0 {
				return c
			}
		}
	}
	return nil
}

// ChainBelow is bdrv_filter_or_cow_bs: the next node of a backing chain
// below n, through filters too, or nil.
func ChainBelow(n *Node) *Node {
	if c := chainChild(n); c != nil {
		return c.Node
	}
	return nil
}

// FreezeBackingChain freezes every chain link from top down to base (the
// link into base included, base's own links not). It refuses, changing
// nothing, when a link is frozen already; unfreeze undoes exactly what it
// froze.
func (g *Graph) FreezeBackingChain(top, base *Node) (unfreeze func(), err error) {
	var links []*Child
	for n := top; n != nil && n != base; {
		c := chainChild(n)
		if c == nil {
			break
		}
		if c.frozen {
			return nil, schema.Errorf("Cannot change '%s' link from '%s' to '%s'", c.Name, n.name, c.Node.name)
		}
		links = append(links, c)
		n = c.Node
	}
	for _, c := range links {
		c.frozen = true
	}
	return func() {
		for _, c := range links {
			c.frozen = false
		}
	}, nil
}

// Frozen reports whether an edge is frozen.
func (c *Child) Frozen() bool { return c.frozen }

// frozenLinkError is bdrv_set_file_or_backing_noperm's refusal to change
// a frozen edge of parent.
func frozenLinkError(c *Child) error {
	return schema.Errorf("Cannot change frozen '%s' link from '%s' to '%s'", c.Name, parentName(c), c.Node.name)
}

func parentName(c *Child) string {
	if pn, ok := c.Parent.(*Node); ok {
		return pn.name
	}
	return c.Parent.ParentDesc()
}

// checkMovable is bdrv_replace_node_noperm's check: the parents of from
// (except keep) may be pointed elsewhere only if none of their edges is
// frozen.
func checkMovable(from *Node, keep []*Child) error {
	for _, c := range from.parents {
		if c.frozen && !containsChild(keep, c) {
			return schema.Errorf("Cannot change '%s' link to '%s'", c.Name, from.name)
		}
	}
	return nil
}

func containsChild(list []*Child, c *Child) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}

// checkReleasable refuses when dropping the edge leaving would close n
// (nobody else holds it) while n, or a node only it holds, has a frozen
// child edge: closing it would break a job's chain. QEMU asserts there;
// blockd answers with the frozen-link error.
func checkReleasable(n *Node, leaving *Child) error {
	if n.monitorOwned {
		return nil
	}
	for _, p := range n.parents {
		if p != leaving {
			return nil
		}
	}
	for _, c := range n.children {
		if c.frozen {
			return frozenLinkError(c)
		}
		if err := checkReleasable(c.Node, c); err != nil {
			return err
		}
	}
	return nil
}
