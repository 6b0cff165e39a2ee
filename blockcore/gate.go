package blockcore

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"blockd/blockio"
	"blockd/dirtybitmap"
)

// gate is a node's data path. Requests hold the read side of mu for their
// duration; the owner drains a node by taking the write side, which waits
// for requests in flight and holds new ones back until it is released.
// The driver state may only be swapped while drained. Draining goes from
// parents to children so that a parent's request never waits on a drained
// child while its own drain waits for that request.
type gate struct {
	mu       sync.RWMutex
	impl     Impl
	readOnly bool
	// observers see every range changed by a successful write, zero-write
	// or discard (dirty tracking). Changed only while drained.
	observers []*observer
	depth     int // drain nesting, owner goroutine only
	// detectZeroes is the node's detect-zeroes mode ("", "on", "unmap"):
	// a write of zeroes becomes a zero write, as bdrv_aligned_pwritev
	// does. Changed only while drained.
	detectZeroes string
	// discardUnmap is discard=unmap: without it a discard is dropped
	// before it is tracked (bdrv_co_pdiscard without BDRV_O_UNMAP), so
	// it marks no bitmap. Changed only while drained.
	discardUnmap bool
	// stats counts every request (iostats.go); nil counts nothing.
	stats *IOStats
	// drainer is the driver told of the drained section in progress.
	drainer Drainer
	// recording is the node's dirty bitmaps that record writes, replaced
	// whole by the owner (Node.syncRecording); nil when there are none,
	// so a node without bitmaps pays one atomic load per write.
	recording atomic.Pointer[[]*dirtybitmap.Bitmap]
	// bitmaps is every bitmap of the node, resized when a request
	// through the gate resizes the node.
	bitmaps atomic.Pointer[[]*dirtybitmap.Bitmap]
}

// markDirty sets the range in every recording bitmap. As
// bdrv_co_write_req_finish, it runs once the driver was called, whether
// the request succeeded or not: a failed write may have changed data.
func (g *gate) markDirty(off, length int64) {
	if rec := g.recording.Load(); rec != nil {
		for _, b := range *rec {
			b.Mark(off, length)
		}
	}
}

func (g *gate) changed(off, length int64, err error) error {
	if err == nil {
		for _, o := range g.observers {
			o.f(off, length)
		}
	}
	return err
}

func newGate(impl Impl, readOnly bool) *gate {
	return &gate{impl: impl, readOnly: readOnly, stats: new(IOStats)}
}

// Drains nest: only the owner goroutine drains, so depth needs no lock.
// A driver that is a Drainer hears of its node's drained sections
// first, so that requests it holds back on its own (a throttle limit, an
// nbd node waiting for a reconnect) can end and the drain does not wait
// for them.
func (g *gate) drainBegin() {
	if g.depth == 0 {
		// Requests waiting inside the driver go on first, or the lock
		// below would wait for them.
		if d, ok := g.impl.(Drainer); ok {
			g.drainer = d
			d.DrainBegin()
		}
		g.mu.Lock()
	}
	g.depth++
}

func (g *gate) drainEnd() {
	g.depth--
	if g.depth == 0 {
		g.mu.Unlock()
		if g.drainer != nil {
			g.drainer.DrainEnd()
			g.drainer = nil
		}
	}
}

func (g *gate) ReadAt(p []byte, off int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.readAt(p, off)
}

func (g *gate) readAt(p []byte, off int64) error {
	t := g.stats.begin()
	err := g.impl.ReadAt(p, off)
	g.stats.Account(OpRead, off, int64(len(p)), t, err)
	return err
}

// startReadAt starts a read the driver ends on its own (an
// asynchronous driver), counted as readAt counts. The caller holds the
// read side of mu and releases it in done (edgeIO).
func (g *gate) startReadAt(p []byte, off int64, done func(error)) bool {
	a, ok := g.impl.(blockio.AsyncDevice)
	if !ok {
		return false
	}
	t := g.stats.begin()
	return a.StartReadAt(p, off, func(err error) {
		g.stats.Account(OpRead, off, int64(len(p)), t, err)
		done(err)
	})
}

// startWriteAt is writeAt for an asynchronous driver: observers, dirty
// bitmaps and counters see the write when it ends. A read-only node and
// detect-zeroes, which may turn the write into another request, leave
// the write to writeAt.
func (g *gate) startWriteAt(p []byte, off int64, flags blockio.WriteFlags, done func(error)) bool {
	a, ok := g.impl.(blockio.AsyncDevice)
	if !ok || g.readOnly || g.detectZeroes != "" {
		return false
	}
	t := g.stats.begin()
	n := int64(len(p))
	return a.StartWriteAt(p, off, flags, func(err error) {
		err = g.changed(off, n, err)
		g.markDirty(off, n)
		g.stats.Account(OpWrite, off, n, t, err)
		done(err)
	})
}

func (g *gate) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.sendRange(off, n, sink)
}

// sendRange is a read whose bytes a sink takes from the host file. Only
// a success counts: after a failure the caller reads the range the usual
// way, and that read counts (also as a failure, if it is one).
func (g *gate) sendRange(off, n int64, sink func(blockio.FileRange) error) error {
	t := g.stats.begin()
	err := blockio.SendRange(g.impl, off, n, sink)
	if err == nil {
		g.stats.Account(OpRead, off, n, t, nil)
	}
	return err
}

func (g *gate) StartWriteback() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.startWriteback()
}

func (g *gate) startWriteback() error {
	if g.readOnly {
		return nil
	}
	return blockio.StartWriteback(g.impl)
}

func (g *gate) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.writeAt(p, off, flags)
}

func (g *gate) writeAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	t := g.stats.begin()
	err := g.write(p, off, flags)
	g.markDirty(off, int64(len(p)))
	g.stats.Account(OpWrite, off, int64(len(p)), t, err)
	return err
}

func (g *gate) write(p []byte, off int64, flags blockio.WriteFlags) error {
	if g.detectZeroes != "" && blockio.AllZero(p) {
		zf := flags | blockio.NoFallback
		if g.detectZeroes == "unmap" {
			zf |= blockio.MayUnmap
		}
		err := g.impl.WriteZeroes(off, int64(len(p)), zf)
		if !errors.Is(err, blockio.ErrNotSupported) {
			return g.changed(off, int64(len(p)), err)
		}
	}
	return g.changed(off, int64(len(p)), g.impl.WriteAt(p, off, flags))
}

func (g *gate) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.writeZeroes(off, length, flags)
}

func (g *gate) writeZeroes(off, length int64, flags blockio.WriteFlags) error {
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	t := g.stats.begin()
	err := g.changed(off, length, g.impl.WriteZeroes(off, length, flags))
	g.markDirty(off, length)
	g.stats.Account(OpWriteZeroes, off, length, t, err)
	return err
}

func (g *gate) Discard(off, length int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.discard(off, length)
}

func (g *gate) discard(off, length int64) error {
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	t := g.stats.begin()
	err := g.changed(off, length, g.impl.Discard(off, length))
	if g.discardUnmap {
		g.markDirty(off, length)
	}
	g.stats.Account(OpDiscard, off, length, t, err)
	return err
}

func (g *gate) Flush() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.flush()
}

func (g *gate) flush() error {
	if g.readOnly {
		return nil
	}
	t := g.stats.begin()
	err := g.impl.Flush()
	g.stats.Account(OpFlush, 0, 0, t, err)
	return err
}

func (g *gate) BlockStatus(off, length int64) (blockio.Status, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.blockStatus(off, length)
}

func (g *gate) blockStatus(off, length int64) (blockio.Status, error) {
	return g.impl.BlockStatus(off, length)
}

// Size is the driver's length rounded up to whole 512-byte sectors, as
// QEMU's block layer keeps it (total_sectors): a file of 196616 bytes is a
// node of 197120 bytes whose tail reads as zeroes.
func (g *gate) Size() (int64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.size()
}

func (g *gate) size() (int64, error) {
	n, err := g.impl.Size()
	return (n + sectorSize - 1) &^ (sectorSize - 1), err
}

const sectorSize = 512

func (g *gate) Truncate(size int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.truncate(size)
}

func (g *gate) truncate(size int64) error {
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	if err := g.impl.Truncate(size); err != nil {
		return err
	}
	// The bitmaps follow the new size (bdrv_dirty_bitmap_truncate).
	if all := g.bitmaps.Load(); all != nil {
		if n, err := g.size(); err == nil {
			for _, b := range *all {
				b.Resize(n)
			}
		}
	}
	return nil
}

// DrainNodes drains exactly the given nodes (parents first) until the
// returned function is called. The owner may still reach their drivers
// through Impl while they are drained.
func (g *Graph) DrainNodes(nodes ...*Node) (resume func()) { return g.drain(nodes) }

// drain drains nodes in the given (parents-first) order and returns the
// function that resumes them; calling it again does nothing. The graph
// remembers the drains in progress, so that recovery from a panic
// resumes those whose resume never ran.
func (g *Graph) drain(nodes []*Node) (resume func()) {
	d := &drainSection{quiescers: quiescersOf(nodes)}
	for _, q := range d.quiescers {
		q.DrainBegin()
	}
	// Drivers below a parent hear of the section before the parent's
	// gate waits for its requests, which may be waiting in them.
	for _, n := range nodes {
		if dr, ok := n.impl.(Drainer); ok {
			dr.DrainBegin()
			d.drainers = append(d.drainers, dr)
		}
	}
	for _, n := range nodes {
		n.io.drainBegin()
	}
	d.nodes = nodes
	g.drains = append(g.drains, d)
	return func() {
		if d.done {
			return
		}
		d.end()
		g.drains = slices.DeleteFunc(g.drains, func(x *drainSection) bool { return x == d })
	}
}

// quiesce tells the users of nodes (and of their ancestors) that a
// drained section begins, without holding their I/O back yet: QEMU's
// drained sections start before checks that may still do I/O (a flush).
func (g *Graph) quiesce(nodes []*Node) (end func()) {
	d := &drainSection{quiescers: quiescersOf(nodes)}
	for _, q := range d.quiescers {
		q.DrainBegin()
	}
	g.drains = append(g.drains, d)
	return func() {
		if d.done {
			return
		}
		d.end()
		g.drains = slices.DeleteFunc(g.drains, func(x *drainSection) bool { return x == d })
	}
}

// QuiesceAll is bdrv_drain_all's effect on users: every quiescer of the
// graph sees a drained section begin and end.
func (g *Graph) QuiesceAll() {
	end := g.quiesce(g.named.slice())
	end()
}

type drainSection struct {
	nodes     []*Node
	quiescers []Quiescer
	drainers  []Drainer
	done      bool
}

func (d *drainSection) end() {
	d.done = true
	for i := len(d.nodes) - 1; i >= 0; i-- {
		d.nodes[i].io.drainEnd()
	}
	for _, dr := range d.drainers {
		dr.DrainEnd()
	}
	for i := len(d.quiescers) - 1; i >= 0; i-- {
		d.quiescers[i].DrainEnd()
	}
}

// Quiescer is a user of nodes that is not a node (a job) and reacts to
// drained sections: a drained node drains its parents, up to users, and a
// job pauses for the section, as QEMU's child_job does. Calls nest. A
// driver implementing it hears of its own node's sections (gate).
type Quiescer interface {
	DrainBegin()
	DrainEnd()
}

// quiescersOf lists, once each and in a stable order, the Quiescer
// parents of nodes and of every node above them.
func quiescersOf(nodes []*Node) []Quiescer {
	seen := map[*Node]bool{}
	var out []Quiescer
	var visit func(n *Node)
	visit = func(n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		for _, c := range n.parents {
			switch p := c.Parent.(type) {
			case *Node:
				visit(p)
			case Quiescer:
				if !slices.Contains(out, Quiescer(p)) {
					out = append(out, p)
				}
			}
		}
	}
	for _, n := range nodes {
		visit(n)
	}
	return out
}

// ObserveWrites calls f for every range of n changed from now on, until
// the returned function is called. Registration drains n, so no write is
// half observed.
func ObserveWrites(n *Node, f func(off, length int64)) (stop func()) {
	o := &observer{f}
	n.io.drainBegin()
	n.io.observers = append(n.io.observers, o)
	n.io.drainEnd()
	return func() {
		n.io.drainBegin()
		defer n.io.drainEnd()
		n.io.observers = slices.DeleteFunc(n.io.observers, func(x *observer) bool { return x == o })
	}
}

type observer struct{ f func(off, length int64) }

// OwnerIO is the data path for the owner goroutine's own requests. While
// the owner holds the node drained (an earlier action of the same
// transaction), it is the gate without its lock: the owner holds that
// lock itself and would wait for it forever, and no other request can be
// in flight. Otherwise it is the gate. Owner goroutine only.
func (n *Node) OwnerIO() blockio.Device {
	if n.io.depth > 0 {
		return drainedIO{n.io}
	}
	return n.io
}

// drainedIO is a drained gate's requests without the lock, with the
// gate's accounting, read-only checks and observers.
type drainedIO struct{ g *gate }

func (d drainedIO) ReadAt(p []byte, off int64) error { return d.g.readAt(p, off) }
func (d drainedIO) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	return d.g.writeAt(p, off, flags)
}
func (d drainedIO) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	return d.g.writeZeroes(off, length, flags)
}
func (d drainedIO) Discard(off, length int64) error { return d.g.discard(off, length) }
func (d drainedIO) Flush() error                    { return d.g.flush() }
func (d drainedIO) BlockStatus(off, length int64) (blockio.Status, error) {
	return d.g.blockStatus(off, length)
}
func (d drainedIO) Size() (int64, error)      { return d.g.size() }
func (d drainedIO) Truncate(size int64) error { return d.g.truncate(size) }

// Quiesce begins a drained section of nodes for their users only (jobs
// pause), as quiesce does, until the returned function is called.
func (g *Graph) Quiesce(nodes ...*Node) (end func()) { return g.quiesce(nodes) }
