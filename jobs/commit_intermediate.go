package jobs

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// intermediateCommit folds top (and what lies between it and base) into
// base while the active layer above stays in use: QEMU's commit_start /
// commit_run / commit_prepare.
type intermediateCommit struct {
	commitSetup
	top, overlay *blockcore.Node
	backingFile  *string
}

func (m *Manager) startCommit(bs, top, base *blockcore.Node, o commitOptions) error {
	j, err := m.create(o.jobID, "commit", o.speed, o.autoFinalize, o.autoDismiss)
	if err != nil {
		return err
	}
	j.onErrorPolicy = o.onError
	c := &intermediateCommit{commitSetup: commitSetup{m: m, job: j, base: base}, top: top,
		backingFile: o.backingFile}
	c.overlay = overlayOf(bs, top)
	if err := c.setup(bs, o.filterName); err != nil {
		c.Abort()
		c.Clean()
		m.discard(j)
		return err
	}
	m.start(j, c)
	return nil
}

// overlayOf is bdrv_find_overlay: the node whose backing is top.
func overlayOf(active, top *blockcore.Node) *blockcore.Node {
	for x := active; x != nil; x = x.Backing() {
		if x.Backing() == top {
			return x
		}
	}
	return nil
}

func (c *intermediateCommit) setup(bs *blockcore.Node, filterName string) error {
	g, j := c.m.g, c.job
	user := jobUser{j}
	if err := c.hold(user, bs, "main node", 0, permAll); err != nil {
		return err
	}
	if err := c.makeBaseWritable(); err != nil {
		return err
	}
	// The overlay's header will name base when the job completes.
	if c.overlay.ReadOnly() {
		if err := g.SetReadOnly(c.overlay, false); err != nil {
			return err
		}
	}
	f, err := g.InsertFilterAbove(c.top, "commit_top", filterName, "backing",
		func(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) { return 0, permAll })
	if err != nil {
		return err
	}
	c.filter = f
	if err := c.freeze(f); err != nil {
		return err
	}
	for x := c.top; x != nil && x != c.base; x = x.Backing() {
		if err := c.hold(user, x, "intermediate node", 0, blockio.PermWrite|blockio.PermWriteUnchanged); err != nil {
			return err
		}
	}
	if err := c.hold(user, c.base, "base", 0, permAll); err != nil {
		return err
	}
	// The base's backend first, as commit_start creates them.
	basePerm := blockio.PermConsistentRead | blockio.PermWrite
	topSize, _ := c.top.IO().Size()
	if baseSize, _ := c.base.IO().Size(); baseSize < topSize {
		basePerm |= blockio.PermResize
	}
	if err := c.hold(&backend{}, c.base, "root", basePerm, blockio.PermConsistentRead|blockio.PermWriteUnchanged); err != nil {
		return err
	}
	return c.hold(&backend{}, c.top, "root", 0, permAll)
}

// Run is commit_run: grow base if needed, then copy every range that is
// allocated above base.
func (c *intermediateCommit) Run(j *Job) error {
	src, dst := c.top.IO(), c.base.IO()
	size, err := src.Size()
	if err != nil {
		return err
	}
	j.SetTotal(size)
	if baseSize, err := dst.Size(); err != nil {
		return err
	} else if baseSize < size {
		if err := dst.Truncate(size); err != nil {
			return err
		}
	}
	cp := newCopier(j, src, dst)
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
			off = min(off, from)
			cp = newCopier(j, src, dst)
			continue
		}
		n := min(int64(chunkSize), size-off)
		alloc, pnum, err := isAllocatedAbove(c.layers, off, n)
		if err != nil {
			cp.wait()
			return err
		}
		if alloc {
			cp.start(off, pnum)
			if err := j.Limit(pnum); err != nil {
				cp.wait()
				return err
			}
		} else {
			j.Progress(pnum)
		}
		off += pnum
	}
	if err := cp.wait(); err != nil {
		if goOn, _ := j.onError(err, size); !goOn {
			return err
		}
	}
	return dst.Flush()
}

// backingFileWriter is implemented by formats that record their backing
// file in the image (qcow2).
type backingFileWriter interface {
	SetBackingFile(name, format string) error
}

// Prepare is commit_prepare / bdrv_drop_intermediate: the overlay's header
// names base, then the overlay uses base as its backing, which drops the
// filter and the nodes between it and base that nobody else holds.
func (c *intermediateCommit) Prepare() error {
	g := c.m.g
	c.thaw() // the job changes its own chain now
	name := g.Filename(c.base)
	if c.backingFile != nil {
		name = *c.backingFile
	}
	if w, ok := c.overlay.Impl().(backingFileWriter); ok {
		if err := w.SetBackingFile(name, c.base.Driver().Name); err != nil {
			return schema.Errorf("Could not update backing file: %v", err)
		}
		c.overlay.SetAutoBackingFile(name)
	}
	if err := g.SetBacking(c.overlay, c.base); err != nil {
		return err
	}
	c.filter = nil
	return nil
}

// Abort leaves the chain as it was; Clean takes the filter away.
func (c *intermediateCommit) Abort() {}

// Clean releases the job's edges and base's temporary write access, then
// removes the filter if the job's graph change has not (commit_abort's
// order).
func (c *intermediateCommit) Clean() {
	c.teardown()
}

func (c *intermediateCommit) CanComplete() bool          { return false }
func (c *intermediateCommit) SoftCancelAfterReady() bool { return false }
