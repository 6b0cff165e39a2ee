package jobs

import (
	"blockd/blockcore"
	"blockd/schema"
)

// drive-mirror and drive-backup are blockdev-mirror and blockdev-backup
// with a target named by file name: the command creates the image (mode
// absolute-paths, the default) or opens it as it is (mode existing), in
// the source's format unless format says otherwise, as an implicit node
// that the job alone holds (qmp_drive_mirror, drive_backup_prepare).

// newImage is the image a drive-* command creates and opens; release
// closes it again when the command fails before a job holds it.
type newImage struct {
	g    *blockcore.Graph
	node *blockcore.Node
}

func (im *newImage) release() {
	if im.node != nil {
		im.g.ReleaseUnused(im.node)
	}
}

// defaultFormat is the target's format: as given, else the source's for
// a new image, else probed from the existing file ("").
func defaultFormat(format *string, mode schema.NewImageMode, bs *blockcore.Node) string {
	switch {
	case format != nil:
		return *format
	case mode == "existing":
		return ""
	}
	return bs.Driver().Name
}

// driveMirror is qmp_drive_mirror: the checks, the image creation and
// opening in the reference's order, then blockdev-mirror's common path.
func (m *Manager) driveMirror(a *schema.DriveMirrorArgs) error {
	bs, err := m.rootNode(a.Device)
	if err != nil {
		return err
	}
	// Before the target exists (bdrv_op_is_blocked, MIRROR_SOURCE).
	if b := jobBlocker(bs); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", bs.Name(), b)
	}
	mode := deref(a.Mode, "absolute-paths")
	format := defaultFormat(a.Format, mode, bs)
	sync := a.Sync
	targetBacking := bs.Backing()
	if targetBacking == nil && sync == "top" {
		sync = "full"
	}
	if sync == "none" {
		targetBacking = bs
	}
	size, err := bs.OwnerIO().Size()
	if err != nil {
		return schema.Errorf("bdrv_getlength failed: %s", errorText(err))
	}
	if a.Replaces != nil && a.NodeName == nil {
		return schema.Errorf("a node-name must be provided when replacing a named node of the graph")
	}
	backingMode := backingSource
	if mode == "existing" {
		backingMode = backingOpen
	}
	switch {
	case (sync == "full" || targetBacking == nil) && mode != "existing":
		err = blockcore.CreateImage(format, a.Target, size, "", "")
	case mode == "absolute-paths":
		err = blockcore.CreateImage(format, a.Target, size, blockcore.Filename(targetBacking), targetBacking.Driver().Name)
	}
	if err != nil {
		return err
	}
	target, err := m.g.OpenImage(blockcore.ImageOpen{Filename: a.Target, Format: format, NodeName: a.NodeName,
		NoBacking: true})
	if err != nil {
		return err
	}
	im := &newImage{g: m.g, node: target}
	defer im.release()
	o := mirrorOptions{
		jobID: deref(a.JobID, ""), replaces: a.Replaces, sync: sync, speed: deref(a.Speed, 0),
		bufSize:       deref(a.BufSize, 0),
		onSourceError: string(deref(a.OnSourceError, "report")),
		onTargetError: string(deref(a.OnTargetError, "report")),
		writeBlocking: deref(a.CopyMode, "background") == "write-blocking",
		autoFinalize:  deref(a.AutoFinalize, true), autoDismiss: deref(a.AutoDismiss, true),
		// A new image reads as zeroes already (bdrv_has_zero_init of the
		// file and qcow2 formats blockd creates).
		zeroTarget:  sync == "full" && mode == "existing",
		backingMode: backingMode,
	}
	if a.Granularity != nil {
		o.granularity = int64(*a.Granularity)
	}
	return m.mirrorCommon(bs, target, o)
}

// driveBackup is qmp_drive_backup, run as a one-action transaction as
// blockdev-backup is.
func (m *Manager) driveBackup(a *schema.DriveBackupArgs) error {
	return m.g.DoAction("drive-backup", a)
}

// driveBackupAction is drive_backup_prepare: for sync=top the new image's
// backing file is the source's backing, and it is opened with that
// chain; for sync=none the image is opened without one and the source
// itself becomes its backing, so that reading the target reads the
// point in time (image fleecing). The rest is blockdev-backup's action.
func (m *Manager) driveBackupAction(c *blockcore.TxContext, a *schema.DriveBackupArgs) (*blockcore.TxAction, error) {
	mode := deref(a.Mode, "absolute-paths")
	bs := m.g.Lookup(a.Device)
	if bs == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Device, a.Device)
	}
	format := defaultFormat(a.Format, mode, bs)
	if b := jobBlocker(bs); b != "" {
		return nil, schema.Errorf("Node '%s' is busy: %s", bs.Name(), b)
	}
	common := a.BackupCommon
	var source *blockcore.Node
	if common.Sync == "top" {
		if source = bs.Backing(); source == nil {
			common.Sync = "full"
		}
	}
	noBacking := false
	if common.Sync == "none" {
		source, noBacking = bs, true
	}
	size, err := bs.OwnerIO().Size()
	if err != nil {
		return nil, schema.Errorf("bdrv_getlength failed: %s", errorText(err))
	}
	if mode != "existing" {
		if source != nil {
			err = blockcore.CreateImage(format, a.Target, size, blockcore.Filename(source), source.Driver().Name)
		} else {
			err = blockcore.CreateImage(format, a.Target, size, "", "")
		}
		if err != nil {
			return nil, err
		}
	}
	target, err := m.g.OpenImage(blockcore.ImageOpen{Filename: a.Target, Format: format, NoBacking: noBacking, Unmap: true})
	if err != nil {
		return nil, err
	}
	im := &newImage{g: m.g, node: target}
	if noBacking {
		if err := m.g.SetBacking(target, bs); err != nil {
			im.release()
			return nil, err
		}
	}
	return m.backupTx(c, &common, bs, target, im.release)
}
