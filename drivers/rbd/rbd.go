package rbd

import (
	"strconv"
	"sync"
	"sync/atomic"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/rbd/librbd"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "rbd", Protocol: true, Open: open,
		FilenamePrefix: "rbd:", ParseFilename: ParseFilename})
}

// node is one open rbd image. Requests go straight to librbd, which
// orders and caches them itself; the node keeps only the size, which
// changes through Truncate.
type node struct {
	self       *blockcore.Node
	opts       *schema.BlockdevOptionsRbd
	conn       *conn
	image      *librbd.Image
	objectSize int64
	size       atomic.Int64
	dataCache  dataCache
}

// dataCache remembers one range that block status found to be data, as
// QEMU's block-status cache does for protocol nodes. Saying "data" of a
// range that reads as zeroes is never wrong, only less precise, so the
// cache stays correct even when another client discards behind blockd's
// back; blockd's own discards, zero writes and resizes drop it.
type dataCache struct {
	mu         sync.Mutex
	start, end int64 // end == 0: nothing cached
}

func (c *dataCache) lookup(off int64) (end int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off >= c.start && off < c.end {
		return c.end, true
	}
	return 0, false
}

func (c *dataCache) fill(start, end int64) {
	c.mu.Lock()
	c.start, c.end = start, end
	c.mu.Unlock()
}

func (c *dataCache) drop() { c.fill(0, 0) }

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Rbd
	if o.Encrypt != nil {
		return nil, schema.Errorf("blockd does not support encrypted rbd images ('encrypt')")
	}
	cache := true
	if c := oc.Options.Cache; c != nil && c.Direct != nil && *c.Direct {
		cache = false
	}
	c, err := connect(o, cache, oc.Graph.Objects())
	if err != nil {
		return nil, err
	}
	// Images open read-write (librbd's read-only open refuses to take
	// the exclusive lock a later reopen would need); the gate in front of
	// the node refuses writes to a read-only node.
	im, err := c.ioctx.OpenImage(o.Image, o.Snapshot)
	if err != nil {
		c.close()
		return nil, errnoErrorf(err, "error reading header from %s", o.Image)
	}
	info, err := im.Stat()
	if err != nil {
		im.Close()
		c.close()
		return nil, errnoErrorf(err, "error getting image info from %s", o.Image)
	}
	if o.Snapshot != nil && !oc.ReadOnly {
		if !oc.AutoReadOnly {
			im.Close()
			c.close()
			return nil, schema.Errorf("rbd snapshots are read-only")
		}
		oc.ReadOnly = true
	}
	n := &node{self: oc.Node, opts: o, conn: c, image: im, objectSize: int64(info.ObjectSize)}
	n.size.Store(int64(info.Size))
	return n, nil
}

func (n *node) ReadAt(p []byte, off int64) error {
	if err := blockio.CheckRange(off, int64(len(p)), n.size.Load()); err != nil {
		return err
	}
	return n.image.ReadAt(p, off)
}

func (n *node) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, int64(len(p)), n.size.Load()); err != nil {
		return err
	}
	if err := n.image.WriteAt(p, off); err != nil {
		return err
	}
	if flags&blockio.FUA != 0 {
		return n.image.Flush()
	}
	return nil
}

// StartReadAt and StartWriteAt hand a request to librbd and return: the
// image's poller ends it. A request out of range and a FUA write (a
// write, then a flush) go the synchronous way.
func (n *node) EndsRequests() bool { return true }

func (n *node) StartReadAt(p []byte, off int64, done func(error)) bool {
	if blockio.CheckRange(off, int64(len(p)), n.size.Load()) != nil {
		return false
	}
	return n.image.StartRead(p, off, done) == nil
}

func (n *node) StartWriteAt(p []byte, off int64, flags blockio.WriteFlags, done func(error)) bool {
	if flags&blockio.FUA != 0 || blockio.CheckRange(off, int64(len(p)), n.size.Load()) != nil {
		return false
	}
	return n.image.StartWrite(p, off, done) == nil
}

func (n *node) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, length, n.size.Load()); err != nil {
		return err
	}
	n.dataCache.drop()
	if err := n.image.WriteZeroes(off, length, flags&blockio.MayUnmap != 0); err != nil {
		return err
	}
	if flags&blockio.FUA != 0 {
		return n.image.Flush()
	}
	return nil
}

func (n *node) Discard(off, length int64) error {
	if err := blockio.CheckRange(off, length, n.size.Load()); err != nil {
		return err
	}
	n.dataCache.drop()
	return n.image.Discard(off, length)
}

func (n *node) Flush() error { return n.image.Flush() }

func (n *node) Size() (int64, error) { return n.size.Load(), nil }

// Truncate is qemu_rbd_co_truncate with preallocation off: librbd
// resizes the image, and a grown range reads as zeroes.
func (n *node) Truncate(size int64) error {
	if size == n.size.Load() {
		return nil
	}
	n.dataCache.drop()
	if err := n.image.Resize(uint64(size)); err != nil {
		return errnoErrorf(err, "failed to resize rbd image")
	}
	n.size.Store(size)
	return nil
}

func (n *node) Close() error {
	err := n.image.Close()
	n.conn.close()
	return err
}

// statusWindow is how many objects a block status query asks librbd
// about at least, so that the data found ahead of a sequential reader
// answers its next queries from the cache.
const statusWindow = 16

// BlockStatus is qemu_rbd_co_block_status: where the image has a valid
// fast-diff object map, extents librbd reports as existing are data and
// the rest reads as zeroes; otherwise everything is data. The answer for
// a protocol node is always allocated at its own offset.
func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	size := n.size.Load()
	if length <= 0 || off >= size {
		return blockio.Status{}, blockio.CheckRange(off, max(length, 1), size)
	}
	length = min(length, size-off)
	const data = blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid
	if end, ok := n.dataCache.lookup(off); ok {
		return blockio.Status{Flags: data, Length: min(end-off, length), HostOffset: off}, nil
	}
	st := n.status(off, min(max(length, statusWindow*n.objectSize), size-off))
	if st.Flags&blockio.StatusData != 0 {
		n.dataCache.fill(off, off+st.Length)
	}
	st.Length = min(st.Length, length)
	return st, nil
}

// status asks librbd about [off, off+length).
func (n *node) status(off, length int64) blockio.Status {
	st := blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid, Length: length, HostOffset: off}
	if !n.fastDiffValid() {
		return st
	}
	// librbd's whole-object diff answers per object, so the query starts
	// at the object holding off and the answer is trimmed back to off.
	head := off % n.objectSize
	start, span := uint64(off-head), uint64(length+head)
	var got uint64 // bytes of the leading run, from start
	exists := false
	stopped, err := n.image.DiffIterate(start, span, true, func(o, l uint64, ex bool) bool {
		if !ex {
			// A discarded object: a hole, where the run may continue.
			return true
		}
		if !exists && o > start {
			got = o - start // a hole before the first data
			return false
		}
		if exists && o > start+got {
			return false // data, then a hole
		}
		got += l
		exists = true
		return true
	})
	if err != nil {
		return st // no information: everything is data
	}
	if !exists {
		if !stopped {
			got = span // no extent at all: the whole range is a hole
		}
		st.Flags = blockio.StatusZero | blockio.StatusAllocated | blockio.StatusOffsetValid
	}
	if got <= uint64(head) {
		return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid, Length: length, HostOffset: off}
	}
	st.Length = min(int64(got)-head, length)
	return st
}

// fastDiffValid: the image has the fast-diff feature and its object map
// is valid, so that diff iteration reflects the allocation.
func (n *node) fastDiffValid() bool {
	f, err := n.image.Features()
	if err != nil || f&librbd.FeatureFastDiff == 0 {
		return false
	}
	fl, err := n.image.Flags()
	return err == nil && fl&librbd.FlagFastDiffInvalid == 0
}

// StrongOptions are the options qemu_rbd_strong_runtime_opts lists, as
// the node was given them; they make the node's json: filename.
func (n *node) StrongOptions() map[string]any {
	o := n.opts
	m := map[string]any{"pool": o.Pool, "image": o.Image}
	if o.Namespace != nil {
		m["namespace"] = *o.Namespace
	}
	if o.Conf != nil {
		m["conf"] = *o.Conf
	}
	if o.Snapshot != nil {
		m["snapshot"] = *o.Snapshot
	}
	if o.User != nil {
		m["user"] = *o.User
	}
	for i, s := range o.Server {
		m[serverKey(i, "host")] = s.Host
		m[serverKey(i, "port")] = s.Port
	}
	return m
}

func serverKey(i int, k string) string {
	return "server." + strconv.Itoa(i) + "." + k
}

// DirtyFlag makes queries show dirty-flag: rbd answers bdrv_get_info.
func (n *node) DirtyFlag() bool { return false }

// FillImageInfo adds what qemu-storage-daemon reports for rbd images:
// the object size as cluster size, the image's snapshots, and an empty
// format-specific part (no encryption).
func (n *node) FillImageInfo(info *schema.ImageInfo) {
	cs := n.objectSize
	info.ClusterSize = &cs
	snaps, err := n.image.Snapshots()
	if err == nil {
		for _, s := range snaps {
			zero := int64(0)
			info.Snapshots = append(info.Snapshots, schema.SnapshotInfo{
				ID: s.Name, Name: s.Name, VMStateSize: int64(s.Size), Icount: &zero,
			})
		}
	}
	info.FormatSpecific = &schema.ImageInfoSpecific{Type: "rbd", Rbd: &schema.ImageInfoSpecificRbdWrapper{}}
}

var _ blockcore.Reopener = (*node)(nil)

// ReopenPrepare is qemu_rbd_reopen_prepare: a node on a snapshot stays
// read-only; nothing else of the node changes on a reopen.
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	if n.opts.Snapshot != nil && !rs.ReadOnly {
		return nil, nil, schema.Errorf("Cannot change node '%s' to r/w when using RBD snapshot", n.self.Name())
	}
	return func() {}, func() {}, nil
}
