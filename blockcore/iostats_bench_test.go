package blockcore

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"blockd/blockio"
)

// osFile is the smallest Impl over a page-cached file: pread and pwrite,
// as the file driver does them.
type osFile struct{ f *os.File }

func (o osFile) ReadAt(p []byte, off int64) error { _, err := o.f.ReadAt(p, off); return err }
func (o osFile) WriteAt(p []byte, off int64, _ blockio.WriteFlags) error {
	_, err := o.f.WriteAt(p, off)
	return err
}
func (osFile) WriteZeroes(int64, int64, blockio.WriteFlags) error { return blockio.ErrNotSupported }
func (osFile) Discard(int64, int64) error                         { return nil }
func (o osFile) Flush() error                                     { return nil }
func (o osFile) BlockStatus(off, n int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData, Length: n}, nil
}
func (o osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	return st.Size(), err
}
func (osFile) Truncate(int64) error { return blockio.ErrNotSupported }
func (o osFile) Close() error       { return o.f.Close() }

// memImpl answers reads without a system call (clears the buffer), to
// show the accounting's own cost per request.
type memImpl struct{ osFile }

func (memImpl) ReadAt(p []byte, _ int64) error { clear(p); return nil }

// BenchmarkAccounting4K measures what IOStats costs on the data path:
// random 4 KiB reads of a page-cached 64 MiB file (and of memory, "mem") through a gate that
// counts nothing ("off") and through one that counts every request while
// another goroutine takes a snapshot every millisecond ("on", far
// more often than any scrape). The two alternate within one run (-count).
func BenchmarkAccounting4K(b *testing.B) {
	const size = 64 << 20
	path := filepath.Join(b.TempDir(), "img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i + 1)
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	defer f.Close()
	for _, mode := range []string{"file/off", "file/on", "mem/off", "mem/on"} {
		b.Run(mode, func(b *testing.B) {
			var impl Impl = osFile{f}
			if strings.HasPrefix(mode, "mem") {
				impl = memImpl{osFile{f}}
			}
			g := &gate{impl: impl}
			var stop atomic.Bool
			done := make(chan struct{})
			if strings.HasSuffix(mode, "on") {
				g.stats = new(IOStats)
				go func() {
					defer close(done)
					for !stop.Load() {
						_ = g.stats.Snapshot()
						time.Sleep(time.Millisecond)
					}
				}()
			} else {
				close(done)
			}
			buf := make([]byte, 4096)
			r := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(4096)
			for b.Loop() {
				if err := g.ReadAt(buf, r.Int64N(size/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
			stop.Store(true)
			<-done
		})
	}
}
