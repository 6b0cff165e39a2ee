package blockcore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"blockd/blockio"
	"blockd/dirtybitmap"
)

// memWrites answers writes without a system call, to show the marking's
// own cost per request.
type memWrites struct{ osFile }

func (memWrites) WriteAt([]byte, int64, blockio.WriteFlags) error { return nil }

// BenchmarkBitmaps4K measures what dirty bitmaps cost on the data path:
// random 4 KiB writes to a page-cached 64 MiB file ("file") and to
// nothing ("mem") through a gate with 0, 1 and 8 recording bitmaps of
// 64 KiB granules (the default for qcow2), all in the same run; the
// gate counts requests as a node's does. -cpu 1,2 shows contention of
// parallel writers on the bitmap words.
func BenchmarkBitmaps4K(b *testing.B) {
	const size = 64 << 20
	path := filepath.Join(b.TempDir(), "img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	for _, backend := range []string{"file", "mem"} {
		for _, nb := range []int{0, 1, 8} {
			b.Run(fmt.Sprintf("%s/bitmaps=%d", backend, nb), func(b *testing.B) {
				var impl Impl = osFile{f}
				if backend == "mem" {
					impl = memWrites{osFile{f}}
				}
				g := newGate(impl, false)
				var rec []*dirtybitmap.Bitmap
				for range nb {
					rec = append(rec, dirtybitmap.New(size, 65536))
				}
				if nb > 0 {
					g.recording.Store(&rec)
				}
				b.SetBytes(4096)
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, 4096)
					buf[0] = 1
					r := rand.New(rand.NewPCG(rand.Uint64(), 2))
					for pb.Next() {
						if err := g.WriteAt(buf, r.Int64N(size/4096)*4096, 0); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}
