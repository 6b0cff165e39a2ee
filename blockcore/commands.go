package blockcore

import (
	"context"
	"reflect"

	"blockd/schema"
)

// RegisterCommands declares the graph's QMP commands. Handlers run on the
// owner goroutine (the registry is called from Owner.Execute).
func (g *Graph) RegisterCommands(r *schema.Registry) {
	schema.Define(r, "blockdev-add", func(_ context.Context, a *schema.BlockdevOptions) (schema.Empty, error) {
		return schema.Empty{}, g.Add(a)
	})
	g.registerReopen(r)
	schema.Define(r, "blockdev-del", func(_ context.Context, a *schema.BlockdevDelArgs) (schema.Empty, error) {
		return schema.Empty{}, g.Delete(a.NodeName)
	})
	schema.Define(r, "blockdev-snapshot", func(_ context.Context, a *schema.BlockdevSnapshotArgs) (schema.Empty, error) {
		return schema.Empty{}, g.Snapshot(a.Node, a.Overlay)
	})
	schema.Define(r, "blockdev-snapshot-sync", func(_ context.Context, a *schema.BlockdevSnapshotSyncArgs) (schema.Empty, error) {
		return schema.Empty{}, g.SnapshotSync(a)
	})
	schema.Define(r, "change-backing-file", func(_ context.Context, a *schema.ChangeBackingFileArgs) (schema.Empty, error) {
		return schema.Empty{}, g.ChangeBackingFile(a.Device, a.ImageNodeName, a.BackingFile)
	})
	schema.Define(r, "blockdev-snapshot-internal-sync", func(_ context.Context, a *schema.BlockdevSnapshotInternalArgs) (schema.Empty, error) {
		return schema.Empty{}, g.SnapshotInternal(a.Device, a.Name)
	})
	schema.Define(r, "blockdev-snapshot-delete-internal-sync", func(_ context.Context, a *schema.BlockdevSnapshotDeleteInternalArgs) (*schema.SnapshotInfo, error) {
		return g.DeleteSnapshotInternal(a.Device, a.ID, a.Name)
	})
	schema.Define(r, "transaction", func(_ context.Context, a *schema.TransactionArgs) (schema.Empty, error) {
		return schema.Empty{}, g.Transaction(a)
	})
	schema.Define(r, "block-set-write-threshold", func(_ context.Context, a *schema.BlockSetWriteThresholdArgs) (schema.Empty, error) {
		return schema.Empty{}, g.SetWriteThreshold(a.NodeName, a.WriteThreshold)
	})
	g.registerBitmapCommands(r)
	r.AddEvent("BLOCK_WRITE_THRESHOLD", reflect.TypeFor[schema.BlockWriteThreshold]())
	schema.Define(r, "block_resize", func(_ context.Context, a *schema.BlockResizeArgs) (schema.Empty, error) {
		return schema.Empty{}, g.Resize(a.Device, a.NodeName, a.Size)
	})
	schema.Define(r, "query-named-block-nodes", func(_ context.Context, a *schema.QueryNamedBlockNodesArgs) ([]schema.BlockDeviceInfo, error) {
		flat := a.Flat != nil && *a.Flat
		out := []schema.BlockDeviceInfo{}
		for _, n := range g.Nodes() {
			out = append(out, g.DeviceInfo(n, flat))
		}
		return out, nil
	})
	schema.Define(r, "query-block", func(context.Context, *schema.NoArgs) ([]schema.BlockInfo, error) {
		// No named block backends in a storage daemon (blockstats.go).
		return []schema.BlockInfo{}, nil
	})
	schema.Define(r, "query-blockstats", func(_ context.Context, a *schema.QueryBlockstatsArgs) ([]schema.BlockStats, error) {
		return g.BlockStats(a.QueryNodes != nil && *a.QueryNodes), nil
	})
	schema.Define(r, "x-debug-query-block-graph", func(context.Context, *schema.NoArgs) (*schema.XDbgBlockGraph, error) {
		gr := g.DebugGraph()
		return &gr, nil
	}, schema.Features("unstable"))
	r.AddEvent("BLOCK_IMAGE_CORRUPTED", reflect.TypeFor[schema.BlockImageCorrupted]())
	schema.Define(r, "x-blockdev-change", func(_ context.Context, a *schema.XBlockdevChangeArgs) (schema.Empty, error) {
		return schema.Empty{}, g.BlockdevChange(a)
	}, schema.Features("unstable"))
	r.AddEvent("QUORUM_FAILURE", reflect.TypeFor[schema.QuorumFailure]())
	r.AddEvent("QUORUM_REPORT_BAD", reflect.TypeFor[schema.QuorumReportBad]())
	// Declared as in qemu-storage-daemon's schema, never sent (schema.BlockIOError).
	r.AddEvent("BLOCK_IO_ERROR", reflect.TypeFor[schema.BlockIOError]())
}
