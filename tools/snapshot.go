package tools

import (
	"fmt"
	"time"

	"blockd/blockio"
	"blockd/drivers/qcow2"
)

// snapshotter is the qcow2 engine's internal snapshot interface, as the
// graph node exposes it.
type snapshotter interface {
	Snapshots() []qcow2.SnapshotInfo
	CreateSnapshot(name string, dateSec, dateNsec uint32, vmClockNsec, icount uint64) (qcow2.SnapshotInfo, error)
	DeleteSnapshot(id, name string) (qcow2.SnapshotInfo, error)
}

// snapshotApplier reverts the active layer to a snapshot (qcow2).
type snapshotApplier interface {
	ApplySnapshot(idOrName string) (qcow2.SnapshotInfo, error)
}

// snapshot is `blockd img snapshot [-l | -a name | -c name | -d name]
// [-f fmt] [-U] [-q] filename`, after qemu-img snapshot.
func (t *tool) snapshot(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "la:c:d:f:hqU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "force-share": {'U', false},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, name string
	var action byte
	var force bool
	for _, o := range opts {
		switch o.key {
		case 'l', 'a', 'c', 'd':
			if action != 0 {
				t.usageErrorf("Cannot mix '-l', '-a', '-c', '-d'")
				return 1
			}
			action, name = byte(o.key), o.arg
		case 'f':
			format = o.arg
		case 'U':
			force = true
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		}
	}
	if action == 0 {
		action = 'l'
	}
	filename, ok := t.oneImage(operands)
	if !ok {
		return 1
	}
	o := openOptions{filename: filename, format: format, noBacking: true, shared: blockio.PermAll}
	if action == 'l' {
		o.readOnly, o.forceShare, o.perm = true, force, blockio.PermConsistentRead
	} else {
		o.perm = blockio.PermConsistentRead | blockio.PermWrite
		o.shared = blockio.PermAll &^ blockio.PermWrite
	}
	im, err := openImage(o, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	var s snapshotter
	_ = im.do(func() error { s, _ = im.node.Impl().(snapshotter); return nil })
	switch {
	case s == nil && action == 'l':
		return 0 // qemu-img lists nothing for formats without snapshots
	case s == nil && action == 'a':
		t.errorf("Could not apply snapshot '%s': Block driver does not support snapshots", name)
		return 1
	case s == nil:
		t.errorf("Could not create snapshot '%s': -95 (Operation not supported)", name)
		return 1
	case action == 'l':
		t.printSnapshots(s.Snapshots())
	case action == 'c':
		now := time.Now()
		// qemu-img records no VM clock and an icount of 0.
		if _, err := s.CreateSnapshot(name, uint32(now.Unix()), uint32(now.Nanosecond()/1000*1000), 0, 0); err != nil {
			t.errorf("Could not create snapshot '%s': %s", name, errText(err))
			return 1
		}
	case action == 'a':
		a, ok := s.(snapshotApplier)
		if !ok {
			t.errorf("Could not apply snapshot '%s': Block driver does not support snapshots", name)
			return 1
		}
		if _, err := a.ApplySnapshot(name); err == qcow2.ErrSnapshotNotFound {
			t.errorf("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory", name)
			return 1
		} else if err != nil {
			t.errorf("Could not apply snapshot '%s': Failed to load snapshot: %s", name, errText(err))
			return 1
		}
	case action == 'd':
		if _, err := s.DeleteSnapshot("", name); err == qcow2.ErrSnapshotNotFound {
			t.errorf("Could not delete snapshot '%s': snapshot not found", name)
			return 1
		} else if err != nil {
			t.errorf("Could not delete snapshot '%s': %s", name, errText(err))
			return 1
		}
	}
	return 0
}

// printSnapshots prints the list as qemu-img snapshot -l does
// (bdrv_snapshot_dump).
func (t *tool) printSnapshots(list []qcow2.SnapshotInfo) {
	if len(list) == 0 {
		return
	}
	t.printf("Snapshot list:\n")
	t.printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, sn := range list {
		date := time.Unix(int64(sn.DateSec), 0).Format("2006-01-02 15:04:05")
		secs := sn.VMClockNsec / 1e9
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, (secs/60)%60, secs%60, (sn.VMClockNsec/1e6)%1000)
		icount := ""
		if sn.HasIcount {
			icount = fmt.Sprint(int64(sn.Icount))
		}
		t.printf("%-9s %-16s %8s%20s%13s%11s\n", sn.ID, sn.Name, sizeToStr(int64(sn.VMStateSize)), date, clock, icount)
	}
}
