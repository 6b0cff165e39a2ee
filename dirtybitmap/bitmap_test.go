package dirtybitmap

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// model is the obvious bitmap: one bool per granule.
type model struct {
	gran int64
	size int64
	bits []bool
}

func newModel(size, gran int64) *model {
	return &model{gran: gran, size: size, bits: make([]bool, (size+gran-1)/gran)}
}

func (m *model) mark(off, n int64) {
	if n <= 0 || off >= m.size {
		return
	}
	end := min(off+n, m.size)
	for g := off / m.gran; g <= (end-1)/m.gran; g++ {
		m.bits[g] = true
	}
}

func (m *model) reset(off, n int64) {
	for g := range m.bits {
		s, e := int64(g)*m.gran, min(int64(g+1)*m.gran, m.size)
		if s >= off && (e <= off+n || off+n >= m.size) {
			m.bits[g] = false
		}
	}
}

func (m *model) count() int64 {
	var c int64
	for _, b := range m.bits {
		if b {
			c += m.gran
		}
	}
	return c
}

func check(t *testing.T, b *Bitmap, m *model) {
	t.Helper()
	if b.Count() != m.count() {
		t.Fatalf("count %d, model %d", b.Count(), m.count())
	}
	for g := range m.bits {
		if b.Get(int64(g)*m.gran) != m.bits[g] {
			t.Fatalf("granule %d: %v, model %v", g, b.Get(int64(g)*m.gran), m.bits[g])
		}
	}
	// Extents must list exactly the dirty granules, merged into runs.
	var got []bool = make([]bool, len(m.bits))
	last := int64(-1)
	b.Extents(0, m.size, func(off, n int64) bool {
		if off <= last {
			t.Fatalf("extent %d+%d not after %d", off, n, last)
		}
		for o := off; o < off+n; o += m.gran {
			got[o/m.gran] = true
		}
		last = off + n
		return true
	})
	for g := range got {
		if got[g] != m.bits[g] {
			t.Fatalf("extents: granule %d %v, model %v", g, got[g], m.bits[g])
		}
	}
	// Bytes round-trips through SetBytes.
	c := New(b.Size(), b.Granularity())
	c.SetBytes(0, b.Bytes())
	if !c.Equal(b) {
		t.Fatal("Bytes/SetBytes did not round-trip")
	}
}

func TestAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int64{1, 511, 4096, 65536*130 + 777, 1 << 24} {
		for _, gran := range []int64{512, 4096, 65536} {
			b, m := New(size, uint64(gran)), newModel(size, gran)
			for i := 0; i < 300; i++ {
				off := r.Int64N(size + gran)
				n := r.Int64N(min(size, 1<<20)) + 1
				if r.IntN(4) == 0 {
					b.Reset(off&^(gran-1), n)
					m.reset(off&^(gran-1), n)
				} else {
					b.Mark(off, n)
					m.mark(off, n)
				}
			}
			check(t, b, m)
			b.Clear()
			check(t, b, newModel(size, gran))
		}
	}
}

func TestMergeGranularities(t *testing.T) {
	const size = 10 << 20
	a, b := New(size, 65536), New(size, 512)
	b.Mark(100, 1)       // granule 0 of a
	b.Mark(300000, 1000) // granule 4 of a
	a.Merge(b)
	if a.Count() != 2*65536 || !a.Get(0) || !a.Get(4*65536) {
		t.Fatalf("merge: count %d", a.Count())
	}
	c := New(size, 512)
	c.Merge(a)
	if c.Count() != 2*65536 {
		t.Fatalf("merge down: count %d", c.Count())
	}
}

func TestResize(t *testing.T) {
	b := New(1<<20, 65536)
	b.Mark(0, 1<<20)
	b.Resize(100000) // two granules, the second partial
	if b.Count() != 2*65536 {
		t.Fatalf("shrunk count %d", b.Count())
	}
	b.Resize(1 << 21)
	if b.Count() != 2*65536 || b.Get(3*65536) {
		t.Fatalf("grown count %d", b.Count())
	}
}

// The hash of a clean bitmap is the hash of its zero words, at least one.
func TestSHA256Empty(t *testing.T) {
	// sha256 of 8 zero bytes.
	const zero8 = "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
	if got := New(1, 65536).SHA256(); got != zero8 {
		t.Fatalf("got %s", got)
	}
}

func TestConcurrentMark(t *testing.T) {
	const size = 64 << 20
	b := New(size, 4096)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(w); i < size/4096; i += 8 {
				b.Mark(i*4096, 4096)
			}
		}()
	}
	wg.Wait()
	if b.Count() != size {
		t.Fatalf("count %d, want %d", b.Count(), size)
	}
}

// BenchmarkMark4K is the cost of marking one 4 KiB write at random in a
// 64 MiB device with 64 KiB granules: what each recording bitmap adds to
// a request on the data path.
func BenchmarkMark4K(b *testing.B) {
	const size = 64 << 20
	bm := New(size, 65536)
	r := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, 4096)
	for i := range offs {
		offs[i] = r.Int64N(size/4096) * 4096
	}
	i := 0
	for b.Loop() {
		bm.Mark(offs[i&4095], 4096)
		i++
	}
}

// Writers that mark while the bitmap grows and shrinks lose nothing that
// stays inside it (run with -race).
func TestMarkDuringResize(t *testing.T) {
	const size = 16 << 20
	b := New(size, 4096)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				b.Resize(size)
				return
			default:
			}
			b.Resize(size + int64(i%7)*65536)
		}
	}()
	for off := int64(0); off < size; off += 4096 {
		b.Mark(off, 1)
	}
	close(stop)
	wg.Wait()
	if b.Count() != size {
		t.Fatalf("count %d after marking all of %d", b.Count(), size)
	}
}
