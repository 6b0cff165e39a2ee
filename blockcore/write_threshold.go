package blockcore

import (
	"sync"

	"blockd/schema"
)

// writeThreshold is block/write-threshold.c: the first write that ends
// past the threshold announces BLOCK_WRITE_THRESHOLD and clears it. The
// check runs on the data path (a write observer), so the threshold has
// its own lock.
type writeThreshold struct {
	mu     sync.Mutex
	offset uint64
}

func (w *writeThreshold) get() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.offset
}

// SetWriteThreshold is block-set-write-threshold (0 disables it).
func (g *Graph) SetWriteThreshold(nodeName string, threshold uint64) error {
	n := g.nodes[nodeName]
	if n == nil {
		return schema.Errorf("Device '%s' not found", nodeName)
	}
	if n.threshold == nil {
		w := &writeThreshold{}
		n.threshold = w
		name, bus := n.name, g.bus
		ObserveWrites(n, func(off, length int64) {
			end := uint64(off + length)
			w.mu.Lock()
			thr := w.offset
			fire := thr > 0 && end > thr
			if fire {
				w.offset = 0
			}
			w.mu.Unlock()
			if fire && bus != nil {
				bus.Publish(schema.BlockWriteThreshold{NodeName: name, AmountExceeded: end - thr, WriteThreshold: thr})
			}
		})
	}
	n.threshold.mu.Lock()
	n.threshold.offset = threshold
	n.threshold.mu.Unlock()
	return nil
}
