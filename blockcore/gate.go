package blockcore

import (
	"sync"

	"blockd/blockio"
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
}

func newGate(impl Impl, readOnly bool) *gate { return &gate{impl: impl, readOnly: readOnly} }

func (g *gate) drainBegin() { g.mu.Lock() }
func (g *gate) drainEnd()   { g.mu.Unlock() }

func (g *gate) ReadAt(p []byte, off int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.impl.ReadAt(p, off)
}

func (g *gate) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	return g.impl.WriteAt(p, off, flags)
}

func (g *gate) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	return g.impl.WriteZeroes(off, length, flags)
}

func (g *gate) Discard(off, length int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	return g.impl.Discard(off, length)
}

func (g *gate) Flush() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.readOnly {
		return nil
	}
	return g.impl.Flush()
}

func (g *gate) BlockStatus(off, length int64) (blockio.Status, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.impl.BlockStatus(off, length)
}

// Size is the driver's length rounded up to whole 512-byte sectors, as
// QEMU's block layer keeps it (total_sectors): a file of 196616 bytes is a
// node of 197120 bytes whose tail reads as zeroes.
func (g *gate) Size() (int64, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n, err := g.impl.Size()
	return (n + sectorSize - 1) &^ (sectorSize - 1), err
}

const sectorSize = 512

func (g *gate) Truncate(size int64) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.readOnly {
		return blockio.ErrReadOnly
	}
	return g.impl.Truncate(size)
}

// drain drains nodes in the given (parents-first) order and returns the
// function that resumes them.
func drain(nodes []*Node) (resume func()) {
	for _, n := range nodes {
		n.io.drainBegin()
	}
	return func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].io.drainEnd()
		}
	}
}
