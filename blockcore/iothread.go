package blockcore

import (
	"context"

	"blockd/schema"
)

// RegisterIothreadCommand declares x-blockdev-set-iothread with the
// reference's checks; isIothread says whether an id names an iothread
// object. A node's requests run on their callers' goroutines whatever
// iothread it is given, so an accepted move changes nothing else.
func (g *Graph) RegisterIothreadCommand(r *schema.Registry, isIothread func(id string) bool) {
	schema.Define(r, "x-blockdev-set-iothread", func(_ context.Context, a *schema.XBlockdevSetIothreadArgs) (schema.Empty, error) {
		n := g.Lookup(a.NodeName)
		if n == nil {
			return schema.Empty{}, schema.Errorf("Failed to find node with node-name='%s'", a.NodeName)
		}
		// The reference's guard against moving a node that a device,
		// an export or a job may be using.
		if (a.Force == nil || !*a.Force) && hasBackend(n) {
			return schema.Empty{}, schema.Errorf("Node %s is associated with a BlockBackend and could be in use (use force=true to override this check)", a.NodeName)
		}
		if s := a.Iothread.S; s != nil && !isIothread(*s) {
			return schema.Empty{}, schema.Errorf("Cannot find iothread %s", *s)
		}
		return schema.Empty{}, nil
	}, schema.Features("unstable"))
}
