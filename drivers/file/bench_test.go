package file

import (
	"math/rand/v2"
	"testing"
)

const benchSize = 256 << 20

// benchFile returns a File on a 256 MiB file filled with data, so reads
// hit allocated blocks (mostly the page cache, as with cache.direct=off).
func benchFile(b *testing.B) *File {
	b.Helper()
	f := mustOpen(b, Options{Filename: newImage(b, b.TempDir(), 0)})
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for off := int64(0); off < benchSize; off += int64(len(chunk)) {
		if err := f.WriteAt(chunk, off, 0); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

func benchSeq(b *testing.B, write bool) {
	f := benchFile(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	var off int64
	for b.Loop() {
		var err error
		if write {
			err = f.WriteAt(buf, off, 0)
		} else {
			err = f.ReadAt(buf, off)
		}
		if err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(buf))) % benchSize
	}
}

func benchRand(b *testing.B, write bool) {
	f := benchFile(b)
	buf := make([]byte, 4096)
	r := rand.New(rand.NewPCG(5, 6))
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		off := r.Int64N(benchSize/4096) * 4096
		var err error
		if write {
			err = f.WriteAt(buf, off, 0)
		} else {
			err = f.ReadAt(buf, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFileSeqRead1M(b *testing.B)   { benchSeq(b, false) }
func BenchmarkFileSeqWrite1M(b *testing.B)  { benchSeq(b, true) }
func BenchmarkFileRandRead4K(b *testing.B)  { benchRand(b, false) }
func BenchmarkFileRandWrite4K(b *testing.B) { benchRand(b, true) }
