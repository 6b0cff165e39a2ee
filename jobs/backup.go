package jobs

import (
	"math"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// backup copies a point-in-time image of a node to a target while the
// node keeps being written: a copy-before-write filter above the source
// copies the old data of every cluster a guest write is about to change,
// and the job copies the rest (QEMU's backup_job_create / backup_run with
// block/copy-before-write.c). Both share one copy map: a cluster is copied
// once, by whichever gets to it first, under the range lock that keeps a
// guest write to it waiting meanwhile.
type backup struct {
	commitSetup
	source, target *blockcore.Node
	sync           schema.MirrorSyncMode
	cbw            *cbwState // the filter's: its copy map and range lock are the job's too
	// bitmap is frozen (with a successor recording) for the job's life
	// and synced at its end according to bitmapMode.
	bitmap     *blockcore.DirtyBitmap
	bitmapMode schema.BitmapSyncMode
	failed     bool // Abort ran
}

// backupCluster is the copy granularity, the filter's.
const backupCluster = cbwCluster

// backupOptions are what blockdev-backup, drive-backup and a transaction
// action pass on to startBackup.
type backupOptions struct {
	jobID                        string
	sync                         schema.MirrorSyncMode
	speed                        int64
	compress                     bool
	filterName                   string
	onSourceError, onTargetError string
	autoFinalize, autoDismiss    bool
	maxWorkers, maxChunk         int64
	bitmap                       *blockcore.DirtyBitmap // sync=bitmap's input, or the bitmap to sync
	bitmapMode                   schema.BitmapSyncMode
}

// blockdevBackup is qmp_blockdev_backup, run as the reference runs it:
// as a one-action transaction.
func (m *Manager) blockdevBackup(a *schema.BlockdevBackupArgs) error {
	return m.g.DoAction("blockdev-backup", a)
}

// backupAction is the blockdev-backup action of a transaction
// (blockdev_backup_prepare, _commit, _abort, _clean): prepare creates the
// job inside a drained section of the source, commit starts it (it
// pauses at once, the section still being open), abort ends the created
// job, clean ends the section. In completion-mode grouped the
// transaction's jobs form one group (jobTxn).
func (m *Manager) backupAction(c *blockcore.TxContext, a *schema.BlockdevBackupArgs) (*blockcore.TxAction, error) {
	bs := m.g.Lookup(a.Device)
	if bs == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Device, a.Device)
	}
	target := m.g.Lookup(a.Target)
	if target == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Target, a.Target)
	}
	return m.backupTx(c, &a.BackupCommon, bs, target, func() {})
}

// backupTx is the part of the blockdev-backup and drive-backup actions
// that follows the lookups; release runs at clean (drive-backup's image
// closes then unless the job holds it).
func (m *Manager) backupTx(c *blockcore.TxContext, common *schema.BackupCommon, bs, target *blockcore.Node,
	release func()) (*blockcore.TxAction, error) {
	var txn *jobTxn
	if c.Mode == "grouped" {
		txn = c.Shared(jobTxnKey{}, func() any { return &jobTxn{} }).(*jobTxn)
	}
	endQuiesce := m.g.Quiesce(bs)
	b, err := m.backupCommon(common, bs, target)
	if err != nil {
		return &blockcore.TxAction{Clean: func() { endQuiesce(); release() }}, err
	}
	j := b.job
	m.join(j, txn)
	// Created inside the section: the job sees it as one more drain.
	m.drainBegin(j)
	return &blockcore.TxAction{
		Commit: func() {
			m.start(j, b)
			if j.drained > 0 {
				m.pause(j)
			}
		},
		Abort: func() { m.abortCreated(j, b) },
		Clean: func() {
			m.drainEnd(j)
			endQuiesce()
			release()
		},
	}, nil
}

// backupCommon is do_backup_common: the job is created and set up, not
// started.
func (m *Manager) backupCommon(a *schema.BackupCommon, bs, target *blockcore.Node) (*backup, error) {
	sync := a.Sync
	var bm *blockcore.DirtyBitmap
	var mode schema.BitmapSyncMode
	if a.Bitmap != nil {
		if bm = bs.FindBitmap(*a.Bitmap); bm == nil {
			return nil, schema.Errorf("Bitmap '%s' could not be found", *a.Bitmap)
		}
		if sync == "incremental" {
			// incremental is bitmap with on-success.
			if a.BitmapMode != nil && *a.BitmapMode != "on-success" {
				return nil, schema.Errorf("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'")
			}
			sync, mode = "bitmap", "on-success"
		} else if a.BitmapMode == nil {
			return nil, schema.Errorf("Bitmap sync mode must be given when providing a bitmap")
		} else {
			mode = *a.BitmapMode
		}
		if err := bm.Check(blockcore.CheckAllowRO); err != nil {
			return nil, err
		}
		if sync == "none" {
			return nil, schema.Errorf("sync mode 'none' does not produce meaningful bitmap outputs")
		}
		if mode == "never" && sync != "bitmap" {
			return nil, schema.Errorf("Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '%s'", sync)
		}
	} else if a.BitmapMode != nil {
		return nil, schema.Errorf("Cannot specify bitmap sync mode without a bitmap")
	}
	o := backupOptions{bitmap: bm, bitmapMode: mode,
		jobID: deref(a.JobID, ""), sync: a.Sync, speed: deref(a.Speed, 0), compress: deref(a.Compress, false),
		filterName:    deref(a.FilterNodeName, ""),
		onSourceError: string(deref(a.OnSourceError, "report")),
		onTargetError: string(deref(a.OnTargetError, "report")),
		autoFinalize:  deref(a.AutoFinalize, true), autoDismiss: deref(a.AutoDismiss, true),
		maxWorkers: 64,
	}
	if p := a.XPerf; p != nil {
		o.maxWorkers = deref(p.MaxWorkers, 64)
		o.maxChunk = deref(p.MaxChunk, 0)
	}
	o.sync = sync
	if (sync == "bitmap" || sync == "incremental") && bm == nil {
		return nil, schema.Errorf("must provide a valid bitmap name for '%s' sync mode", sync)
	}
	return m.createBackup(bs, target, o)
}

// createBackup is backup_job_create.
func (m *Manager) createBackup(bs, target *blockcore.Node, o backupOptions) (*backup, error) {
	if bs == target {
		return nil, schema.Errorf("Source and target cannot be the same")
	}
	if o.compress {
		c, ok := target.Impl().(blockio.Compressor)
		if !ok {
			// The device name of a node without a backend is empty.
			return nil, schema.Errorf("Compression is not supported for this drive ")
		}
		if cs := c.ClusterSize(); cs > backupCluster {
			// Compressed writes are whole target clusters; the copy
			// goes in backupCluster pieces.
			return nil, schema.Errorf("Compressed backup needs a target cluster size of at most %d bytes (target has %d)",
				backupCluster, cs)
		}
	}
	if b := jobBlocker(bs); b != "" {
		return nil, schema.Errorf("Node '%s' is busy: %s", bs.Name(), b)
	}
	if b := jobBlocker(target); b != "" {
		return nil, schema.Errorf("Node '%s' is busy: %s", target.Name(), b)
	}
	if o.maxWorkers < 1 || o.maxWorkers > math.MaxInt32 {
		return nil, schema.Errorf("max-workers must be between 1 and %d", math.MaxInt32)
	}
	if o.maxChunk < 0 {
		return nil, schema.Errorf("max-chunk must be zero (which means no limit) or positive")
	}
	size, err := bs.OwnerIO().Size()
	if err != nil {
		return nil, schema.Errorf("Unable to get length for '%s'", bs.Name())
	}
	if tsize, err := target.OwnerIO().Size(); err != nil || tsize != size {
		return nil, schema.Errorf("Source and target image have different sizes")
	}
	if o.filterName != "" && m.g.Lookup(o.filterName) != nil {
		return nil, schema.Errorf("Could not create node: Duplicate nodes with node-name='%s'", o.filterName)
	}
	if o.maxChunk != 0 && o.maxChunk < backupCluster {
		return nil, schema.Errorf("Required max-chunk (%d) is less than backup cluster size (%d)", o.maxChunk, backupCluster)
	}
	j, err := m.create(o.jobID, "backup", o.speed, o.autoFinalize, o.autoDismiss)
	if err != nil {
		return nil, err
	}
	j.onErrorPolicy, j.onTargetError = o.onSourceError, o.onTargetError
	b := &backup{commitSetup: commitSetup{m: m, job: j}, source: bs, target: target, sync: o.sync}
	if o.bitmap != nil {
		// A bitmap the job will write must be writable.
		if o.bitmapMode != "never" {
			if err := o.bitmap.Check(blockcore.CheckDefault); err != nil {
				b.Clean()
				m.discard(j)
				return nil, err
			}
		}
		// Frozen before the filter exists, so that the filter's copy
		// bitmap is listed as the newer one (backup_job_create).
		if err := bs.CreateSuccessor(o.bitmap); err != nil {
			b.Clean()
			m.discard(j)
			return nil, err
		}
		b.bitmap, b.bitmapMode = o.bitmap, o.bitmapMode
	}
	if err := b.setup(o.filterName); err != nil {
		if b.bitmap != nil {
			// No backup happened: the bitmap is given back whole.
			bs.Reclaim(b.bitmap)
			b.bitmap = nil
		}
		b.Clean()
		m.discard(j)
		return nil, err
	}
	b.cbw.compress.Store(o.compress)
	switch {
	case b.sync == "bitmap":
		// Only what the bitmap says changed is copied (and saved before
		// a guest write).
		// The filter starts with every cluster to copy: only the
		// bitmap's stay (backup_init_bcs_bitmap).
		cm := b.cbw.copyMap
		cm.takeRange(0, size)
		b.bitmap.Bits().Extents(0, size, func(off, n int64) bool { cm.mark(off, n); return true })
		j.SetTotal(cm.bytes())
	default:
		j.SetTotal(size)
	}
	return b, nil
}

func (b *backup) setup(filterName string) error {
	g, j := b.m.g, b.job
	user := jobUser{j}
	src, tgt := b.source.Name(), b.target.Name()
	opts := &schema.BlockdevOptions{Driver: "copy-before-write", Cbw: &schema.BlockdevOptionsCbw{
		BlockdevOptionsGenericFormat: schema.BlockdevOptionsGenericFormat{File: schema.BlockdevRef{Reference: &src}},
		Target:                       schema.BlockdevRef{Reference: &tgt}}}
	if filterName != "" {
		opts.NodeName = &filterName
	}
	f, err := g.AppendFilter(b.source, opts)
	if err != nil {
		return err
	}
	b.filter = f
	b.cbw = cbwOf(f)
	b.cbw.job.Store(j)
	if err := b.hold(user, f, "main node", 0, permAll); err != nil {
		return err
	}
	// As the reference's job: an edge of its own on the target, so that
	// blockdev-del of the target names the job.
	return b.hold(user, b.target, "target", 0, permAll)
}

// Run is backup_run: for sync=top only what the source itself defines is
// copied; sync=none copies nothing itself and ends when cancelled.
func (b *backup) Run(j *Job) error {
	src, dst := b.source.IO(), b.target.IO()
	size, err := src.Size()
	if err != nil {
		return err
	}
	if b.sync == "none" {
		return j.ctl.idleUntilCancelled()
	}
	cm := b.cbw.copyMap
	if b.sync == "top" {
		// Only what the source itself defines is copied: the rest leaves
		// the copy map (block_copy_reset_unallocated), under the range
		// lock so that a write's copy and the check do not cross.
		layers := []blockio.Device{src}
		for off := int64(0); off < size; {
			if err := j.Checkpoint(); err != nil {
				return err
			}
			n := min(int64(chunkSize), size-off)
			unlock := b.cbw.locks.Lock(off, n)
			alloc, l, err := isAllocatedAbove(layers, off, n)
			if err == nil && !alloc {
				// Whole clusters only: a cluster partly defined is copied.
				if a, e := (off+backupCluster-1)&^(backupCluster-1), (off+l)&^(backupCluster-1); e > a {
					cm.takeRange(a, e-a)
				}
			}
			unlock()
			if err != nil {
				return &ioError{"read", off, err}
			}
			j.SetTotal(j.Current() + cm.bytes())
			off += l
		}
	}
	newCp := func() *copier {
		cp := newCopier(j, src, dst)
		cp.writeFlags = b.cbw.writeFlags()
		cp.locks = b.cbw.locks
		cp.claim, cp.unclaim = cm.takeRange, cm.mark
		return cp
	}
	cp := newCp()
	for off := int64(0); off < size; {
		if err := j.Checkpoint(); err != nil {
			cp.wait()
			return err
		}
		if err := cp.failed(); err != nil {
			cp.wait()
			goOn, from := j.onError(err, off)
			if !goOn {
				return err
			}
			off = min(off, from) &^ (backupCluster - 1)
			cp = newCp()
			continue
		}
		n := min(int64(chunkSize), size-off)
		// Only what is still to copy costs speed (a clean chunk costs
		// nothing), as the reference's block-copy accounts it.
		todo := cm.dirtyIn(off, n)
		if todo == 0 {
			off += n
			continue
		}
		cp.start(off, n)
		if err := j.Limit(todo); err != nil {
			cp.wait()
			return err
		}
		off += n
	}
	if err := cp.wait(); err != nil {
		if goOn, _ := j.onError(err, size); !goOn {
			return err
		}
	}
	return dst.Flush()
}

func (b *backup) Prepare() error { return nil }
func (b *backup) Abort()         { b.failed = true }

// Clean syncs the bitmap (backup_cleanup_sync_bitmap) and drops the
// filter (bdrv_cbw_drop) after the job's edges.
func (b *backup) Clean() {
	if b.cbw != nil {
		b.cbw.job.Store(nil)
	}
	if b.bitmap != nil {
		b.syncBitmap()
		b.bitmap = nil
	}
	b.teardown()
}

// syncBitmap ends the bitmap's freeze: on success (or always with
// bitmap-mode=always, but never with never) the successor, which holds
// the writes made during the backup, replaces it; otherwise the
// successor's bits go back into it. A failed backup with always also
// keeps what it did not copy.
func (b *backup) syncBitmap() {
	sync := (!b.failed || b.bitmapMode == "always") && b.bitmapMode != "never"
	bm := b.bitmap
	if sync {
		bm = b.source.Abdicate(bm)
	} else {
		bm = b.source.Reclaim(bm)
	}
	if b.failed && b.bitmapMode == "always" {
		cm := b.cbw.copyMap
		for _, sp := range cm.takeRange(0, cm.size()) {
			bm.Bits().Mark(sp.off, sp.n)
		}
	}
}

func (b *backup) CanComplete() bool          { return false }
func (b *backup) SoftCancelAfterReady() bool { return false }
