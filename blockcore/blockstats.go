package blockcore

import (
	"blockd/schema"
)

// query-block and query-blockstats answer as qemu-storage-daemon 7.2
// does. Both list named block backends (devices), and a storage daemon has
// none: its exports' backends are anonymous, so both lists are empty
// whatever the exports do. With query-nodes, query-blockstats lists every
// named node, oldest first, with the node-level statistics QEMU keeps:
// only wr_highest_offset moves (the request counters are kept per
// backend), a file node adds the discards it passed on, and a node's
// "file" child is its parent entry. The full per-node counters of the
// data path (IOStats) are the operators' metrics.

// BlockStats is query-blockstats.
func (g *Graph) BlockStats(queryNodes bool) []schema.BlockStats {
	out := []schema.BlockStats{}
	if !queryNodes {
		return out
	}
	for n := range g.named.all() {
		out = append(out, nodeStats(n))
	}
	return out
}

// nodeStats is bdrv_query_bds_stats at node level.
func nodeStats(n *Node) schema.BlockStats {
	snap := n.Stats().Snapshot()
	name := n.name
	s := schema.BlockStats{
		NodeName: &name,
		Stats: schema.BlockDeviceStats{
			WrHighestOffset: snap.WrHighestOffset,
			TimedStats:      []schema.BlockDeviceTimedStats{},
		},
	}
	if n.drv.Name == "file" {
		d := snap.Ops[OpDiscard]
		s.DriverSpecific = &schema.BlockStatsSpecific{Driver: "file", File: &schema.BlockStatsSpecificFile{
			DiscardNbOk: d.Ops - d.Failed, DiscardNbFailed: d.Failed, DiscardBytesOk: d.Bytes}}
	}
	if c := n.Child("file"); c != nil {
		p := nodeStats(c.Node)
		s.Parent = &p
	}
	return s
}
