package blockcore

import (
	"blockd/schema"
)

// externalSnapshot is one blockdev-snapshot-sync in progress: the old
// node (drained from prepare to clean) and the overlay opened for it.
type externalSnapshot struct {
	g      *Graph
	old    *Node
	ov     *Node
	resume func()
}

// SnapshotSync is blockdev-snapshot-sync on its own.
func (g *Graph) SnapshotSync(a *schema.BlockdevSnapshotSyncArgs) error {
	t := g.begin()
	s, err := g.prepareSnapshotSync(a, t)
	err = t.finish(err)
	if s != nil {
		s.clean(err == nil)
	}
	return err
}

// prepareSnapshotSync is external_snapshot_prepare for
// blockdev-snapshot-sync: find and flush the node, create the overlay
// image (unless mode is existing) with the node's filename and format as
// its backing file, open it without its backing chain and append it.
// The overlay is held by nothing but the snapshot until clean: when the
// old node had no users, nothing holds it afterwards and it closes, as
// in QEMU, where the transaction's reference is the last one.
func (g *Graph) prepareSnapshotSync(a *schema.BlockdevSnapshotSyncArgs, t *tx) (*externalSnapshot, error) {
	old, err := g.LookupDeviceOrNode(a.Device, a.NodeName)
	if err != nil {
		return nil, err
	}
	// Flushed before the drain: the drained gate would hold the flush.
	if err := snapshotSource(old); err != nil {
		return nil, err
	}
	s := &externalSnapshot{g: g, old: old, resume: g.drain(topoOrder([]*Node{old}))}
	format := "qcow2"
	if a.Format != nil {
		format = *a.Format
	}
	if a.NodeName != nil && a.SnapshotNodeName == nil {
		return s, schema.Errorf("New overlay node-name missing")
	}
	if a.SnapshotNodeName != nil && g.nodes[*a.SnapshotNodeName] != nil {
		return s, schema.Errorf("New overlay node-name already in use")
	}
	if a.Mode == nil || *a.Mode != "existing" {
		// Through the driver: the drained gate would hold the call.
		size, err := old.impl.Size()
		if err != nil {
			return s, err
		}
		if err := CreateImage(format, a.SnapshotFile, size, Filename(old), old.drv.Name); err != nil {
			return s, err
		}
	}
	if _, known := LookupDriver(format); !known {
		return s, schema.Errorf("Unknown driver '%s'", format)
	}
	opts := imageOptions(format, a.SnapshotFile, a.SnapshotNodeName)
	ro := old.readOnly
	ov, err := g.open(opts, inherited{readOnly: &ro, noBacking: true}, t)
	if err != nil {
		return s, err
	}
	s.ov = ov
	if err := g.refreshPerms([]*Node{ov}, nil, t); err != nil {
		return s, err
	}
	if ov.drv.Filter {
		return s, schema.Errorf("Filters cannot be used as overlays")
	}
	return s, g.appendOverlayTx(old, ov, t)
}

// clean ends the snapshot after its transaction: the old node is
// resumed and, on success, reopened read-only; the overlay is released
// if nothing took it over.
func (s *externalSnapshot) clean(committed bool) {
	s.resume()
	if !committed {
		return
	}
	s.g.afterAppend(s.old)
	t := s.g.begin()
	s.g.releaseIfUnused(s.ov, t)
	if err := t.finish(s.g.refreshPerms([]*Node{s.old}, nil, t)); err != nil {
		s.g.log.Sugar().Warnf("releasing the unused overlay '%s': %v", s.ov.name, err)
	}
}
