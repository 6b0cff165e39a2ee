package jobs

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/copyonread"
	"blockd/schema"
)

// stream pulls the data of the chain below top (down to base, or down to
// and including bottom) up into top, then makes top's backing the node
// below the streamed ones and rewrites its header: QEMU's block-stream
// (stream_start / stream_run / stream_prepare).
type stream struct {
	commitSetup // edges, frozen links and filter bookkeeping
	top         *blockcore.Node
	aboveBase   *blockcore.Node // the lowest streamed node
	belowBase   *blockcore.Node // what top's backing becomes (nil: none)
	backingFile *string
	topRO       bool // top was read-only before the job
	locks       *rangeLock
}

// lookupNode is bdrv_lookup_bs(NULL, name).
func (m *Manager) lookupNode(name string) (*blockcore.Node, error) {
	if n := m.g.Lookup(name); n != nil {
		return n, nil
	}
	return nil, schema.Errorf("Cannot find device='' nor node-name='%s'", name)
}

// jobBlocker is the op blocker a job holding n puts on it; backing links
// do not block stream, mirror or backup (QEMU unblocks those ops for a
// backing file).
func jobBlocker(n *blockcore.Node) string {
	for _, c := range n.Parents() {
		if u, ok := c.Parent.(jobUser); ok {
			return u.Blocker()
		}
	}
	return ""
}

// chainBelow is bdrv_filter_or_cow_bs: the next node of a backing chain,
// through job filters too.
func chainBelow(n *blockcore.Node) *blockcore.Node { return blockcore.ChainBelow(n) }

// blockStream is qmp_block_stream: the checks in QEMU's order and texts.
func (m *Manager) blockStream(a *schema.BlockStreamArgs) error {
	bs := m.g.Lookup(a.Device)
	if bs == nil {
		return schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Device, a.Device)
	}
	switch {
	case a.Base != nil && a.BaseNode != nil:
		return schema.Errorf("'base' and 'base-node' cannot be specified at the same time")
	case a.Base != nil && a.Bottom != nil:
		return schema.Errorf("'base' and 'bottom' cannot be specified at the same time")
	case a.Bottom != nil && a.BaseNode != nil:
		return schema.Errorf("'bottom' and 'base-node' cannot be specified at the same time")
	}
	var base, bottomNode *blockcore.Node
	if a.Base != nil {
		base = findBackingImage(m.g, bs, *a.Base)
		if base == nil {
			return schema.Errorf("Can't find '%s' in the backing chain", *a.Base)
		}
	}
	if a.BaseNode != nil {
		n, err := m.lookupNode(*a.BaseNode)
		if err != nil {
			return err
		}
		if n == bs || !chainContains(bs, n) {
			return schema.Errorf("Node '%s' is not a backing image of '%s'", *a.BaseNode, a.Device)
		}
		base = n
	}
	if a.Bottom != nil {
		n, err := m.lookupNode(*a.Bottom)
		if err != nil {
			return err
		}
		if n.Driver() != nil && n.Driver().Filter {
			return schema.Errorf("Bottom node '%s' is a filter", *a.Bottom)
		}
		if !chainContains(bs, n) {
			return schema.Errorf("Node '%s' is not in a chain starting from '%s'", *a.Bottom, a.Device)
		}
		bottomNode = n
	}
	// Op blockers on the chain from bs down to base (or to bottom).
	end := base
	if bottomNode != nil {
		end = chainBelow(bottomNode)
	}
	for x := bs; x != nil && x != end; x = chainBelow(x) {
		if b := jobBlocker(x); b != "" {
			return schema.Errorf("Node '%s' is busy: %s", x.Name(), b)
		}
	}
	if base == nil && a.BackingFile != nil {
		return schema.Errorf("backing file specified, but streaming the entire chain")
	}
	// stream_start: the lowest streamed node.
	var above *blockcore.Node
	if bottomNode != nil {
		above = bottomNode
	} else {
		for x := bs; x != nil && chainBelow(x) != base; x = chainBelow(x) {
			above = chainBelow(x)
		}
		if above == nil {
			above = bs
		}
	}
	j, err := m.create(deref(a.JobID, ""), "stream", deref(a.Speed, 0),
		deref(a.AutoFinalize, true), deref(a.AutoDismiss, true))
	if err != nil {
		return err
	}
	j.onErrorPolicy = string(deref(a.OnError, "report"))
	s := &stream{commitSetup: commitSetup{m: m, job: j}, top: bs, aboveBase: above,
		belowBase: chainBelow(above), backingFile: a.BackingFile, locks: newRangeLock()}
	if above == bs {
		s.belowBase = bs.Backing()
	}
	if err := s.setup(deref(a.FilterNodeName, "")); err != nil {
		s.Clean()
		m.discard(j)
		return err
	}
	m.start(j, s)
	return nil
}

func (s *stream) setup(filterName string) error {
	g, j := s.m.g, s.job
	user := jobUser{j}
	if s.top.ReadOnly() {
		if err := g.SetReadOnly(s.top, false); err != nil {
			return err
		}
		s.topRO = true
	}
	unfreeze, err := g.FreezeBackingChain(s.top, s.aboveBase)
	if err != nil {
		return err
	}
	s.unfreeze = unfreeze
	f, err := g.InsertFilterAbove(s.top, "copy-on-read", filterName, "file", copyonread.Perms)
	if err != nil {
		return err
	}
	s.filter = f
	// Guest writes and the job's copy of a range exclude each other, or
	// the copy could overwrite newer data with the backing file's.
	blockcore.SetWriteHook(f, func(off, n int64, write func() error) error {
		unlock := s.locks.Lock(off, n)
		defer unlock()
		return write()
	})
	if err := s.hold(user, f, "main node", 0, permAll); err != nil {
		return err
	}
	// The job's own backend reads through the filter and lets others
	// do anything but resize (stream_prepare's blk).
	if err := s.hold(&backend{}, f, "root", blockio.PermConsistentRead, permAll&^blockio.PermResize); err != nil {
		return err
	}
	basic := blockio.PermConsistentRead | blockio.PermWriteUnchanged
	if err := s.hold(user, s.top, "active node", 0, basic|blockio.PermWrite); err != nil {
		return err
	}
	for x := chainBelow(s.top); x != nil && x != s.belowBase; x = chainBelow(x) {
		if err := s.hold(user, x, "intermediate node", 0, basic); err != nil {
			return err
		}
	}
	for x := chainBelow(s.top); x != nil && x != s.belowBase; x = chainBelow(x) {
		if !blockcore.IsFilterOf(x) {
			s.layers = append(s.layers, x.IO())
		}
	}
	return nil
}

// newCopier copies up into top under the range lock, and only where top
// is still unallocated once the lock is held: the allocation check in Run
// is a hint, and a guest write landing between it and the copy must not
// be overwritten by the backing file's older data.
func (s *stream) newCopier(j *Job, dev blockio.Device) *copier {
	cp := newCopier(j, dev, dev)
	cp.locks = s.locks
	cp.onlyUnallocated = true
	return cp
}

// Run is stream_run: every range top does not define but the streamed
// layers do is read through top and written into it.
func (s *stream) Run(j *Job) error {
	dev := s.top.IO()
	size, err := dev.Size()
	if err != nil {
		return err
	}
	j.SetTotal(size)
	cp := s.newCopier(j, dev)
	var firstErr error
	for off := int64(0); off < size; {
		if err := j.Checkpoint(); err != nil {
			cp.wait()
			return err
		}
		if err := cp.failed(); err != nil {
			cp.wait()
			// A stream reads through copy-on-read: every failure is a read.
			err = &ioError{"read", errOffset(err, off), errCause(err)}
			goOn, from := j.onError(err, off)
			if !goOn {
				return err
			}
			if firstErr == nil && j.onErrorPolicy == "ignore" {
				firstErr = err
			}
			off = min(off, from)
			cp = s.newCopier(j, dev)
			continue
		}
		n := min(int64(chunkSize), size-off)
		st, err := dev.BlockStatus(off, n)
		if err != nil {
			cp.wait()
			return err
		}
		copyIt := false
		n = min(n, st.Length)
		if st.Flags&blockio.StatusAllocated == 0 {
			var alloc bool
			alloc, n, err = isAllocatedAbove(s.layers, off, n)
			if err != nil {
				cp.wait()
				return err
			}
			copyIt = alloc
		}
		if copyIt {
			cp.start(off, n)
			if err := j.Limit(n); err != nil {
				cp.wait()
				return err
			}
		} else {
			j.Progress(n)
		}
		off += n
	}
	if err := cp.wait(); err != nil {
		err = &ioError{"read", errOffset(err, size), errCause(err)}
		if goOn, _ := j.onError(err, size); !goOn {
			return err
		}
		firstErr = err
	}
	if firstErr != nil {
		// An ignored error keeps the backing file: its data is not all
		// in top (stream_run returns the error).
		return firstErr
	}
	// The streamed data is durable before the header stops pointing at
	// the layers that held it.
	return dev.Flush()
}

// Prepare is stream_prepare: top's header names the node below the
// streamed ones (or nothing), then top uses it as its backing file, which
// drops the streamed nodes nobody else holds.
func (s *stream) Prepare() error {
	g := s.m.g
	s.thaw()
	if s.top.Backing() == nil {
		return nil
	}
	name, format := "", ""
	if s.belowBase != nil {
		name = g.Filename(s.belowBase)
		if s.backingFile != nil {
			name = *s.backingFile
		}
		if d := s.belowBase.Driver(); d != nil {
			format = d.Name
		}
	}
	if err := g.SetBacking(s.top, s.belowBase); err != nil {
		return err
	}
	if w, ok := s.top.Impl().(backingFileWriter); ok {
		if err := w.SetBackingFile(name, format); err != nil {
			return schema.Errorf("Could not update backing file: %v", err)
		}
		s.top.SetAutoBackingFile(name)
	}
	return nil
}

func (s *stream) Abort() {}

// Clean is stream_clean: the filter goes, top gets its read-only mode back.
func (s *stream) Clean() {
	s.teardown()
	if s.topRO && s.m.g.Lookup(s.top.Name()) == s.top {
		_ = s.m.g.SetReadOnly(s.top, true)
	}
}

func (s *stream) CanComplete() bool          { return false }
func (s *stream) SoftCancelAfterReady() bool { return false }
