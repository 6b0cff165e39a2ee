package blockcore

import (
	"time"

	"blockd/schema"
)

// InternalSnapshotter is implemented by formats with internal snapshots
// (qcow2). Infos are QMP's SnapshotInfo.
type InternalSnapshotter interface {
	FindSnapshotInfo(id, name string) (schema.SnapshotInfo, bool)
	TakeSnapshot(name string, date time.Time, vmClockNsec uint64) error
	DropSnapshot(id, name string) error
}

// SnapshotInternal is blockdev-snapshot-internal-sync on its own.
func (g *Graph) SnapshotInternal(device, name string) error {
	return g.DoAction("blockdev-snapshot-internal-sync", &schema.BlockdevSnapshotInternalArgs{Device: device, Name: name})
}

// prepareSnapshotInternal is internal_snapshot_prepare: checks in QEMU's
// order, then the snapshot on the drained node; abort deletes it again.
// The node's users are quiesced from here to clean. The VM clock of a
// storage daemon is the host's clock, as in qemu-storage-daemon.
func (g *Graph) prepareSnapshotInternal(device, name string) (*TxAction, error) {
	n, err := g.rootNode(device)
	if err != nil {
		return nil, err
	}
	endQuiesce := g.quiesce([]*Node{n})
	var created *schema.SnapshotInfo
	act := &TxAction{
		Abort: func() {
			if created == nil {
				return
			}
			resume := g.drain([]*Node{n})
			err := n.impl.(InternalSnapshotter).DropSnapshot(created.ID, created.Name)
			resume()
			if err != nil {
				g.log.Sugar().Errorf("Failed to delete snapshot with id '%s' and name '%s' on device '%s' in abort: %v",
					created.ID, created.Name, device, errnoText(err))
			}
		},
		Clean: endQuiesce,
	}
	if b := opBlocker(n); b != "" {
		return act, schema.Errorf("Node '%s' is busy: %s", n.name, b)
	}
	if n.readOnly {
		return act, schema.Errorf("Device '%s' is read only", device)
	}
	s, ok := n.impl.(InternalSnapshotter)
	if !ok {
		return act, schema.Errorf("Block format '%s' used by device '%s' does not support internal snapshots", n.drv.Name, device)
	}
	if name == "" {
		return act, schema.Errorf("Name is empty")
	}
	if _, exists := s.FindSnapshotInfo("", name); exists {
		return act, schema.Errorf("Snapshot with name '%s' already exists on device '%s'", name, device)
	}
	now := time.Now()
	resume := g.drain([]*Node{n})
	err = s.TakeSnapshot(name, now, uint64(now.UnixNano()/1000*1000))
	resume()
	if err != nil {
		return act, schema.Errorf("Failed to create snapshot '%s' on device '%s': %s", name, device, errnoText(err))
	}
	if info, ok := s.FindSnapshotInfo("", name); ok {
		created = &info
	}
	return act, nil
}

// DeleteSnapshotInternal is blockdev-snapshot-delete-internal-sync.
func (g *Graph) DeleteSnapshotInternal(device string, id, name *string) (*schema.SnapshotInfo, error) {
	n, err := g.rootNode(device)
	if err != nil {
		return nil, err
	}
	if id == nil && name == nil {
		return nil, schema.Errorf("Name or id must be provided")
	}
	if b := opBlocker(n); b != "" {
		return nil, schema.Errorf("Node '%s' is busy: %s", n.name, b)
	}
	s, ok := n.impl.(InternalSnapshotter)
	if !ok {
		return nil, schema.Errorf("Failed to get a snapshot list: Operation not supported")
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	info, found := s.FindSnapshotInfo(str(id), str(name))
	if !found {
		null := func(p *string) string {
			if p == nil {
				return "null"
			}
			return *p
		}
		return nil, schema.Errorf("Snapshot with id '%s' and name '%s' does not exist on device '%s'", null(id), null(name), device)
	}
	resume := g.drain([]*Node{n})
	err = s.DropSnapshot(str(id), str(name))
	resume()
	if err != nil {
		return nil, schema.Errorf("%s", errnoText(err))
	}
	return &info, nil
}
