package blockcore

import (
	"slices"

	"go.uber.org/zap"

	"blockd/blockio"
	"blockd/schema"
)

// Graph edits used by jobs. Each is a transaction: permissions are
// refreshed over everything the edit touches, and a refusal restores the
// graph exactly.

// AttachUser gives a parent that is not a node (a job, a backend) an edge
// to n with fixed permissions (bdrv_root_attach_child).
func (g *Graph) AttachUser(p Parent, n *Node, name string, perm, shared blockio.Perm) (*Child, error) {
	t := g.begin()
	c := g.attach(p, n, name, RoleFilteredPrimary, t)
	c.Perm, c.Shared = perm, shared
	if err := g.refreshPerms([]*Node{n}, nil, t); err != nil {
		return nil, t.finish(err)
	}
	return c, t.finish(nil)
}

// SetUserPerm changes a user edge's permissions (bdrv_child_try_set_perm).
func (g *Graph) SetUserPerm(c *Child, perm, shared blockio.Perm) error {
	t := g.begin()
	setChildPerm(c, perm, shared, t)
	return t.finish(g.refreshPerms([]*Node{c.Node}, nil, t))
}

// DetachUser removes a user edge; permissions below can only relax, and
// a node nobody holds any more is closed (bdrv_root_unref_child).
func (g *Graph) DetachUser(c *Child) {
	if err := checkReleasable(c.Node, c); err != nil {
		// A job detaches its edges after unfreezing its links; anything
		// else is a bug, and closing the node would break a chain.
		g.log.Error("user edge kept: its node has frozen links", zap.String("node", c.Node.name), zap.Error(err))
		return
	}
	t := g.begin()
	g.detachEdge(c)
	t.onAbort(func() { g.reattach(c) })
	roots := []*Node{c.Node}
	if g.nodes[c.Node.name] == c.Node {
		roots = g.releaseIfUnused(c.Node, t)
	}
	if err := t.finish(g.refreshPerms(roots, nil, t)); err != nil {
		g.log.Warn("relaxing permissions after a user left failed")
	}
}

// Impl for pass-through filter nodes that jobs insert (QEMU's commit_top
// and mirror_top): everything goes to the backing child.
type passThrough struct{ child *Node }

func (p *passThrough) dev() blockio.Device { return p.child.io }

func (p *passThrough) ReadAt(b []byte, off int64) error { return p.dev().ReadAt(b, off) }
func (p *passThrough) WriteAt(b []byte, off int64, f blockio.WriteFlags) error {
	return p.dev().WriteAt(b, off, f)
}
func (p *passThrough) WriteZeroes(off, n int64, f blockio.WriteFlags) error {
	return p.dev().WriteZeroes(off, n, f)
}
func (p *passThrough) Discard(off, n int64) error { return p.dev().Discard(off, n) }
func (p *passThrough) Flush() error               { return p.dev().Flush() }
func (p *passThrough) BlockStatus(off, n int64) (blockio.Status, error) {
	return p.dev().BlockStatus(off, n)
}
func (p *passThrough) Size() (int64, error)   { return p.dev().Size() }
func (p *passThrough) Truncate(n int64) error { return p.dev().Truncate(n) }
func (p *passThrough) Close() error           { return nil }

// FilterPerms decides what a job's filter takes from the node below it.
type FilterPerms func(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm)

type filterImpl struct {
	passThrough
	childName string // "backing" (mirror_top, commit_top) or "file"
	perms     FilterPerms
	hook      WriteHook
	// otherPerm is what the filter takes of its other children (the
	// copy-before-write target).
	otherPerm func(c *Child) (blockio.Perm, blockio.Perm)
	onClose   func()
	// self and parentPerms, for driver filters whose take on the child
	// depends on whether anything uses them (cbw_child_perm).
	self        *Node
	parentPerms func(hasParents bool, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm)
}

func (f *filterImpl) Close() error {
	if f.onClose != nil {
		f.onClose()
	}
	return nil
}

// FilterSpec makes a driver's node a filter over its file child, as
// transparent as a job's filter: the copy-before-write driver.
type FilterSpec struct {
	// Perms is what the filter takes of its file child, knowing whether
	// the filter has parents.
	Perms     func(hasParents bool, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm)
	Hook      WriteHook
	OtherPerm func(c *Child) (blockio.Perm, blockio.Perm)
	OnClose   func() // when the node closes
}

// NewFilter is the Impl of a filter driver's node over oc's file child.
func NewFilter(oc *OpenContext, s FilterSpec) Impl {
	return &filterImpl{passThrough: passThrough{oc.File.Node}, childName: "file", parentPerms: s.Perms,
		self: oc.Node, hook: s.Hook, otherPerm: s.OtherPerm, onClose: s.OnClose}
}

// WriteHook wraps every request that changes data through a job's filter:
// it runs write (the request on the node below) and may act before and
// after it. Jobs use it for what their filter does to guest writes: the
// copy-on-read filter serializes them with the range being streamed, the
// mirror filter copies them to the target in write-blocking mode, the
// copy-before-write filter saves the old data first.
type WriteHook func(off, length int64, write func() error) error

func (f *filterImpl) hooked(off, n int64, write func() error) error {
	if f.hook == nil {
		return write()
	}
	return f.hook(off, n, write)
}

func (f *filterImpl) WriteAt(b []byte, off int64, fl blockio.WriteFlags) error {
	return f.hooked(off, int64(len(b)), func() error { return f.dev().WriteAt(b, off, fl) })
}

func (f *filterImpl) WriteZeroes(off, n int64, fl blockio.WriteFlags) error {
	return f.hooked(off, n, func() error { return f.dev().WriteZeroes(off, n, fl) })
}

func (f *filterImpl) Discard(off, n int64) error {
	return f.hooked(off, n, func() error { return f.dev().Discard(off, n) })
}

// SetWriteHook installs h on a job filter made by InsertFilterAbove;
// the filter is drained meanwhile so no request sees half of it.
func SetWriteHook(f *Node, h WriteHook) {
	fi, ok := f.impl.(*filterImpl)
	if !ok {
		return
	}
	f.io.drainBegin()
	fi.hook = h
	f.io.drainEnd()
}

func (f *filterImpl) ChildPerm(c *Child, st NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	if c.Name != f.childName && f.otherPerm != nil {
		return f.otherPerm(c)
	}
	if f.parentPerms != nil {
		return f.parentPerms(len(f.self.parents) > 0, perm, shared)
	}
	return f.perms(perm, shared)
}

// InsertFilterAbove puts a new pass-through filter node above n: the
// filter takes over n's parents and uses n as its child named childName
// (bdrv_append): "backing" for mirror_top and commit_top, "file" for
// copy-on-read, as in the reference. name "" gives an automatic name.
func (g *Graph) InsertFilterAbove(n *Node, driverName, name, childName string, perms FilterPerms) (*Node, error) {
	t := g.begin()
	f := &Node{drv: &Driver{Name: driverName, Filter: true, IsFilter: true}, readOnly: n.readOnly}
	impl := &filterImpl{passThrough: passThrough{n}, childName: childName, perms: perms}
	f.impl, f.io = impl, newGate(impl, n.readOnly)
	if err := g.assignName(f, name, t); err != nil {
		return nil, t.finish(err)
	}
	if err := checkMovable(n, nil); err != nil {
		return nil, t.finish(err)
	}
	resume := g.drain(topoOrder([]*Node{n}))
	defer resume()
	g.moveParents(n, f, nil, t)
	role := RoleBacking | RoleFiltered
	if childName != "backing" {
		role = RoleFilteredPrimary
	}
	g.attach(f, n, childName, role, t)
	return f, t.finish(g.refreshPerms([]*Node{f}, nil, t))
}

// AppendFilter opens a filter driver's node over n from opts (whose file
// names n) and gives it n's parents (bdrv_cbw_append). The node is
// implicit: it closes when its last parent leaves.
func (g *Graph) AppendFilter(n *Node, opts *schema.BlockdevOptions) (*Node, error) {
	if err := checkMovable(n, nil); err != nil {
		return nil, err
	}
	t := g.begin()
	f, err := g.open(opts, inherited{}, t)
	if err != nil {
		return nil, t.finish(err)
	}
	if err := g.refreshPerms([]*Node{f}, nil, t); err != nil {
		return nil, t.finish(err)
	}
	// Parents below the filter stay (should_update_child): moving them
	// would make a loop, as a fleecing target whose backing is n.
	keep := slices.Clone(f.children)
	for _, c := range n.parents {
		if pn, ok := c.Parent.(*Node); ok && pn != f && reaches(f, pn) {
			keep = append(keep, c)
		}
	}
	resume := g.drain(topoOrder([]*Node{n}))
	defer resume()
	g.moveParents(n, f, keep, t)
	return f, t.finish(g.refreshPerms([]*Node{f, n}, nil, t))
}

// RemoveFilter gives a filter's parents back to its child and closes it
// (bdrv_drop_filter).
func (g *Graph) RemoveFilter(f *Node) error {
	fi, ok := f.impl.(*filterImpl)
	var c *Child
	if ok {
		c = f.Child(fi.childName)
	}
	if c == nil {
		return schema.Errorf("'%s' is not a filter with a child", f.name)
	}
	child := c.Node
	if c.frozen {
		return frozenLinkError(c)
	}
	if err := checkMovable(f, nil); err != nil {
		return err
	}
	t := g.begin()
	resume := g.drain(topoOrder([]*Node{f}))
	g.moveParents(f, child, nil, t)
	var others []*Node
	for _, o := range slices.Clone(f.children) {
		g.detachEdge(o)
		t.onAbort(func() { g.reattach(o) })
		if o != c {
			others = append(others, o.Node)
		}
	}
	t.onCommit(func() { g.closeImpl(f) })
	g.unregister(f)
	t.onAbort(func() { g.nodes[f.name] = f; g.named.add(f) })
	err := t.finish(g.refreshPerms(append([]*Node{child}, others...), nil, t))
	resume()
	// The filter's other children (a copy-before-write target) close if
	// nothing else holds them, outside the drained section: closing
	// flushes them.
	for _, o := range others {
		if err == nil {
			g.ReleaseUnused(o)
		}
	}
	return err
}

// ReplaceNode makes every parent of from use to instead, except the edges
// in keep (bdrv_replace_node).
func (g *Graph) ReplaceNode(from, to *Node, keep []*Child) error {
	if err := checkMovable(from, keep); err != nil {
		return err
	}
	t := g.begin()
	resume := g.drain(topoOrder([]*Node{from, to}))
	defer resume()
	g.moveParents(from, to, keep, t)
	return t.finish(g.refreshPerms([]*Node{to, from}, nil, t))
}

// moveParents points the parents of from at to within t.
func (g *Graph) moveParents(from, to *Node, keep []*Child, t *tx) {
	for _, c := range slices.Clone(from.parents) {
		if slices.Contains(keep, c) {
			continue
		}
		g.retarget(c, to, t)
	}
}

// retarget points one edge at another node, telling a parent node's
// driver about a new backing.
func (g *Graph) retarget(c *Child, to *Node, t *tx) {
	old := c.Node
	if i := slices.Index(old.parents, c); i >= 0 {
		old.parents = slices.Delete(old.parents, i, i+1)
	}
	c.Node = to
	c.gate.set(to)
	to.parents = slices.Insert(to.parents, 0, c)
	t.onAbort(func() {
		if i := slices.Index(to.parents, c); i >= 0 {
			to.parents = slices.Delete(to.parents, i, i+1)
		}
		c.Node = old
		c.gate.set(old)
		old.parents = slices.Insert(old.parents, 0, c)
		g.notifyBacking(c)
	})
	g.notifyBacking(c)
}

func (g *Graph) notifyBacking(c *Child) {
	pn, ok := c.Parent.(*Node)
	if !ok {
		return
	}
	switch impl := pn.impl.(type) {
	case *filterImpl:
		if c.Name == impl.childName {
			impl.child = c.Node
		}
	case BackingUser:
		if c.Name == "backing" {
			impl.SetBacking(c.Node.io)
		}
	}
}

// SetBacking replaces n's backing child with b (nil detaches), closing
// nodes nobody holds any more, within one transaction.
func (g *Graph) SetBacking(n, b *Node) error {
	old := n.Child("backing")
	if old != nil && old.Node != b {
		if old.frozen {
			return frozenLinkError(old)
		}
		if err := checkReleasable(old.Node, old); err != nil {
			return err
		}
	}
	t := g.begin()
	var oldNode *Node
	if old != nil {
		oldNode = old.Node
	}
	switch {
	case old != nil && b != nil:
		g.retarget(old, b, t)
	case old != nil:
		g.detachEdge(old)
		t.onAbort(func() { g.reattach(old); g.notifyBacking(old) })
		if bu, ok := n.impl.(BackingUser); ok {
			bu.SetBacking(nil)
		}
	case b != nil:
		c := g.attach(n, b, "backing", RoleBacking, t)
		g.notifyBacking(c)
	}
	roots := []*Node{n}
	if oldNode != nil && oldNode != b {
		roots = append(roots, g.releaseIfUnused(oldNode, t)...)
	}
	return t.finish(g.refreshPerms(roots, nil, t))
}

// FilteredChild is the node a filter (a job's, or copy-before-write)
// passes requests to, or nil for other nodes.
func FilteredChild(f *Node) *Node {
	if fi, ok := f.impl.(*filterImpl); ok {
		if c := f.Child(fi.childName); c != nil {
			return c.Node
		}
	}
	return nil
}

// IsFilterOf reports whether f is a job filter (commit_top, mirror_top).
func IsFilterOf(f *Node) bool {
	_, ok := f.impl.(*filterImpl)
	return ok
}
