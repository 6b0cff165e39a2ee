package blockcore

import (
	"blockd/schema"
)

// ChildChanger is implemented by drivers whose children x-blockdev-change
// may add and remove (quorum). The graph checks, drains the node, changes
// the edge and refreshes permissions; the driver names a new child and
// follows the change, which runs while the node is drained.
type ChildChanger interface {
	// NewChildName checks that a child may be added and names it.
	NewChildName() (string, error)
	// CheckDelChild checks that c may be removed.
	CheckDelChild(c *Child) error
	// ChildAdded and ChildRemoved follow a change that succeeded.
	ChildAdded(c *Child)
	ChildRemoved(c *Child)
}

// BlockdevChange is x-blockdev-change (qmp_x_blockdev_change): remove the
// child named child from parent, or give parent the node named node as a
// new child, with QEMU's checks in its order.
func (g *Graph) BlockdevChange(a *schema.XBlockdevChangeArgs) error {
	p := g.nodes[a.Parent]
	if p == nil {
		return schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Parent, a.Parent)
	}
	if (a.Child == nil) == (a.Node == nil) {
		if a.Child != nil {
			return schema.Errorf("The parameters child and node are in conflict")
		}
		return schema.Errorf("Either child or node must be specified")
	}
	cc, _ := p.impl.(ChildChanger)
	if a.Child != nil {
		c := p.Child(*a.Child)
		if c == nil {
			return schema.Errorf("Node '%s' does not have child '%s'", a.Parent, *a.Child)
		}
		if cc == nil {
			return schema.Errorf("The node %s does not support removing a child", p.name)
		}
		return g.delChild(p, cc, c)
	}
	n := g.nodes[*a.Node]
	if n == nil {
		return schema.Errorf("Node '%s' not found", *a.Node)
	}
	if cc == nil {
		return schema.Errorf("The node %s does not support adding a child", p.name)
	}
	if len(n.parents) > 0 {
		return schema.Errorf("The node %s already has a parent", n.name)
	}
	name, err := cc.NewChildName()
	if err != nil {
		return err
	}
	t := g.begin()
	resume := g.drain(topoOrder([]*Node{p}))
	defer resume()
	c := g.attach(p, n, name, RoleData, t)
	if err := t.finish(g.refreshPerms([]*Node{p}, nil, t)); err != nil {
		return err
	}
	cc.ChildAdded(c)
	return nil
}

func (g *Graph) delChild(p *Node, cc ChildChanger, c *Child) error {
	if err := cc.CheckDelChild(c); err != nil {
		return err
	}
	if c.frozen {
		return frozenLinkError(c)
	}
	if err := checkReleasable(c.Node, c); err != nil {
		return err
	}
	t := g.begin()
	resume := g.drain(topoOrder([]*Node{p}))
	defer resume()
	g.detachEdge(c)
	t.onAbort(func() { g.reattach(c) })
	roots := append([]*Node{p}, g.releaseIfUnused(c.Node, t)...)
	if err := t.finish(g.refreshPerms(roots, nil, t)); err != nil {
		return err
	}
	cc.ChildRemoved(c)
	return nil
}
