package file

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"blockd/blockio"
)

// Many goroutines write and read disjoint, unaligned, adjacent ranges.
// Under O_DIRECT neighbours share blocks, so this also exercises the
// serialisation of read-modify-write cycles.
func TestConcurrentDisjoint(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			dir := t.TempDir()
			if direct {
				dir = directDir(t)
			}
			const workers, span = 16, 3000
			p := newImage(t, dir, workers*span)
			f := mustOpen(t, Options{Filename: p, Direct: direct, DiscardUnmap: true})
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			final := make([][]byte, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 9))
					base := int64(w * span)
					mine := make([]byte, span)
					for i := range 60 {
						off := r.IntN(span - 1)
						n := 1 + r.IntN(span-off)
						var err error
						switch i % 5 {
						case 0:
							err = f.WriteZeroes(base+int64(off), int64(n), blockio.MayUnmap)
							clear(mine[off : off+n])
						case 1:
							err = f.Flush()
						default:
							data := randBytes(r, n)
							err = f.WriteAt(data, base+int64(off), 0)
							copy(mine[off:], data)
						}
						if err != nil {
							errs <- err
							return
						}
						got := make([]byte, span)
						if err := f.ReadAt(got, base); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, mine) {
							errs <- fmt.Errorf("worker %d: range differs after op %d", w, i)
							return
						}
						if _, err := f.BlockStatus(base, span); err != nil {
							errs <- err
							return
						}
					}
					final[w] = mine
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			wantData(t, f, 0, bytes.Join(final, nil))
		})
	}
}

// Permission changes and reopens while I/O runs: the fd swap must not
// pull the fd from under a request.
func TestConcurrentReopen(t *testing.T) {
	p := newImage(t, t.TempDir(), 1<<20)
	f := mustOpen(t, Options{Filename: p, AutoReadOnly: true})
	if err := f.SetPerm(cr|wr, all); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(w + 1)}, 4096)
			got := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f.ReadAt(got, int64(w)*4096); err != nil {
					t.Error(err)
					return
				}
				_ = f.WriteAt(buf, int64(w)*4096, 0) // may be read-only now
			}
		}()
	}
	for i := range 200 {
		perm := cr
		if i%2 == 0 {
			perm |= wr
		}
		if err := f.SetPerm(perm, all); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
