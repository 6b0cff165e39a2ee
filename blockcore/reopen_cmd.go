package blockcore

import (
	"context"

	"blockd/schema"
)

// registerReopen declares blockdev-reopen and its predecessor
// x-blockdev-reopen, one implementation behind both.
func (g *Graph) registerReopen(r *schema.Registry) {
	schema.Define(r, "blockdev-reopen", func(_ context.Context, a *schema.BlockdevReopenArgs) (schema.Empty, error) {
		list := make([]*schema.BlockdevOptions, len(a.Options))
		for i := range a.Options {
			list[i] = &a.Options[i]
		}
		return schema.Empty{}, g.Reopen(list)
	})
	schema.Define(r, "x-blockdev-reopen", func(_ context.Context, a *schema.BlockdevOptions) (schema.Empty, error) {
		return schema.Empty{}, g.Reopen([]*schema.BlockdevOptions{a})
	}, schema.Features("unstable"))
}
