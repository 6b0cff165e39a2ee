// Package dirtybitmap owns the dirty bitmap itself: one bit per granule of
// a device, set from any goroutine by lock-free atomic ORs on the data
// path, read and reset by whoever consumes it (queries, backups, NBD
// block status, persistence). It knows nothing of nodes or names; the
// graph (blockcore) keeps the named bitmaps of each node and the qcow2
// driver stores them.
//
// The bit layout is the one QEMU's hbitmap keeps in its last level and
// the qcow2 bitmaps extension stores on disk: bit i of little-endian
// 64-bit word i/64 is granule i. Hashing and serializing therefore need
// no conversion.
package dirtybitmap

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Bitmap is a dirty bitmap over size bytes in granules of 1<<shift bytes.
// Every method is safe from any goroutine. Mark never blocks and never
// loses a bit, also while Resize runs; the owner's operations (Clear,
// Reset, Merge) are not meant to race with a Resize.
type Bitmap struct {
	shift    uint
	st       atomic.Pointer[state]
	resizing sync.Mutex // serializes Resize
}

type state struct {
	size  int64 // bytes covered
	words []atomic.Uint64
}

// MinGranularity and MaxGranularity bound the granularity: 512 bytes
// (one sector) up to 2^31, the largest power of two a uint32 holds.
const (
	MinGranularity = 512
	MaxGranularity = 1 << 31
)

// ValidGranularity reports whether g is a power of two of at least 512.
func ValidGranularity(g uint64) bool {
	return g >= MinGranularity && g <= MaxGranularity && g&(g-1) == 0
}

// New returns a clean bitmap over size bytes with the given granularity,
// which must satisfy ValidGranularity.
func New(size int64, granularity uint64) *Bitmap {
	if !ValidGranularity(granularity) {
		panic(fmt.Sprintf("dirtybitmap: bad granularity %d", granularity))
	}
	b := &Bitmap{shift: uint(bits.TrailingZeros64(granularity))}
	b.st.Store(newState(size, b.shift))
	return b
}

func newState(size int64, shift uint) *state {
	return &state{size: size, words: make([]atomic.Uint64, (granules(size, shift)+63)/64)}
}

func granules(size int64, shift uint) int64 {
	return (size + (1 << shift) - 1) >> shift
}

// Granularity is the number of bytes one bit stands for.
func (b *Bitmap) Granularity() uint64 { return 1 << b.shift }

// Size is the number of bytes the bitmap covers.
func (b *Bitmap) Size() int64 { return b.st.Load().size }

// Granules is the number of bits.
func (b *Bitmap) Granules() int64 { return granules(b.Size(), b.shift) }

// span returns the first and last granule touching [off, off+n), clipped
// to the bitmap, and false when nothing is left.
func (b *Bitmap) span(s *state, off, n int64) (first, last int64, ok bool) {
	if n <= 0 || off < 0 || off >= s.size {
		return 0, 0, false
	}
	end := min(off+n, s.size)
	return off >> b.shift, (end - 1) >> b.shift, true
}

// wordMasks calls f for each word index and mask covering granules
// first..last.
func wordMasks(first, last int64, f func(w int64, mask uint64)) {
	for w := first / 64; w <= last/64; w++ {
		lo, hi := int64(0), int64(63)
		if w == first/64 {
			lo = first % 64
		}
		if w == last/64 {
			hi = last % 64
		}
		f(w, (^uint64(0)>>(63-uint(hi-lo)))<<uint(lo))
	}
}

// Mark sets every granule touching [off, off+n). Granules already set are
// only read, so bitmaps that see the same areas written again cost no
// cache-line writes. A Resize that swapped the bits meanwhile gets the
// mark again on the new ones (see Resize).
func (b *Bitmap) Mark(off, n int64) {
	s := b.st.Load()
	for {
		b.markIn(s, off, n)
		ns := b.st.Load()
		if ns == s {
			return
		}
		s = ns
	}
}

func (b *Bitmap) markIn(s *state, off, n int64) {
	first, last, ok := b.span(s, off, n)
	if !ok {
		return
	}
	if first == last { // the common case: one request inside one granule
		w := &s.words[first/64]
		if m := uint64(1) << uint(first%64); w.Load()&m == 0 {
			w.Or(m)
		}
		return
	}
	wordMasks(first, last, func(w int64, m uint64) {
		if s.words[w].Load()&m != m {
			s.words[w].Or(m)
		}
	})
}

// Reset clears every granule that lies entirely inside [off, off+n), as
// hbitmap_reset does for aligned ranges; the granule holding the end of
// the device is cleared when the range reaches the end.
func (b *Bitmap) Reset(off, n int64) {
	s := b.st.Load()
	if n <= 0 || off < 0 || off >= s.size {
		return
	}
	g := int64(1) << b.shift
	first := (off + g - 1) >> b.shift
	end := off + n
	var last int64
	if end >= s.size {
		last = (s.size - 1) >> b.shift
	} else {
		last = end>>b.shift - 1
	}
	if last < first {
		return
	}
	wordMasks(first, last, func(w int64, m uint64) { s.words[w].And(^m) })
}

// Clear resets every granule.
func (b *Bitmap) Clear() {
	s := b.st.Load()
	for i := range s.words {
		s.words[i].Store(0)
	}
}

// Get reports whether the granule holding byte off is dirty.
func (b *Bitmap) Get(off int64) bool {
	s := b.st.Load()
	if off < 0 || off >= s.size {
		return false
	}
	g := off >> b.shift
	return s.words[g/64].Load()&(1<<uint(g%64)) != 0
}

// Count is the dirty amount in bytes: dirty granules times the
// granularity (the last granule counts whole, as QEMU counts it).
func (b *Bitmap) Count() int64 {
	s := b.st.Load()
	var n int64
	for i := range s.words {
		n += int64(bits.OnesCount64(s.words[i].Load()))
	}
	return n << b.shift
}

// NextDirty returns the start of the first dirty granule at or after
// off (aligned down to the granule), or -1.
func (b *Bitmap) NextDirty(off int64) int64 {
	return b.next(off, false)
}

// NextClean returns the start of the first clean granule at or after off,
// or Size() when everything from off on is dirty.
func (b *Bitmap) NextClean(off int64) int64 {
	n := b.next(off, true)
	if n < 0 {
		return b.Size()
	}
	return n
}

func (b *Bitmap) next(off int64, clean bool) int64 {
	s := b.st.Load()
	if off < 0 {
		off = 0
	}
	if off >= s.size {
		return -1
	}
	total := granules(s.size, b.shift)
	g := off >> b.shift
	for w := g / 64; w < int64(len(s.words)); w++ {
		v := s.words[w].Load()
		if clean {
			v = ^v
		}
		if w == g/64 {
			v &= ^uint64(0) << uint(g%64)
		}
		if v != 0 {
			i := w*64 + int64(bits.TrailingZeros64(v))
			if i >= total {
				return -1
			}
			return max(i<<b.shift, off&^((1<<b.shift)-1))
		}
	}
	return -1
}

// Extents calls f for every run of dirty bytes in [off, off+n), clipped
// to that range and to the bitmap, in order; f returning false stops.
func (b *Bitmap) Extents(off, n int64, f func(off, n int64) bool) {
	end := min(off+n, b.Size())
	for off < end {
		d := b.NextDirty(off)
		if d < 0 || d >= end {
			return
		}
		d = max(d, off)
		c := min(b.NextClean(d), end)
		if !f(d, c-d) {
			return
		}
		off = c
	}
}

// Merge sets in b every range dirty in src (which may have another
// granularity; both must cover the same size).
func (b *Bitmap) Merge(src *Bitmap) {
	if src.shift == b.shift {
		s, d := src.st.Load(), b.st.Load()
		for i := range min(len(s.words), len(d.words)) {
			if v := s.words[i].Load(); v != 0 {
				d.words[i].Or(v)
			}
		}
		return
	}
	src.Extents(0, src.Size(), func(off, n int64) bool { b.Mark(off, n); return true })
}

// Copy returns an independent bitmap with the same size, granularity and
// bits.
func (b *Bitmap) Copy() *Bitmap {
	c := New(b.Size(), b.Granularity())
	c.Merge(b)
	return c
}

// Equal reports whether a and b have the same geometry and bits.
func (b *Bitmap) Equal(o *Bitmap) bool {
	s, t := b.st.Load(), o.st.Load()
	if b.shift != o.shift || s.size != t.size {
		return false
	}
	for i := range s.words {
		if s.words[i].Load() != t.words[i].Load() {
			return false
		}
	}
	return true
}

// Resize changes the covered size (bdrv_dirty_bitmap_truncate); granules
// past a shrunk end are dropped, a grown tail starts clean. Writers may
// mark meanwhile: the old bits are copied once before the new ones are
// published and once after, and a Mark that finds the bits swapped under
// it marks the new ones too, so no mark is lost (atomics are
// sequentially consistent: a mark the second copy misses sees the swap).
func (b *Bitmap) Resize(size int64) {
	b.resizing.Lock()
	defer b.resizing.Unlock()
	old := b.st.Load()
	if old.size == size {
		return
	}
	s := newState(size, b.shift)
	total := granules(size, b.shift)
	carry := func() {
		for i := range min(len(old.words), len(s.words)) {
			v := old.words[i].Load()
			if hi := total - int64(i)*64; hi < 64 {
				v &= (1 << uint(hi)) - 1
			}
			if v != 0 {
				s.words[i].Or(v)
			}
		}
	}
	carry()
	b.st.Store(s)
	carry()
}

// Bytes serializes the bits: ceil(granules/8) bytes, bit j of byte i
// being granule 8i+j (the qcow2 bitmap data layout).
func (b *Bitmap) Bytes() []byte {
	s := b.st.Load()
	out := make([]byte, len(s.words)*8)
	for i := range s.words {
		binary.LittleEndian.PutUint64(out[i*8:], s.words[i].Load())
	}
	return out[:(granules(s.size, b.shift)+7)/8]
}

// SetBytes ORs serialized bits (Bytes' layout) into the bitmap, starting
// at granule 8*byteOff.
func (b *Bitmap) SetBytes(byteOff int64, p []byte) {
	s := b.st.Load()
	total := granules(s.size, b.shift)
	for i, v := range p {
		if v == 0 {
			continue
		}
		g := (byteOff + int64(i)) * 8
		if g >= total {
			return
		}
		m := uint64(v) << uint(g%64)
		if hi := total - g; hi < 8 {
			m &= ((1 << uint(hi)) - 1) << uint(g%64)
		}
		s.words[g/64].Or(m)
	}
}

// SHA256 is x-debug-block-dirty-bitmap-sha256: the hex SHA-256 of the
// bit words as 64-bit little-endian longs, at least one of them (QEMU's
// hbitmap_sha256 over the last level of its hbitmap on a 64-bit
// little-endian host).
func (b *Bitmap) SHA256() string {
	s := b.st.Load()
	n := max(len(s.words), 1)
	buf := make([]byte, n*8)
	for i := range s.words {
		binary.LittleEndian.PutUint64(buf[i*8:], s.words[i].Load())
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}
