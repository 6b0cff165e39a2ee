package jobs

import (
	"sync"

	"blockd/dirtybitmap"
)

// dirtyMap is a job's view of a dirty bitmap (dirtybitmap.Bitmap, the one
// implementation): which granules of a node changed since they were last
// copied. Writers mark from any goroutine without a lock; the takers (the
// job, a copy-before-write) take granules out under mu, so that two of
// them never claim the same granule. A mark racing with a take is either
// taken with it or stays set: writers mark after their data landed, and
// the taker reads the data after the take.
type dirtyMap struct {
	mu     sync.Mutex // serializes takers, not writers
	bm     *dirtybitmap.Bitmap
	gran   int64
	notify chan struct{}
}

const dirtyGranularity = 64 << 10

func newDirtyMap(size int64) *dirtyMap { return newDirtyMapGran(size, dirtyGranularity) }

// newDirtyMapGran tracks in granules of gran bytes (a power of two).
func newDirtyMapGran(size, gran int64) *dirtyMap {
	return &dirtyMap{bm: dirtybitmap.New(size, uint64(gran)), gran: gran, notify: make(chan struct{}, 1)}
}

// mark sets every granule touching [off, off+n).
func (d *dirtyMap) mark(off, n int64) {
	if n <= 0 {
		return
	}
	d.bm.Mark(off, n)
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// take clears and returns the first dirty run of at most limit bytes (but
// at least one granule) at or after from (wrapping around), or ok=false
// when nothing is dirty.
func (d *dirtyMap) take(from, limit int64) (off, n int64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	off = d.bm.NextDirty(from)
	if off < 0 {
		if off = d.bm.NextDirty(0); off < 0 {
			return 0, 0, false
		}
	}
	// At least one granule, even one larger than max (a mirror's
	// granularity may exceed the copy chunk): taking nothing would leave
	// the caller asking for the same granule forever.
	end := min(d.roundUp(d.bm.NextClean(off)), off+max(limit/d.gran, 1)*d.gran)
	d.bm.Reset(off, end-off)
	return off, end - off, true
}

// roundUp extends off to the end of its granule.
func (d *dirtyMap) roundUp(off int64) int64 { return (off + d.gran - 1) &^ (d.gran - 1) }

// bytes is the amount of dirty data.
func (d *dirtyMap) bytes() int64 { return d.bm.Count() }

// size is the amount of data the map covers.
func (d *dirtyMap) size() int64 { return d.bm.Size() }

// dirtyIn is the amount of dirty data in [off, off+n).
func (d *dirtyMap) dirtyIn(off, n int64) int64 {
	var c int64
	d.bm.Extents(off, n, func(_, l int64) bool { c += l; return true })
	return c
}

// span is a byte range.
type span struct{ off, n int64 }

// takeRange clears and returns the dirty runs inside [off, off+n), which
// must be granule-aligned at off, in whole granules.
func (d *dirtyMap) takeRange(off, n int64) []span {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []span
	d.bm.Extents(off, n, func(o, l int64) bool {
		out = append(out, span{o, d.roundUp(o+l) - o})
		return true
	})
	for _, sp := range out {
		d.bm.Reset(sp.off, sp.n)
	}
	return out
}

// isSet reports whether the granule holding off is set.
func (d *dirtyMap) isSet(off int64) bool { return d.bm.Get(off) }

// allSet reports whether every granule touching [off, off+n) is set.
func (d *dirtyMap) allSet(off, n int64) bool {
	return d.bm.NextClean(off) >= min(off+n, d.bm.Size())
}
