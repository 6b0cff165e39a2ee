package blockcore

import (
	"blockd/schema"
)

// externalSnapshot is one blockdev-snapshot or blockdev-snapshot-sync in
// a transaction: the old node (quiesced and drained from prepare to
// clean), the overlay and the graph changes that append it, which the
// transaction commits or undoes.
type externalSnapshot struct {
	g          *Graph
	old        *Node
	ov         *Node // opened by blockdev-snapshot-sync: released in clean if unused
	t          *tx
	resume     func()
	endQuiesce func()
}

// action returns the snapshot's finishing steps (external_snapshot_commit,
// _abort and _clean).
func (s *externalSnapshot) action() *TxAction {
	committed := false
	return &TxAction{
		Commit: func() { committed = true; _ = s.t.finish(nil) },
		Abort:  func() { _ = s.t.finish(errAborted) },
		Clean:  func() { s.clean(committed) },
	}
}

// SnapshotSync is blockdev-snapshot-sync on its own.
func (g *Graph) SnapshotSync(a *schema.BlockdevSnapshotSyncArgs) error {
	return g.DoAction("blockdev-snapshot-sync", a)
}

// prepareSnapshotSyncAction is external_snapshot_prepare for
// blockdev-snapshot-sync: find and flush the node, create the overlay
// image (unless mode is existing) with the node's filename and format as
// its backing file, open it without its backing chain and append it.
// The overlay is held by nothing but the snapshot until clean: when the
// old node had no users, nothing holds it afterwards and it closes, as
// in QEMU, where the transaction's reference is the last one. An overlay
// file created before a later action fails stays on disk, as in QEMU.
func (g *Graph) prepareSnapshotSyncAction(a *schema.BlockdevSnapshotSyncArgs) (*TxAction, error) {
	old, err := g.LookupDeviceOrNode(a.Device, a.NodeName)
	if err != nil {
		return nil, err
	}
	s := &externalSnapshot{g: g, old: old, t: g.begin()}
	s.endQuiesce = g.quiesce([]*Node{old})
	// Flushed before the drain: the drained gate would hold the flush.
	if err := snapshotSource(old); err != nil {
		return s.action(), err
	}
	s.resume = g.drain(topoOrder([]*Node{old}))
	return s.action(), g.prepareSnapshotSync(a, s)
}

func (g *Graph) prepareSnapshotSync(a *schema.BlockdevSnapshotSyncArgs, s *externalSnapshot) error {
	old, t := s.old, s.t
	format := "qcow2"
	if a.Format != nil {
		format = *a.Format
	}
	if a.NodeName != nil && a.SnapshotNodeName == nil {
		return schema.Errorf("New overlay node-name missing")
	}
	if a.SnapshotNodeName != nil && g.nodes[*a.SnapshotNodeName] != nil {
		return schema.Errorf("New overlay node-name already in use")
	}
	if a.Mode == nil || *a.Mode != "existing" {
		// Through the driver: the drained gate would hold the call.
		size, err := old.impl.Size()
		if err != nil {
			return err
		}
		if err := CreateImage(format, a.SnapshotFile, size, Filename(old), old.drv.Name); err != nil {
			return err
		}
	}
	if _, known := LookupDriver(format); !known {
		return schema.Errorf("Unknown driver '%s'", format)
	}
	opts := imageOptions(format, a.SnapshotFile, a.SnapshotNodeName)
	ro := old.readOnly
	ov, err := g.open(opts, inherited{readOnly: &ro, noBacking: true}, t)
	if err != nil {
		return err
	}
	s.ov = ov
	if err := g.refreshPerms([]*Node{ov}, nil, t); err != nil {
		return err
	}
	if ov.drv.Filter {
		return schema.Errorf("Filters cannot be used as overlays")
	}
	return g.appendOverlayTx(old, ov, t)
}

// clean ends the snapshot after its transaction: the old node is
// resumed and, on success, reopened read-only; an overlay the snapshot
// opened is released if nothing took it over.
func (s *externalSnapshot) clean(committed bool) {
	if s.resume != nil {
		s.resume()
	}
	s.endQuiesce()
	if !committed {
		return
	}
	s.g.afterAppend(s.old)
	if s.ov == nil {
		return
	}
	t := s.g.begin()
	s.g.releaseIfUnused(s.ov, t)
	if err := t.finish(s.g.refreshPerms([]*Node{s.old}, nil, t)); err != nil {
		s.g.log.Sugar().Warnf("releasing the unused overlay '%s': %v", s.ov.name, err)
	}
}
