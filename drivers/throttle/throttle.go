// Package throttle owns the throttle filter driver: every read, write,
// zero write and discard through the node waits until its throttle group
// (a throttle-group object) lets it through, so that all members of the
// group together stay within the group's limits. Flushes and block
// status are not throttled. The node passes its child through as a
// filter, with the filter's default permissions.
package throttle

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/internal/throttle"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "throttle", Filter: true, IsFilter: true, Open: open})
}

// groups is what the throttle driver needs of the object registry.
type groups interface {
	ThrottleGroup(id string) (g *throttle.Group, release func(), err error)
}

// node is one open throttle node.
type node struct {
	blockio.Forward // flushes, block status, size
	group           string
	member          *throttle.Member
	release         func()
	objects         blockcore.ObjectStore // the registry the group came from, for reopen
	drained         int                   // drained sections in progress (owner goroutine)
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Throttle
	reg, _ := oc.Graph.Objects().(groups)
	if reg == nil {
		return nil, schema.Errorf("Throttle group '%s' does not exist", o.ThrottleGroup)
	}
	g, release, err := reg.ThrottleGroup(o.ThrottleGroup)
	if err != nil {
		return nil, err
	}
	return &node{Forward: blockio.Forward{Child: oc.File.Node.IO()}, group: o.ThrottleGroup, member: g.Join(), release: release,
		objects: oc.Graph.Objects()}, nil
}

func (n *node) ReadAt(p []byte, off int64) error {
	n.member.Wait(throttle.Read, uint64(len(p)))
	return n.Child.ReadAt(p, off)
}

func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	n.member.Wait(throttle.Write, uint64(len(p)))
	return n.Child.WriteAt(p, off, f)
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	n.member.Wait(throttle.Write, uint64(length))
	return n.Child.WriteZeroes(off, length, f)
}

func (n *node) Discard(off, length int64) error {
	n.member.Wait(throttle.Write, uint64(length))
	return n.Child.Discard(off, length)
}

// Close leaves the group, which object-del may then delete.
func (n *node) Close() error {
	n.release()
	return nil
}

// DrainBegin lets the node's waiting requests go: a drained section does
// not wait for the limits.
func (n *node) DrainBegin() { n.drained++; n.member.DrainBegin() }
func (n *node) DrainEnd()   { n.drained--; n.member.DrainEnd() }

// StrongOptions: the group is part of what the node is, so json:
// filenames name it (throttle_strong_runtime_opts).
func (n *node) StrongOptions() map[string]any {
	return map[string]any{"throttle-group": n.group}
}

// ReopenPrepare is throttle_reopen_prepare: the node may move to another
// group, which must exist; the commit leaves the old group (object-del
// may then delete it) and joins the new one.
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	name, _ := rs.String("throttle-group")
	reg, _ := n.objects.(groups)
	if reg == nil {
		return nil, nil, schema.Errorf("Throttle group '%s' does not exist", name)
	}
	g, release, err := reg.ThrottleGroup(name)
	if err != nil {
		return nil, nil, err
	}
	commit = func() {
		n.release()
		m := g.Join()
		// The commit runs drained: the new member is in the same
		// drained sections as the old one, which end on it.
		for range n.drained {
			m.DrainBegin()
		}
		n.group, n.member, n.release = name, m, release
	}
	return commit, release, nil
}
