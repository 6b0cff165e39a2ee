package jobs

import (
	"sync"
)

// dirtyMap tracks which granules of a node changed since they were last
// copied (QEMU's dirty bitmap). Writers mark from any goroutine; the job
// takes granules out in order.
type dirtyMap struct {
	mu     sync.Mutex
	gran   int64
	bits   []uint64
	count  int64
	notify chan struct{}
}

const dirtyGranularity = 64 << 10

func newDirtyMap(size int64) *dirtyMap { return newDirtyMapGran(size, dirtyGranularity) }

// newDirtyMapGran tracks in granules of gran bytes (a power of two).
func newDirtyMapGran(size, gran int64) *dirtyMap {
	n := (size + gran - 1) / gran
	return &dirtyMap{gran: gran, bits: make([]uint64, (n+63)/64), notify: make(chan struct{}, 1)}
}

// mark sets every granule touching [off, off+n).
func (d *dirtyMap) mark(off, n int64) {
	if n <= 0 {
		return
	}
	d.mu.Lock()
	for g := off / d.gran; g <= (off+n-1)/d.gran; g++ {
		w, b := g/64, uint(g%64)
		if w >= int64(len(d.bits)) {
			d.grow(w + 1)
		}
		if d.bits[w]&(1<<b) == 0 {
			d.bits[w] |= 1 << b
			d.count++
		}
	}
	d.mu.Unlock()
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

func (d *dirtyMap) grow(words int64) {
	d.bits = append(d.bits, make([]uint64, words-int64(len(d.bits)))...)
}

// take clears and returns the first dirty run of at most max bytes at or
// after from (wrapping around), or ok=false when nothing is dirty.
func (d *dirtyMap) take(from, max int64) (off, n int64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.count == 0 {
		return 0, 0, false
	}
	total := int64(len(d.bits)) * 64
	start := from / d.gran
	for i := int64(0); i < total; i++ {
		g := (start + i) % total
		if d.bits[g/64]&(1<<uint(g%64)) == 0 {
			continue
		}
		first := g
		for g < total && (g-first+1)*d.gran <= max && d.bits[g/64]&(1<<uint(g%64)) != 0 {
			d.bits[g/64] &^= 1 << uint(g%64)
			d.count--
			g++
		}
		return first * d.gran, (g - first) * d.gran, true
	}
	return 0, 0, false
}

// bytes is the amount of dirty data.
func (d *dirtyMap) bytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count * d.gran
}

// span is a byte range.
type span struct{ off, n int64 }

// takeRange clears and returns the dirty runs inside [off, off+n), which
// must be granule-aligned at off.
func (d *dirtyMap) takeRange(off, n int64) []span {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []span
	total := int64(len(d.bits)) * 64
	for g := off / d.gran; g < total && g*d.gran < off+n; g++ {
		if d.bits[g/64]&(1<<uint(g%64)) == 0 {
			continue
		}
		d.bits[g/64] &^= 1 << uint(g%64)
		d.count--
		if k := len(out) - 1; k >= 0 && out[k].off+out[k].n == g*d.gran {
			out[k].n += d.gran
		} else {
			out = append(out, span{g * d.gran, d.gran})
		}
	}
	return out
}

// isSet reports whether the granule holding off is set.
func (d *dirtyMap) isSet(off int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := off / d.gran
	return g/64 < int64(len(d.bits)) && d.bits[g/64]&(1<<uint(g%64)) != 0
}

// allSet reports whether every granule touching [off, off+n) is set.
func (d *dirtyMap) allSet(off, n int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for g := off / d.gran; g <= (off+n-1)/d.gran; g++ {
		if g/64 >= int64(len(d.bits)) || d.bits[g/64]&(1<<uint(g%64)) == 0 {
			return false
		}
	}
	return true
}
