package jobs

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// mirror copies a live node to a target node and keeps the target in step
// with every write until completion, when the target takes the source's
// place (or that of `replaces`): QEMU's blockdev-mirror and drive-mirror
// (mirror_start_job / mirror_run / mirror_exit_common). It shares the
// mirror_top filter, the dirty tracking and the sync loop with active
// commit.
type mirror struct {
	commitSetup
	source, target *blockcore.Node
	toReplace      *blockcore.Node
	sync           schema.MirrorSyncMode
	gran           int64
	writeBlocking  bool
	dirty          *dirtyMap
	locks          *rangeLock
	stopObs        func()
	targetEdge     *blockcore.Child // the job's backend on the target
	zeroTarget     bool
	backingMode    mirrorBackingMode
	newBacking     *blockcore.Node // the target's backing after the switch (backingSource)
}

// mirrorBackingMode is what becomes of the target's backing chain when
// the job completes (QEMU's BlockMirrorBackingMode).
type mirrorBackingMode int

const (
	// backingLeave: the target keeps what it has (blockdev-mirror).
	backingLeave mirrorBackingMode = iota
	// backingSource: the target's backing becomes the source's base, or
	// the source itself for sync=none (drive-mirror's created images).
	backingSource
	// backingOpen: the chain the target's header names is opened
	// (drive-mirror mode=existing).
	backingOpen
)

// mirrorOptions are what blockdev-mirror and drive-mirror pass on to
// the job (mirror_start).
type mirrorOptions struct {
	jobID                        string
	replaces                     *string
	sync                         schema.MirrorSyncMode
	speed                        int64
	granularity                  int64
	bufSize                      int64
	onSourceError, onTargetError string
	filterName                   string
	writeBlocking                bool
	autoFinalize, autoDismiss    bool
	// zeroTarget makes sync=full write zeroes wherever the source reads
	// unallocated, for a target that may not read as zeroes already.
	zeroTarget  bool
	backingMode mirrorBackingMode
}

// rootNode is qmp_get_root_bs: a node without parents.
func (m *Manager) rootNode(name string) (*blockcore.Node, error) {
	bs := m.g.Lookup(name)
	if bs == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", name, name)
	}
	if !bs.IsRoot() {
		return nil, schema.Errorf("Need a root block node")
	}
	return bs, nil
}

// blockdevMirror is qmp_blockdev_mirror.
func (m *Manager) blockdevMirror(a *schema.BlockdevMirrorArgs) error {
	bs, err := m.rootNode(a.Device)
	if err != nil {
		return err
	}
	target := m.g.Lookup(a.Target)
	if target == nil {
		return schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Target, a.Target)
	}
	o := mirrorOptions{
		jobID: deref(a.JobID, ""), replaces: a.Replaces, sync: a.Sync, speed: deref(a.Speed, 0),
		bufSize: deref(a.BufSize, 0), filterName: deref(a.FilterNodeName, ""),
		onSourceError: string(deref(a.OnSourceError, "report")),
		onTargetError: string(deref(a.OnTargetError, "report")),
		writeBlocking: deref(a.CopyMode, "background") == "write-blocking",
		autoFinalize:  deref(a.AutoFinalize, true), autoDismiss: deref(a.AutoDismiss, true),
		zeroTarget: a.Sync == "full",
	}
	if a.Granularity != nil {
		o.granularity = int64(*a.Granularity)
	}
	return m.mirrorCommon(bs, target, o)
}

// mirrorCommon is blockdev_mirror_common and mirror_start: the checks
// shared by both commands, in QEMU's order.
func (m *Manager) mirrorCommon(bs, target *blockcore.Node, o mirrorOptions) error {
	if b := jobBlocker(bs); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", bs.Name(), b)
	}
	if b := blockcore.OpBlocker(target); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", target.Name(), b)
	}
	if o.granularity != 0 && (o.granularity < 512 || o.granularity > 64<<20) {
		return schema.Errorf("Parameter 'granularity' expects a value in range [512B, 64MB]")
	}
	if o.granularity&(o.granularity-1) != 0 {
		return schema.Errorf("Parameter 'granularity' expects a power of 2")
	}
	if bs.Backing() == nil && o.sync == "top" {
		o.sync = "full"
	}
	toReplace := bs
	if o.replaces != nil {
		n := m.g.Lookup(*o.replaces)
		if n == nil {
			return schema.Errorf("Failed to find node with node-name='%s'", *o.replaces)
		}
		if b := blockcore.OpBlocker(n); b != "" {
			return schema.Errorf("Node '%s' is busy: %s", n.Name(), b)
		}
		if !canReplace(bs, n) {
			return schema.Errorf("Cannot replace '%s' by a node mirrored from '%s', because it cannot be "+
				"guaranteed that doing so would not lead to an abrupt change of visible data", n.Name(), bs.Name())
		}
		toReplace = n
	}
	if o.sync == "incremental" || o.sync == "bitmap" {
		return schema.Errorf("Sync mode '%s' not supported", o.sync)
	}
	if o.bufSize < 0 {
		return schema.Errorf("Invalid parameter 'buf-size'")
	}
	if bs == target {
		return schema.Errorf("Can't mirror node into itself")
	}
	if o.granularity == 0 {
		o.granularity = dirtyGranularity // the target's cluster size in QEMU; 64 KiB for qcow2
	}
	return m.startMirror(bs, target, toReplace, o)
}

// canReplace is bdrv_recurse_can_replace: whether to may be replaced by
// a node holding bs's data without changing what any user of the graph
// sees. bs itself may; a filter asks about its filtered child; a quorum
// allows one of its own children that has no other parent, since the
// new node holds what the quorum shows (quorum_recurse_can_replace:
// repairing a broken child is what replaces is for).
func canReplace(bs, to *blockcore.Node) bool {
	switch {
	case bs == to:
		return true
	case bs.Driver().Name == "quorum":
		for _, c := range bs.Children() {
			if c.Node == to {
				ps := to.Parents()
				return len(ps) == 1 && ps[0] == c
			}
		}
		return false
	}
	if f := blockcore.FilteredChild(bs); f != nil {
		return canReplace(f, to)
	}
	if bs.Driver().IsFilter && bs.File() != nil {
		return canReplace(bs.File(), to)
	}
	return false
}

func (m *Manager) startMirror(bs, target, toReplace *blockcore.Node, o mirrorOptions) error {
	g := m.g
	// The filter comes before the job, so a bad filter-node-name fails
	// without job events (bdrv_new_open_driver before block_job_create).
	if o.filterName != "" && g.Lookup(o.filterName) != nil {
		return schema.Errorf("Duplicate nodes with node-name='%s'", o.filterName)
	}
	j, err := m.create(o.jobID, "mirror", o.speed, o.autoFinalize, o.autoDismiss)
	if err != nil {
		return err
	}
	j.onErrorPolicy, j.onTargetError = o.onSourceError, o.onTargetError
	mj := &mirror{commitSetup: commitSetup{m: m, job: j}, source: bs, target: target,
		toReplace: toReplace, sync: o.sync, gran: o.granularity, writeBlocking: o.writeBlocking,
		zeroTarget: o.zeroTarget, backingMode: o.backingMode}
	switch {
	case o.sync == "none":
		mj.newBacking = bs
	case o.sync == "top":
		mj.newBacking = bs.Backing()
	}
	if err := mj.setup(o.filterName); err != nil {
		mj.Clean()
		m.discard(j)
		return err
	}
	m.start(j, mj)
	if o.sync == "none" {
		// Nothing to copy: the reference's job reaches READY before the
		// command returns.
		m.ready(j)
	}
	return nil
}

func (mj *mirror) setup(filterName string) error {
	g, j := mj.m.g, mj.job
	user := jobUser{j}
	f, err := g.InsertFilterAbove(mj.source, "mirror_top", filterName, "backing", mirrorSourcePerms)
	if err != nil {
		return err
	}
	mj.filter = f
	rww := blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged
	if err := mj.hold(user, f, "main node", blockio.PermConsistentRead, rww); err != nil {
		return err
	}
	if err := mj.hold(user, mj.source, "source", 0, rww); err != nil {
		return err
	}
	if err := mj.hold(&backend{}, mj.target, "root", blockio.PermWrite, blockio.PermWriteUnchanged); err != nil {
		return err
	}
	mj.targetEdge = mj.edges[len(mj.edges)-1]
	if err := mj.hold(user, mj.target, "target", 0, permAll); err != nil {
		return err
	}
	size, _ := mj.source.IO().Size()
	mj.dirty = newDirtyMapGran(size, mj.gran)
	stopObs := blockcore.ObserveWrites(mj.source, mj.dirty.mark)
	hide := mj.source.AddBitmapInfo(func() schema.BlockDirtyInfo {
		return schema.BlockDirtyInfo{Count: mj.dirty.bytes(), Granularity: uint32(mj.gran), Recording: true}
	})
	mj.stopObs = func() { stopObs(); hide() }
	if mj.writeBlocking {
		mj.locks = newRangeLock()
		src, dst := mj.source.IO(), mj.target.IO()
		blockcore.SetWriteHook(f, func(off, n int64, write func() error) error {
			unlock := mj.locks.Lock(off, n)
			defer unlock()
			if err := write(); err != nil {
				return err
			}
			// The guest's write completes once the target has it too.
			return copyRangeNow(src, dst, off, n)
		})
	}
	for x := mj.source; x != nil; x = x.Backing() {
		if mj.sync == "top" && x != mj.source {
			break
		}
		mj.layers = append(mj.layers, x.IO())
	}
	return nil
}

// mirrorSourcePerms is bdrv_mirror_top_child_perm for a mirror: the
// filter passes its parents' needs through and shares write-unchanged.
func mirrorSourcePerms(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	const pass = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	return perm & pass, (shared & pass) | (blockio.PermAll &^ pass) | blockio.PermWriteUnchanged
}

// copyRangeNow copies [off, off+n) from src to dst in the caller's
// goroutine (a write-blocking guest write).
func copyRangeNow(src, dst blockio.Device, off, n int64) error {
	buf := make([]byte, min(n, chunkSize))
	for end := off + n; off < end; {
		l := min(int64(len(buf)), end-off)
		if err := src.ReadAt(buf[:l], off); err != nil {
			return err
		}
		if err := dst.WriteAt(buf[:l], off, 0); err != nil {
			return err
		}
		off += l
	}
	return nil
}

// Run is mirror_run: the sizes must match, the initial pass marks what
// the sync mode copies (and zeroes on the target what the source chain
// leaves unallocated, for sync=full), then the shared sync loop runs.
func (mj *mirror) Run(j *Job) error {
	src, dst := mj.source.IO(), mj.target.IO()
	size, err := src.Size()
	if err != nil {
		return err
	}
	tsize, err := dst.Size()
	if err != nil {
		return err
	}
	if size != tsize {
		return schema.Errorf("Source and target image have different sizes")
	}
	zeroing := mj.sync == "full" && mj.zeroTarget
	if zeroing {
		j.SetTotal(size)
	}
	if mj.sync != "none" {
		for off := int64(0); off < size; {
			if err := j.Checkpoint(); err != nil {
				return err
			}
			alloc, n, err := isAllocatedAbove(mj.layers, off, min(int64(chunkSize), size-off))
			if err != nil {
				return &ioError{"read", off, err}
			}
			switch {
			case alloc:
				mj.dirty.mark(off, n)
				if !zeroing {
					j.SetTotal(j.Current() + mj.dirty.bytes())
				}
			case zeroing:
				// The reference zeroes the whole target first and counts
				// it as progress.
				if err := zeroUnlessZero(dst, off, n); err != nil {
					return &ioError{"write", off, err}
				}
				j.Progress(n)
			}
			off += n
		}
	}
	return (&syncLoop{src: src, dst: dst, dirty: mj.dirty, locks: mj.locks}).run(j, size)
}

// zeroUnlessZero makes [off, off+n) of dst read as zeroes, leaving what
// already does alone so a fresh target stays sparse.
func zeroUnlessZero(dst blockio.Device, off, n int64) error {
	for end := off + n; off < end; {
		st, err := dst.BlockStatus(off, end-off)
		if err != nil {
			return err
		}
		l := min(st.Length, end-off)
		if st.Flags&blockio.StatusZero == 0 {
			if err := dst.WriteZeroes(off, l, blockio.MayUnmap); err != nil {
				return err
			}
		}
		off += l
	}
	return nil
}

// Prepare switches unless the job was cancelled after READY: with the
// source drained, the last dirty ranges reach the target, then the target
// takes the place of the node to replace for all its users.
func (mj *mirror) Prepare() error {
	if mj.job.Cancelled() {
		return nil
	}
	g := mj.m.g
	resume := g.DrainNodes(mj.filter, mj.source)
	defer resume()
	if err := finalCopy(mj.job, mj.source.Impl(), mj.target.IO(), mj.dirty); err != nil {
		return err
	}
	mj.stopObs()
	mj.stopObs = nil
	// The job writes no more: the target's new users may read and write
	// it as they did the source (mirror_exit_common drops the job's
	// permissions before the switch).
	if err := g.SetUserPerm(mj.targetEdge, 0, permAll); err != nil {
		return err
	}
	if err := mj.attachTargetBacking(); err != nil {
		return err
	}
	var keep []*blockcore.Child
	for _, p := range mj.toReplace.Parents() {
		if p.Parent == blockcore.Parent(mj.target) {
			keep = append(keep, p) // the target's own backing (sync=none)
		}
		if _, isJob := p.Parent.(jobUser); isJob {
			keep = append(keep, p)
		}
		if _, isBackend := p.Parent.(*backend); isBackend {
			keep = append(keep, p)
		}
	}
	return g.ReplaceNode(mj.toReplace, mj.target, keep)
}

// attachTargetBacking gives the target the backing chain its backing
// mode asks for, before it takes the source's place (mirror_exit_common).
func (mj *mirror) attachTargetBacking() error {
	g := mj.m.g
	switch mj.backingMode {
	case backingSource:
		if mj.target.Backing() != mj.newBacking {
			return g.SetBacking(mj.target, mj.newBacking)
		}
	case backingOpen:
		return g.OpenBackingFromHeader(mj.target)
	}
	return nil
}

func (mj *mirror) Abort() {
	if mj.stopObs != nil {
		mj.stopObs()
		mj.stopObs = nil
	}
}

// Clean is mirror_exit_common's cleanup: the job's edges go, then the
// filter, whose parents go back to the node below it (the target after
// a switch, the source otherwise).
func (mj *mirror) Clean() {
	mj.Abort()
	mj.teardown()
}

func (mj *mirror) CanComplete() bool          { return true }
func (mj *mirror) SoftCancelAfterReady() bool { return true }

func (mj *mirror) cancelRepliesFirst() {}
