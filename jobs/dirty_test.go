package jobs

import (
	"reflect"
	"sync"
	"testing"
)

// The job's view of a dirty bitmap: runs taken in order from a position
// and wrapping, whole granules (the last one past a partial end too),
// and no granule lost or taken twice while writers mark concurrently.
func TestDirtyMapTake(t *testing.T) {
	const g = 64 << 10
	size := int64(10*g + 100) // a partial last granule
	d := newDirtyMapGran(size, g)
	d.mark(1, 1)       // granule 0
	d.mark(3*g+5, 2*g) // granules 3..5
	d.mark(size-1, 1)  // granule 10, partial
	if got := d.bytes(); got != 5*g {
		t.Fatalf("bytes %d, want %d", got, 5*g)
	}
	if got := d.dirtyIn(2*g, 3*g); got != 2*g {
		t.Fatalf("dirtyIn %d, want %d", got, 2*g)
	}
	if !d.allSet(3*g, 3*g) || d.allSet(2*g, 2*g) || !d.isSet(4*g+7) || d.isSet(2*g) {
		t.Fatal("allSet/isSet disagree with the marks")
	}
	// From granule 4: granules 4..5 (max 2 granules), then 10, then wrap to 0, then 3.
	var got [][2]int64
	pos := int64(4 * g)
	for {
		off, n, ok := d.take(pos, 2*g)
		if !ok {
			break
		}
		got = append(got, [2]int64{off / g, n / g})
		pos = off + n
	}
	want := [][2]int64{{4, 2}, {10, 1}, {0, 1}, {3, 1}}
	if !reflect.DeepEqual(got, want) || d.bytes() != 0 {
		t.Fatalf("takes %v (left %d), want %v", got, d.bytes(), want)
	}
	d.mark(0, size)
	spans := d.takeRange(8*g, 4*g)
	if !reflect.DeepEqual(spans, []span{{8 * g, 3 * g}}) || d.bytes() != 8*g {
		t.Fatalf("takeRange %v (left %d)", spans, d.bytes())
	}
}

func TestDirtyMapConcurrentTakers(t *testing.T) {
	const g, granules = 4096, 4096
	d := newDirtyMapGran(g*granules, g)
	var wg sync.WaitGroup
	taken := make([]int, 2)
	var mu sync.Mutex
	seen := map[int64]int{}
	d.mark(0, g*granules)
	for w := range taken {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := int64(0); off < g*granules; off += 8 * g {
				for _, sp := range d.takeRange(off, 8*g) {
					mu.Lock()
					for o := sp.off; o < sp.off+sp.n; o += g {
						seen[o]++
					}
					mu.Unlock()
					taken[w] += int(sp.n / g)
				}
			}
		}()
	}
	wg.Wait()
	if taken[0]+taken[1] != granules || len(seen) != granules {
		t.Fatalf("taken %v, distinct %d, want %d in all", taken, len(seen), granules)
	}
	for o, n := range seen {
		if n != 1 {
			t.Fatalf("granule at %d taken %d times", o, n)
		}
	}
}

// A granule larger than what the caller takes at once (a mirror with a
// 2 MiB granularity and 1 MiB copy chunks) is taken whole, never as an
// empty run: an empty run left the mirror asking for it forever.
func TestDirtyMapTakesAGranuleLargerThanTheLimit(t *testing.T) {
	const g = 2 << 20
	d := newDirtyMapGran(8*g, g)
	d.mark(3*g+1, 1)
	off, n, ok := d.take(0, 1<<20)
	if !ok || off != 3*g || n != g {
		t.Fatalf("take = %d, %d, %v; want %d, %d, true", off, n, ok, 3*g, g)
	}
	if _, _, ok := d.take(0, 1<<20); ok || d.bytes() != 0 {
		t.Fatalf("granule still dirty after it was taken (%d bytes)", d.bytes())
	}
}
