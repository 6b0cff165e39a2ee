package blockcore

import (
	"context"
	"slices"

	"blockd/dirtybitmap"
	"blockd/schema"
)

// DirtyBitmap is one dirty bitmap of a node: a named one the user made
// (block-dirty-bitmap-add, or loaded from the image) or a job's
// anonymous one that is only shown by queries. Every field but the bits
// belongs to the owner goroutine; the bits are marked on the data path
// (gate.markDirty) while the bitmap records.
type DirtyBitmap struct {
	name string
	bm   *dirtybitmap.Bitmap
	// disabled bitmaps keep their bits but record nothing.
	disabled bool
	// persistent bitmaps are stored in the image when the node closes.
	persistent bool
	// busy bitmaps are in use by an export or a job: the monitor may
	// not change or remove them.
	busy bool
	// inconsistent bitmaps were found in use in the image at open (the
	// last writer did not store them): only removal is allowed.
	inconsistent bool
	// readonly bitmaps come from a read-only image and cannot change.
	readonly bool
	// info, for a job's bitmap, answers queries in place of the fields.
	info func() schema.BlockDirtyInfo
	// successor records the writes made while a backup uses the bitmap
	// (an anonymous bitmap of the node, as QEMU's).
	successor *DirtyBitmap
}

// Name is the bitmap's name.
func (d *DirtyBitmap) Name() string { return d.name }

// Bits is the bitmap itself.
func (d *DirtyBitmap) Bits() *dirtybitmap.Bitmap { return d.bm }

// Persistent reports whether the bitmap is stored in its image.
func (d *DirtyBitmap) Persistent() bool { return d.persistent }

// Enabled reports whether the bitmap records writes.
func (d *DirtyBitmap) Enabled() bool { return !d.disabled }

// Inconsistent reports whether the bitmap was found in use at open.
func (d *DirtyBitmap) Inconsistent() bool { return d.inconsistent }

// SetBusy marks the bitmap in use by an export or a job (or no longer).
func (d *DirtyBitmap) SetBusy(busy bool) { d.busy = busy }

func (d *DirtyBitmap) query() schema.BlockDirtyInfo {
	if d.info != nil {
		return d.info()
	}
	var name *string
	if d.name != "" {
		name = &d.name
	}
	out := schema.BlockDirtyInfo{
		Name:        name,
		Count:       d.bm.Count(),
		Granularity: uint32(d.bm.Granularity()),
		Recording:   !d.disabled || d.successor != nil && !d.successor.disabled,
		Busy:        d.busy,
		Persistent:  d.persistent,
	}
	if d.inconsistent {
		t := true
		out.Inconsistent = &t
	}
	return out
}

// BitmapCheck says which states bdrv_dirty_bitmap_check refuses.
type BitmapCheck uint8

const (
	CheckBusy BitmapCheck = 1 << iota
	CheckReadOnly
	CheckInconsistent

	// CheckDefault refuses every state in which a bitmap cannot change.
	CheckDefault = CheckBusy | CheckReadOnly | CheckInconsistent
	// CheckAllowRO lets a read-only bitmap through (enable, disable, or
	// a merge source).
	CheckAllowRO = CheckBusy | CheckInconsistent
)

// Check returns QEMU's refusal for a bitmap in a state flags exclude.
func (d *DirtyBitmap) Check(flags BitmapCheck) error {
	switch {
	case flags&CheckBusy != 0 && d.busy:
		return schema.Errorf("Bitmap '%s' is currently in use by another operation and cannot be used", d.name)
	case flags&CheckReadOnly != 0 && d.readonly:
		return schema.Errorf("Bitmap '%s' is readonly and cannot be modified", d.name)
	case flags&CheckInconsistent != 0 && d.inconsistent:
		return schema.Errorf("Bitmap '%s' is inconsistent and cannot be used", d.name)
	}
	return nil
}

// BitmapStore is implemented by drivers that keep persistent bitmaps in
// their image (qcow2). The graph loads them right after the node opens
// and stores them back when a read-write node closes.
type BitmapStore interface {
	// CanStoreBitmap refuses a new persistent bitmap the image cannot
	// hold, with the driver's text.
	CanStoreBitmap(name string, granularity uint64) error
	// RemoveStoredBitmap deletes the bitmap from the image, if stored.
	RemoveStoredBitmap(name string) error
	// LoadBitmaps returns the stored bitmaps, in the image's order; on a
	// read-write image they are flagged in use on disk until stored.
	LoadBitmaps() ([]PersistentBitmap, error)
	// StoreBitmaps writes the node's persistent bitmaps back, clean.
	StoreBitmaps([]PersistentBitmap) error
	// ReopenBitmapsRW flags them in use again once a reopen made the
	// image writable.
	ReopenBitmapsRW() error
}

// PersistentBitmap is a bitmap as a BitmapStore keeps it.
type PersistentBitmap struct {
	Name    string
	Bits    *dirtybitmap.Bitmap
	Enabled bool
	// Inconsistent: found in use in the image (its writer did not store
	// it); Bits is clean and the image's copy is left as it is.
	Inconsistent bool
}

// loadBitmaps creates the node's persistent bitmaps from its image, as
// qcow2_load_dirty_bitmaps does: each linked at the head of the list, a
// bitmap found in use inconsistent, all read-only on a read-only node.
func (n *Node) loadBitmaps() error {
	st, ok := n.impl.(BitmapStore)
	if !ok {
		return nil
	}
	list, err := st.LoadBitmaps()
	if err != nil {
		return err
	}
	for _, p := range list {
		// An inconsistent bitmap records nothing, whatever its flag.
		n.dirty = slices.Insert(n.dirty, 0, &DirtyBitmap{name: p.Name, bm: p.Bits, disabled: !p.Enabled || p.Inconsistent,
			persistent: true, inconsistent: p.Inconsistent, readonly: n.readOnly})
	}
	n.syncRecording()
	return nil
}

// storeBitmaps hands the node's persistent bitmaps to its driver before
// it closes (qcow2_store_persistent_dirty_bitmaps at close).
func (n *Node) storeBitmaps() error {
	st, ok := n.impl.(BitmapStore)
	if !ok || n.readOnly {
		return nil
	}
	var list []PersistentBitmap
	for _, d := range n.dirty {
		if d.bm != nil && d.persistent {
			list = append(list, PersistentBitmap{Name: d.name, Bits: d.bm, Enabled: !d.disabled,
				Inconsistent: d.inconsistent})
		}
	}
	return st.StoreBitmaps(list)
}

// Bitmaps lists the node's dirty bitmaps, newest first.
func (n *Node) Bitmaps() []*DirtyBitmap { return n.dirty }

// FindBitmap returns the node's bitmap of that name, or nil.
func (n *Node) FindBitmap(name string) *DirtyBitmap {
	for _, d := range n.dirty {
		if d.info == nil && d.name != "" && d.name == name {
			return d
		}
	}
	return nil
}

// AddBitmapInfo makes a dirty bitmap kept on n (by a job) visible in
// query-named-block-nodes until the returned function is called.
func (n *Node) AddBitmapInfo(info func() schema.BlockDirtyInfo) (remove func()) {
	d := &DirtyBitmap{info: info}
	n.dirty = slices.Insert(n.dirty, 0, d)
	return func() { n.dirty = slices.DeleteFunc(n.dirty, func(x *DirtyBitmap) bool { return x == d }) }
}

// syncRecording publishes to the data path the bitmaps that record now.
// Writes in flight may or may not mark a bitmap that starts or stops
// recording, as in QEMU, where the bitmap list is read at completion.
func (n *Node) syncRecording() {
	var rec, all []*dirtybitmap.Bitmap
	for _, d := range n.dirty {
		if d.bm != nil {
			all = append(all, d.bm)
		}
		if d.bm != nil && !d.disabled && !d.inconsistent && !d.readonly {
			rec = append(rec, d.bm)
		}
	}
	// One store each: a write in flight sees the old list or the new.
	n.io.recording.Store(listOrNil(rec))
	n.io.bitmaps.Store(listOrNil(all))
}

func listOrNil(l []*dirtybitmap.Bitmap) *[]*dirtybitmap.Bitmap {
	if len(l) == 0 {
		return nil
	}
	return &l
}

// addBitmap links a new bitmap at the head of the node's list, as
// bdrv_create_dirty_bitmap does.
func (n *Node) addBitmap(d *DirtyBitmap) {
	n.dirty = slices.Insert(n.dirty, 0, d)
	n.syncRecording()
}

func (n *Node) releaseBitmap(d *DirtyBitmap) {
	n.dirty = slices.DeleteFunc(n.dirty, func(x *DirtyBitmap) bool { return x == d })
	n.syncRecording()
}

// resizeBitmaps follows a new node size (bdrv_dirty_bitmap_truncate);
// the node is drained.
func (n *Node) resizeBitmaps(size int64) {
	for _, d := range n.dirty {
		if d.bm != nil {
			d.bm.Resize(size)
		}
	}
}

// LookupBitmap is block_dirty_bitmap_lookup.
func (g *Graph) LookupBitmap(node, name string) (*Node, *DirtyBitmap, error) {
	n := g.nodes[node]
	if n == nil {
		return nil, nil, schema.Errorf("Node '%s' not found", node)
	}
	d := n.FindBitmap(name)
	if d == nil {
		return nil, nil, schema.Errorf("Dirty bitmap '%s' not found", name)
	}
	return n, d, nil
}

// DefaultBitmapGranularity is bdrv_get_default_bitmap_granularity: the
// node's cluster size within [4 KiB, 64 KiB], or 64 KiB.
func (g *Graph) DefaultBitmapGranularity(n *Node) uint64 {
	if cs := g.ClusterSize(n); cs > 0 {
		return uint64(min(max(cs, 4096), 65536))
	}
	return 65536
}

// BitmapAction is a bitmap command that has been checked and applied
// (its prepare step): Commit makes it final, Abort puts everything back.
// The QMP commands commit at once; a transaction commits or aborts all
// its actions together. Exactly one of Commit or Abort is called.
type BitmapAction struct {
	commit, abort func()
}

// Commit finishes the action.
func (a *BitmapAction) Commit() {
	if a.commit != nil {
		a.commit()
	}
}

// Abort undoes the action.
func (a *BitmapAction) Abort() {
	if a.abort != nil {
		a.abort()
	}
}

// run is a plain (non-transactional) command: prepare, then commit.
func run(a *BitmapAction, err error) error {
	if err != nil {
		return err
	}
	a.Commit()
	return nil
}

// PrepareBitmapAdd is block-dirty-bitmap-add's prepare step: the bitmap
// exists afterwards; Abort removes it.
func (g *Graph) PrepareBitmapAdd(a *schema.BlockDirtyBitmapAddArgs) (*BitmapAction, error) {
	if a.Name == "" {
		return nil, schema.Errorf("Bitmap name cannot be empty")
	}
	node := a.Node
	n, err := g.LookupDeviceOrNode(&node, &node)
	if err != nil {
		return nil, err
	}
	var gran uint64
	if a.Granularity != nil {
		gran = uint64(*a.Granularity)
		if !dirtybitmap.ValidGranularity(gran) {
			return nil, schema.Errorf("Granularity must be power of 2 and at least 512")
		}
	} else {
		gran = g.DefaultBitmapGranularity(n)
	}
	// The name is checked before the image is asked (QEMU 7.2's order).
	if n.FindBitmap(a.Name) != nil {
		return nil, schema.Errorf("Bitmap already exists: %s", a.Name)
	}
	persistent := a.Persistent != nil && *a.Persistent
	if persistent {
		st, ok := n.impl.(BitmapStore)
		if !ok {
			return nil, schema.Errorf("Can't store persistent bitmaps to %s: Operation not supported", n.name)
		}
		if err := st.CanStoreBitmap(a.Name, gran); err != nil {
			return nil, schema.Errorf("Can't make bitmap '%s' persistent in '%s': %s", a.Name, n.name, err)
		}
	}
	size, err := n.io.Size()
	if err != nil {
		return nil, schema.Errorf("could not get length of device: %v", err)
	}
	d := &DirtyBitmap{
		name:       a.Name,
		bm:         dirtybitmap.New(size, gran),
		disabled:   a.Disabled != nil && *a.Disabled,
		persistent: persistent,
	}
	n.addBitmap(d)
	return &BitmapAction{abort: func() { n.releaseBitmap(d) }}, nil
}

// PrepareBitmapRemove is block-dirty-bitmap-remove's prepare step: the
// bitmap leaves the image and is held busy; Commit releases it, Abort
// gives it back (still not stored, as in QEMU: it is stored again at
// close).
func (g *Graph) PrepareBitmapRemove(a *schema.BlockDirtyBitmap) (*BitmapAction, error) {
	n, d, err := g.LookupBitmap(a.Node, a.Name)
	if err != nil {
		return nil, err
	}
	if err := d.Check(CheckBusy | CheckReadOnly); err != nil {
		return nil, err
	}
	if d.persistent {
		if st, ok := n.impl.(BitmapStore); ok {
			if err := st.RemoveStoredBitmap(d.name); err != nil {
				return nil, err
			}
		}
	}
	d.busy = true
	return &BitmapAction{
		commit: func() { d.busy = false; n.releaseBitmap(d) },
		abort:  func() { d.busy = false },
	}, nil
}

// PrepareBitmapClear is block-dirty-bitmap-clear's prepare step.
func (g *Graph) PrepareBitmapClear(a *schema.BlockDirtyBitmap) (*BitmapAction, error) {
	_, d, err := g.LookupBitmap(a.Node, a.Name)
	if err != nil {
		return nil, err
	}
	if err := d.Check(CheckDefault); err != nil {
		return nil, err
	}
	backup := d.bm.Copy()
	d.bm.Clear()
	return &BitmapAction{abort: func() { d.bm.Clear(); d.bm.Merge(backup) }}, nil
}

// PrepareBitmapEnable is block-dirty-bitmap-enable's prepare step
// (disable when enable is false).
func (g *Graph) PrepareBitmapEnable(a *schema.BlockDirtyBitmap, enable bool) (*BitmapAction, error) {
	n, d, err := g.LookupBitmap(a.Node, a.Name)
	if err != nil {
		return nil, err
	}
	if err := d.Check(CheckAllowRO); err != nil {
		return nil, err
	}
	was := d.disabled
	d.disabled = !enable
	n.syncRecording()
	return &BitmapAction{abort: func() { d.disabled = was; n.syncRecording() }}, nil
}

// PrepareBitmapMerge is block-dirty-bitmap-merge's prepare step: the
// target is checked, the sources are found, checked and merged in order,
// then into the target, which is unchanged when any source is refused.
func (g *Graph) PrepareBitmapMerge(a *schema.BlockDirtyBitmapMergeArgs) (*BitmapAction, error) {
	n, dst, err := g.LookupBitmap(a.Node, a.Target)
	if err != nil {
		return nil, err
	}
	if err := dst.Check(CheckDefault); err != nil {
		return nil, err
	}
	var srcs []*DirtyBitmap
	for _, s := range a.Bitmaps {
		var src *DirtyBitmap
		if s.Local != nil {
			if src = n.FindBitmap(*s.Local); src == nil {
				return nil, schema.Errorf("Dirty bitmap '%s' not found", *s.Local)
			}
		} else if _, src, err = g.LookupBitmap(s.External.Node, s.External.Name); err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return mergeInto(dst, srcs)
}

// PrepareBitmapMergeFrom merges one bitmap of srcNode, which may belong
// to another graph (qemu-img bitmap -b), into node's target.
func (g *Graph) PrepareBitmapMergeFrom(node, target string, srcNode *Node, srcName string) (*BitmapAction, error) {
	_, dst, err := g.LookupBitmap(node, target)
	if err != nil {
		return nil, err
	}
	if err := dst.Check(CheckDefault); err != nil {
		return nil, err
	}
	src := srcNode.FindBitmap(srcName)
	if src == nil {
		return nil, schema.Errorf("Dirty bitmap '%s' not found", srcName)
	}
	return mergeInto(dst, []*DirtyBitmap{src})
}

func mergeInto(dst *DirtyBitmap, srcs []*DirtyBitmap) (*BitmapAction, error) {
	size := dst.bm.Size()
	acc := dirtybitmap.New(size, dst.bm.Granularity())
	for _, src := range srcs {
		if err := src.Check(CheckAllowRO); err != nil {
			return nil, err
		}
		if src.bm.Size() != size {
			return nil, schema.Errorf("Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged", size, src.bm.Size())
		}
		acc.Merge(src.bm)
	}
	backup := dst.bm.Copy()
	dst.bm.Merge(acc)
	return &BitmapAction{abort: func() { dst.bm.Clear(); dst.bm.Merge(backup) }}, nil
}

// BitmapSHA256 is x-debug-block-dirty-bitmap-sha256.
func (g *Graph) BitmapSHA256(node, name string) (string, error) {
	_, d, err := g.LookupBitmap(node, name)
	if err != nil {
		return "", err
	}
	return d.bm.SHA256(), nil
}

// txAction adapts a prepared bitmap action to the transaction's steps.
func txAction(a *BitmapAction, err error) (*TxAction, error) {
	if err != nil {
		return nil, err
	}
	return &TxAction{Commit: a.Commit, Abort: a.Abort}, nil
}

// registerBitmapActions makes the bitmap commands transaction actions
// (QEMU 7.2's block_dirty_bitmap_*_prepare/_commit/_abort); none accepts
// completion-mode grouped.
func (g *Graph) registerBitmapActions() {
	RegisterAction(g, "block-dirty-bitmap-add", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmapAddArgs) (*TxAction, error) {
		return txAction(g.PrepareBitmapAdd(a))
	})
	RegisterAction(g, "block-dirty-bitmap-remove", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmap) (*TxAction, error) {
		return txAction(g.PrepareBitmapRemove(a))
	})
	RegisterAction(g, "block-dirty-bitmap-clear", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmap) (*TxAction, error) {
		return txAction(g.PrepareBitmapClear(a))
	})
	RegisterAction(g, "block-dirty-bitmap-enable", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmap) (*TxAction, error) {
		return txAction(g.PrepareBitmapEnable(a, true))
	})
	RegisterAction(g, "block-dirty-bitmap-disable", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmap) (*TxAction, error) {
		return txAction(g.PrepareBitmapEnable(a, false))
	})
	RegisterAction(g, "block-dirty-bitmap-merge", RefuseGrouped, func(_ *TxContext, a *schema.BlockDirtyBitmapMergeArgs) (*TxAction, error) {
		return txAction(g.PrepareBitmapMerge(a))
	})
}

func (g *Graph) registerBitmapCommands(r *schema.Registry) {
	schema.Define(r, "block-dirty-bitmap-add", func(_ context.Context, a *schema.BlockDirtyBitmapAddArgs) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapAdd(a))
	})
	schema.Define(r, "block-dirty-bitmap-remove", func(_ context.Context, a *schema.BlockDirtyBitmap) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapRemove(a))
	})
	schema.Define(r, "block-dirty-bitmap-clear", func(_ context.Context, a *schema.BlockDirtyBitmap) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapClear(a))
	})
	schema.Define(r, "block-dirty-bitmap-enable", func(_ context.Context, a *schema.BlockDirtyBitmap) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapEnable(a, true))
	})
	schema.Define(r, "block-dirty-bitmap-disable", func(_ context.Context, a *schema.BlockDirtyBitmap) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapEnable(a, false))
	})
	schema.Define(r, "block-dirty-bitmap-merge", func(_ context.Context, a *schema.BlockDirtyBitmapMergeArgs) (schema.Empty, error) {
		return schema.Empty{}, run(g.PrepareBitmapMerge(a))
	})
	schema.Define(r, "x-debug-block-dirty-bitmap-sha256", func(_ context.Context, a *schema.BlockDirtyBitmap) (*schema.BlockDirtyBitmapSha256, error) {
		sum, err := g.BitmapSHA256(a.Node, a.Name)
		if err != nil {
			return nil, err
		}
		return &schema.BlockDirtyBitmapSha256{Sha256: sum}, nil
	}, schema.Features("unstable"))
}

// FindChainBitmap looks for a bitmap by name on n and then down its
// filter and backing chain, as an NBD export resolves a bare bitmap name;
// it returns the node that holds it.
func FindChainBitmap(n *Node, name string) (*Node, *DirtyBitmap) {
	for ; n != nil; n = chainNode(n) {
		if d := n.FindBitmap(name); d != nil {
			return n, d
		}
	}
	return nil, nil
}

func chainNode(n *Node) *Node {
	if c := chainChild(n); c != nil {
		return c.Node
	}
	return nil
}

// Writable is bdrv_is_writable: the node is open read-write (whether or
// not anyone writes it).
func (n *Node) Writable() bool { return !n.readOnly }

// CreateSuccessor freezes d for a backup (bdrv_dirty_bitmap_create_successor):
// d becomes busy and stops recording, and a new anonymous bitmap of the
// node records in its place (when d did) until Abdicate or Reclaim.
func (n *Node) CreateSuccessor(d *DirtyBitmap) error {
	if d.busy {
		return schema.Errorf("Cannot create a successor for a bitmap that is in-use by an operation")
	}
	if d.successor != nil {
		return schema.Errorf("Cannot create a successor for a bitmap that already has one")
	}
	s := &DirtyBitmap{bm: dirtybitmap.New(d.bm.Size(), d.bm.Granularity()), disabled: d.disabled}
	d.successor, d.disabled, d.busy = s, true, true
	n.addBitmap(s)
	return nil
}

// Abdicate ends a successful backup (bdrv_dirty_bitmap_abdicate): the
// successor, holding only the writes made since the backup began, takes
// d's name and persistence, and d is released. It returns the successor.
func (n *Node) Abdicate(d *DirtyBitmap) *DirtyBitmap {
	s := d.successor
	s.name, s.persistent = d.name, d.persistent
	d.successor, d.busy = nil, false
	n.releaseBitmap(d)
	return s
}

// Reclaim ends a backup that leaves d in place (bdrv_reclaim_dirty_bitmap):
// the successor's bits are merged back into d, which records again if
// the successor did, and the successor is released.
func (n *Node) Reclaim(d *DirtyBitmap) *DirtyBitmap {
	s := d.successor
	d.bm.Merge(s.bm)
	d.disabled, d.busy, d.successor = s.disabled, false, nil
	n.releaseBitmap(s)
	return d
}

// reopenBitmapsPrepare and reopenBitmapsCommit follow a change of the
// node's access mode: going read-only, the persistent bitmaps are stored
// first (while the image is still writable; flagged in use again if the
// reopen aborts) and become read-only; going read-write they are flagged
// in use again and record (qcow2_reopen_bitmaps_ro/_rw).
func (n *Node) reopenBitmapsPrepare(readOnly bool, t *tx) error {
	if !readOnly || n.readOnly {
		return nil
	}
	if err := n.storeBitmaps(); err != nil {
		return err
	}
	if st, ok := n.impl.(BitmapStore); ok {
		t.onAbort(func() { _ = st.ReopenBitmapsRW() })
	}
	return nil
}

func (n *Node) reopenBitmapsCommit(wasReadOnly bool) {
	if wasReadOnly == n.readOnly {
		return
	}
	for _, d := range n.dirty {
		if d.persistent {
			d.readonly = n.readOnly
		}
	}
	n.syncRecording()
}

// reopenBitmapsPost runs after a reopen's commit, with nothing drained
// (bdrv_reopen_commit_post): a node that became writable flags its
// stored bitmaps in use again.
func (n *Node) reopenBitmapsPost(wasReadOnly bool) {
	if !wasReadOnly || n.readOnly {
		return
	}
	if st, ok := n.impl.(BitmapStore); ok {
		_ = st.ReopenBitmapsRW() // as in QEMU, a failure leaves them unflagged
	}
}
