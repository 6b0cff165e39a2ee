package jobs

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// activeCommit folds the active layer (and everything down to base) into
// base while it keeps being written: copy what is allocated, announce
// READY, keep base in step with every new write (dirty tracking) until
// completion, then make base take the active layer's place
// (commit_active_start / mirror).
type activeCommit struct {
	commitSetup
	top      *blockcore.Node
	dirty    *dirtyMap
	stopObs  func()
	switched bool
}

func (m *Manager) startActiveCommit(bs, base *blockcore.Node, o commitOptions) error {
	j, err := m.create(o.jobID, "commit", o.speed, o.autoFinalize, o.autoDismiss)
	if err != nil {
		return err
	}
	j.onErrorPolicy = o.onError
	c := &activeCommit{commitSetup: commitSetup{m: m, job: j, base: base}, top: bs}
	if err := c.setup(o.filterName); err != nil {
		c.Abort()
		c.Clean() // a failed start gives base its read-only mode back
		m.discard(j)
		return err
	}
	// Once started, base stays writable whatever the outcome, as in
	// QEMU's commit_active_start (only an intermediate commit restores).
	c.baseRO = false
	m.start(j, c)
	return nil
}

// mirrorTopPerms is bdrv_mirror_top_child_perm for a commit: a filter's
// pass-through, but without consistent-read (the job unshares it on every
// node above base) and always sharing write (or the job would block its
// own writes to base, which lies below).
func mirrorTopPerms(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	const pass = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	np := perm & pass &^ blockio.PermConsistentRead
	ns := (shared & pass) | (blockio.PermAll &^ pass) | blockio.PermWrite
	return np, ns
}

func (c *activeCommit) setup(filterName string) error {
	g, j := c.m.g, c.job
	user := jobUser{j}
	if err := c.makeBaseWritable(); err != nil {
		return err
	}
	f, err := g.InsertFilterAbove(c.top, "mirror_top", filterName, "backing", mirrorTopPerms)
	if err != nil {
		return err
	}
	c.filter = f
	if err := c.freeze(f); err != nil {
		return err
	}
	rww := blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged
	if err := c.hold(user, f, "main node", blockio.PermConsistentRead, rww); err != nil {
		return err
	}
	if err := c.hold(user, c.top, "source", 0, rww); err != nil {
		return err
	}
	// The target before the nodes in between, as mirror_start_job adds them.
	if err := c.hold(user, c.base, "target", 0, permAll); err != nil {
		return err
	}
	for x := c.top.Backing(); x != nil && x != c.base; x = x.Backing() {
		if err := c.hold(user, x, "intermediate node", 0, blockio.PermWrite|blockio.PermWriteUnchanged); err != nil {
			return err
		}
	}
	basePerm := blockio.PermWrite
	topSize, _ := c.top.IO().Size()
	if baseSize, _ := c.base.IO().Size(); baseSize < topSize {
		basePerm |= blockio.PermResize
	}
	if err := c.hold(&backend{}, c.base, "root", basePerm, rww); err != nil {
		return err
	}
	c.dirty = newDirtyMap(topSize)
	stopObs := blockcore.ObserveWrites(c.top, c.dirty.mark)
	hide := c.top.AddBitmapInfo(func() schema.BlockDirtyInfo {
		return schema.BlockDirtyInfo{Count: c.dirty.bytes(), Granularity: dirtyGranularity, Recording: true}
	})
	c.stopObs = func() { stopObs(); hide() }
	return nil
}

// Run copies the initial contents, announces READY and then follows new
// writes until completion or cancellation.
func (c *activeCommit) Run(j *Job) error {
	src, dst := c.top.IO(), c.base.IO()
	size, err := src.Size()
	if err != nil {
		return err
	}
	if baseSize, err := dst.Size(); err != nil {
		return err
	} else if baseSize < size {
		if err := dst.Truncate(size); err != nil {
			return err
		}
	}
	// What the chain above base defines is what must reach base.
	for off := int64(0); off < size; {
		alloc, n, err := isAllocatedAbove(c.layers, off, min(int64(chunkSize), size-off))
		if err != nil {
			return err
		}
		if alloc {
			c.dirty.mark(off, n)
		}
		off += n
	}
	return (&syncLoop{src: src, dst: dst, dirty: c.dirty}).run(j, size)
}

// hardCancelled reads the cancel kind decided on the owner.
func (m *Manager) hardCancelled(j *Job) bool {
	j.ctl.mu.Lock()
	defer j.ctl.mu.Unlock()
	return j.ctl.hard
}

// Prepare switches: with the active layer drained, the last dirty ranges
// are copied, then base takes the place of the active layer for all its
// users and the filter goes. A job cancelled after READY ends here
// without switching.
func (c *activeCommit) Prepare() error {
	if c.job.Cancelled() {
		return nil
	}
	g := c.m.g
	c.thaw() // the job changes its own chain now
	resume := g.DrainNodes(c.filter, c.top)
	defer resume()
	if err := finalCopy(c.job, c.top.Impl(), c.base.IO(), c.dirty); err != nil {
		return err
	}
	c.stopObs()
	c.stopObs = nil
	var keep []*blockcore.Child
	for _, p := range c.top.Parents() {
		if _, isJob := p.Parent.(jobUser); isJob {
			keep = append(keep, p)
		}
	}
	if err := g.ReplaceNode(c.top, c.base, keep); err != nil {
		return err
	}
	c.switched = true
	return nil
}

// Abort stops tracking writes; the active layer stays as it was, and
// Clean takes the filter away.
func (c *activeCommit) Abort() {
	if c.stopObs != nil {
		c.stopObs()
		c.stopObs = nil
	}
}

// Clean releases what the job held, in mirror_exit_common's order: the
// job's own edges first, then the filter, whose parents go back to the
// node below it (base after a switch, the active layer otherwise).
func (c *activeCommit) Clean() {
	if c.stopObs != nil {
		c.stopObs()
		c.stopObs = nil
	}
	c.teardown()
}

func (c *activeCommit) CanComplete() bool          { return true }
func (c *activeCommit) SoftCancelAfterReady() bool { return true }

// An active commit is a mirror job in the reference: its cancel is
// answered before the job ends.
func (c *activeCommit) cancelRepliesFirst() {}
