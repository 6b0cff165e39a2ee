package jobs

import (
	"path/filepath"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// jobUser is a job as a parent in the graph ("commit job 'j1'").
type jobUser struct{ j *Job }

func (u jobUser) ParentDesc() string                        { return string(u.j.typ) + " job '" + u.j.id + "'" }
func (u jobUser) VertexType() schema.XDbgBlockGraphNodeType { return "block-job" }
func (u jobUser) VertexName() string                        { return u.j.id }

// DrainBegin and DrainEnd make the job pause for a drained section of a
// node it uses, as QEMU's child_job does (JOB_STATUS_CHANGE paused and
// running, or standby and ready, around the section).
func (u jobUser) DrainBegin() { u.j.m.drainBegin(u.j) }
func (u jobUser) DrainEnd()   { u.j.m.drainEnd(u.j) }

// Blocker is QEMU's op blocker text for the nodes a job holds.
func (u jobUser) Blocker() string { return "block device is in use by block job: " + string(u.j.typ) }

// backend is the job's unnamed block backend on a node, through which it
// does its I/O (QEMU's BlockBackend).
type backend struct {
	// Each is a block backend of its own in graph dumps: a pointer of a
	// non-empty type is distinct from every other.
	_ byte
}

func (backend) ParentDesc() string                        { return "an unnamed block device" }
func (backend) VertexType() schema.XDbgBlockGraphNodeType { return "block-backend" }
func (backend) VertexName() string                        { return "" }

// blockCommit is qmp_block_commit: resolve device, top and base in QEMU's
// order and with its texts, then start an intermediate or active commit.
func (m *Manager) blockCommit(a *schema.BlockCommitArgs) error {
	g := m.g
	bs := g.Lookup(a.Device)
	if bs == nil {
		return schema.ClassErrorf(schema.ClassDeviceNotFound, "Device '%s' not found", a.Device)
	}
	if !bs.IsRoot() {
		return schema.Errorf("Need a root block node")
	}
	top := bs
	switch {
	case a.TopNode != nil && a.Top != nil:
		return schema.Errorf("'top-node' and 'top' are mutually exclusive")
	case a.TopNode != nil:
		top = g.Lookup(*a.TopNode)
		if top == nil {
			return schema.Errorf("Cannot find device='' nor node-name='%s'", *a.TopNode)
		}
		if !chainContains(bs, top) {
			return schema.Errorf("'%s' is not in this backing file chain", *a.TopNode)
		}
	case a.Top != nil:
		if g.Filename(bs) != *a.Top {
			top = findBackingImage(g, bs, *a.Top)
		}
		if top == nil {
			return schema.Errorf("Top image file %s not found", *a.Top)
		}
	}
	var base *blockcore.Node
	switch {
	case a.BaseNode != nil && a.Base != nil:
		return schema.Errorf("'base-node' and 'base' are mutually exclusive")
	case a.BaseNode != nil:
		base = g.Lookup(*a.BaseNode)
		if base == nil {
			return schema.Errorf("Cannot find device='' nor node-name='%s'", *a.BaseNode)
		}
		if !chainContains(top, base) {
			return schema.Errorf("'%s' is not in this backing file chain", *a.BaseNode)
		}
	case a.Base != nil:
		base = findBackingImage(g, top, *a.Base)
		if base == nil {
			return schema.Errorf("Can't find '%s' in the backing chain", *a.Base)
		}
	default:
		base = bottom(top)
	}
	if top == base {
		return schema.Errorf("cannot commit an image into itself")
	}
	if top == bs && a.BackingFile != nil {
		return schema.Errorf("'backing-file' specified, but 'top' is the active layer")
	}
	opts := commitOptions{
		jobID:        deref(a.JobID, ""),
		speed:        deref(a.Speed, 0),
		autoFinalize: deref(a.AutoFinalize, true),
		autoDismiss:  deref(a.AutoDismiss, true),
		filterName:   deref(a.FilterNodeName, ""),
		backingFile:  a.BackingFile,
		onError:      string(deref(a.OnError, "report")),
	}
	if top == bs {
		return m.startActiveCommit(bs, base, opts)
	}
	return m.startCommit(bs, top, base, opts)
}

type commitOptions struct {
	jobID                     string
	speed                     int64
	autoFinalize, autoDismiss bool
	filterName                string
	backingFile               *string
	onError                   string
}

func deref[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

// backingOf follows a node's backing child (filters included).
func backingOf(n *blockcore.Node) *blockcore.Node { return blockcore.ChainBelow(n) }

func chainContains(top, n *blockcore.Node) bool {
	for x := top; x != nil; x = backingOf(x) {
		if x == n {
			return true
		}
	}
	return false
}

// bottom is bdrv_find_base: the last node of the backing chain.
func bottom(n *blockcore.Node) *blockcore.Node {
	for backingOf(n) != nil {
		n = backingOf(n)
	}
	return n
}

// findBackingImage is bdrv_find_backing_image: the node below top whose
// filename is name, taken relative to the directory of the image that
// points at it when relative.
func findBackingImage(g *blockcore.Graph, top *blockcore.Node, name string) *blockcore.Node {
	for x := top; backingOf(x) != nil; x = backingOf(x) {
		b := backingOf(x)
		want := name
		if !filepath.IsAbs(name) {
			want = g.ResolveBackingPath(x, name)
		}
		if got := g.Filename(b); got == name || got == want {
			return b
		}
	}
	return nil
}

// commitSetup is what both kinds of commit attach to the graph; Clean
// takes it all away again.
type commitSetup struct {
	m       *Manager
	job     *Job
	filter  *blockcore.Node
	edges   []*blockcore.Child
	base    *blockcore.Node
	baseRO  bool // base was read-only before the job and is again after
	baseDev blockio.Device
	// layers is the chain from top down to base (base excluded, filters
	// skipped), taken on the owner at setup: the worker reads it instead
	// of the live graph, which the frozen links keep equal to it.
	layers   []blockio.Device
	unfreeze func()
}

// freeze freezes the chain links from top down to base for the job's
// life and takes the worker's snapshot of the chain.
func (s *commitSetup) freeze(top *blockcore.Node) error {
	unfreeze, err := s.m.g.FreezeBackingChain(top, s.base)
	if err != nil {
		return err
	}
	s.unfreeze = unfreeze
	s.layers = nil
	for x := top; x != nil && x != s.base; x = backingOf(x) {
		if !blockcore.IsFilterOf(x) {
			s.layers = append(s.layers, x.IO())
		}
	}
	return nil
}

// thaw unfreezes the job's links, before the job changes them itself.
func (s *commitSetup) thaw() {
	if s.unfreeze != nil {
		s.unfreeze()
		s.unfreeze = nil
	}
}

// removeFilter takes the job's filter out of the graph, after the job's
// own edges are gone (mirror_exit_common, commit_abort), unless it went
// with them or with the job's graph change.
func (s *commitSetup) removeFilter(f *blockcore.Node) {
	if f == nil || s.m.g.Lookup(f.Name()) != f {
		return
	}
	if err := s.m.g.RemoveFilter(f); err != nil {
		s.m.log.Error("removing the job's filter failed", zap.String("job", s.job.id), zap.String("job_uuid", s.job.uuid),
			zap.String("filter", f.Name()), zap.Error(err))
	}
}

// teardown is every job's cleanup in the reference's order
// (mirror_exit_common, commit_abort, stream_clean, backup_clean): the
// filter stops acting on guest writes, the job's own edges go, then the
// filter, whose parents go back to the node below it; a filter the job's
// edges alone held has closed with the last of them, and the graph then
// relaxed the nodes below it.
func (s *commitSetup) teardown() {
	if s.filter != nil {
		blockcore.SetWriteHook(s.filter, nil)
	}
	s.release()
	s.removeFilter(s.filter)
	s.filter = nil
}

// hold attaches a job or backend edge, remembering it for cleanup.
func (s *commitSetup) hold(p blockcore.Parent, n *blockcore.Node, name string, perm, shared blockio.Perm) error {
	c, err := s.m.g.AttachUser(p, n, name, perm, shared)
	if err != nil {
		return err
	}
	s.edges = append(s.edges, c)
	return nil
}

// makeBaseWritable reopens a read-only base read-write for the job.
func (s *commitSetup) makeBaseWritable() error {
	if !s.base.ReadOnly() {
		return nil
	}
	if err := s.m.g.SetReadOnly(s.base, false); err != nil {
		return err
	}
	s.baseRO = true
	return nil
}

// release detaches every edge the job holds and restores base's mode.
func (s *commitSetup) release() {
	s.thaw()
	for i := len(s.edges) - 1; i >= 0; i-- {
		s.m.g.DetachUser(s.edges[i])
	}
	s.edges = nil
	if s.baseRO && s.base != nil && s.m.g.Lookup(s.base.Name()) == s.base {
		_ = s.m.g.SetReadOnly(s.base, true)
	}
}

const permAll = blockio.PermAll
