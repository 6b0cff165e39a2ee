package qcow2

import (
	"math/bits"
	"sync"
)

// Guest cluster locks. Every request locks the guest clusters it touches
// before looking at their mapping and keeps them locked until its data I/O
// and metadata update are done:
//   - reads lock shared, so a cluster cannot be remapped (and its old host
//     cluster freed and reused) while a read copies from it;
//   - writes, write-zeroes and discards lock exclusive, which serializes
//     requests to one cluster (two allocating writes must not both
//     allocate, and copy-on-write must see the previous write's result);
//   - whole-image operations (Truncate, Check, Close) lock every stripe.
//
// Clusters map onto a fixed set of stripes; a request takes the stripes of
// its clusters in increasing stripe order, which rules out deadlock between
// requests. Stripes are only taken before Image.mu, never while holding it.

const nStripes = 256

type stripeSet [nStripes / 64]uint64

type clusterLocks struct {
	s [nStripes]sync.RWMutex
}

// set computes the stripes covering guest clusters [first, last].
func stripesFor(first, last int64) stripeSet {
	var set stripeSet
	if last-first+1 >= nStripes {
		for i := range set {
			set[i] = ^uint64(0)
		}
		return set
	}
	for c := first; c <= last; c++ {
		i := uint(c) % nStripes
		set[i/64] |= 1 << (i % 64)
	}
	return set
}

func (l *clusterLocks) lock(set stripeSet, exclusive bool) {
	for w, word := range set {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &= word - 1
			if exclusive {
				l.s[w*64+b].Lock()
			} else {
				l.s[w*64+b].RLock()
			}
		}
	}
}

func (l *clusterLocks) unlock(set stripeSet, exclusive bool) {
	for w, word := range set {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &= word - 1
			if exclusive {
				l.s[w*64+b].Unlock()
			} else {
				l.s[w*64+b].RUnlock()
			}
		}
	}
}

func allStripes() stripeSet { return stripesFor(0, nStripes) }

// lockExclusive stops every request on the image (all stripes, then
// mu) for an operation that changes metadata wholesale: close, resize,
// snapshots, amend, check. Call the returned function to let them go.
func (img *Image) lockExclusive() (unlock func()) {
	all := allStripes()
	img.locks.lock(all, true)
	img.mu.Lock()
	return func() {
		img.mu.Unlock()
		img.locks.unlock(all, true)
	}
}
