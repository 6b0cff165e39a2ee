package blockcore

import (
	"sync/atomic"

	"blockd/blockio"
)

// edgeGate mirrors Child.Node's data path for goroutines other than the
// owner. It changes only while the node the edge leaves is drained (every
// retarget happens inside a drain of its old node), which is what makes
// edgeIO's check below race-free.
type edgeGate struct{ p atomic.Pointer[gate] }

func (e *edgeGate) set(n *Node) { e.p.Store(n.io) }

// IO is the data path of a user edge (an export's BlockBackend): every
// request goes to the node the edge points at when the request starts, and
// follows the edge when the owner moves it (active commit, snapshot,
// filter insertion). A request enters the gate it loaded and checks that
// the edge still points there; since the edge only moves while that gate
// is drained, a request that passes the check runs entirely on the node
// the edge held, and one that loses the race retries on the new node.
func (c *Child) IO() blockio.Device { return edgeIO{c} }

type edgeIO struct{ c *Child }

func (e edgeIO) enter() *gate {
	for {
		g := e.c.gate.p.Load()
		g.mu.RLock()
		if e.c.gate.p.Load() == g {
			return g
		}
		g.mu.RUnlock()
	}
}

func (e edgeIO) ReadAt(p []byte, off int64) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.readAt(p, off)
}

// EndsRequests looks at the driver of the node the edge points at now;
// the edge may move before a request starts, so the answer is a hint.
func (e edgeIO) EndsRequests() bool {
	g := e.enter()
	defer g.mu.RUnlock()
	_, ok := g.impl.(blockio.AsyncDevice)
	return ok
}

// StartReadAt and StartWriteAt hold the node's gate, as a synchronous
// request does, until the driver ends the request: a drain waits for it.
func (e edgeIO) StartReadAt(p []byte, off int64, done func(error)) bool {
	g := e.enter()
	if g.startReadAt(p, off, func(err error) { g.mu.RUnlock(); done(err) }) {
		return true
	}
	g.mu.RUnlock()
	return false
}

func (e edgeIO) StartWriteAt(p []byte, off int64, f blockio.WriteFlags, done func(error)) bool {
	g := e.enter()
	if g.startWriteAt(p, off, f, func(err error) { g.mu.RUnlock(); done(err) }) {
		return true
	}
	g.mu.RUnlock()
	return false
}

func (e edgeIO) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.sendRange(off, n, sink)
}

func (e edgeIO) StartWriteback() error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.startWriteback()
}

func (e edgeIO) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.writeAt(p, off, f)
}

func (e edgeIO) WriteZeroes(off, n int64, f blockio.WriteFlags) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.writeZeroes(off, n, f)
}

func (e edgeIO) Discard(off, n int64) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.discard(off, n)
}

func (e edgeIO) Flush() error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.flush()
}

func (e edgeIO) BlockStatus(off, n int64) (blockio.Status, error) {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.blockStatus(off, n)
}

func (e edgeIO) Size() (int64, error) {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.size()
}

func (e edgeIO) Truncate(n int64) error {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.truncate(n)
}

// Backing is the backing device of the node the edge points at now.
func (e edgeIO) Backing() blockio.Device {
	g := e.enter()
	defer g.mu.RUnlock()
	return g.backing()
}

// Backing makes the data path a blockio.Backed: the device unallocated
// ranges of this node read from, or nil.
func (g *gate) Backing() blockio.Device {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.backing()
}

func (g *gate) backing() blockio.Device { return blockio.BackingOf(g.impl) }

// DebugEvents is the node's debug event hook (blkdebug's), or nil, for
// the format driver above (blockio.DebugEvents). The driver's own
// method is called directly: raising an event is no request.
func (g *gate) DebugEvents() func(string) { return blockio.DebugEvents(g.impl) }

// Backing of a job filter is its child's: the filter itself is not a
// layer of the chain, it passes block status through.
func (p *passThrough) Backing() blockio.Device { return p.child.io.Backing() }
