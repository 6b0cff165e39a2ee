package qcow2

import (
	"path/filepath"
	"testing"
)

// Benchmarks on a 1 GiB image with 64 KiB clusters in a real file (page
// cache, fdatasync on Flush). Random offsets come from a fixed stride so
// that qemu-img bench -S can issue the same sequence:
//
//	offset(i) = i * benchStride mod 1 GiB, benchStride = 4 KiB * 104729
const (
	benchSize   = 1 << 30
	benchStride = 4096 * 104729
)

func benchOpen(b *testing.B, prefill bool) (*Image, func()) {
	b.Helper()
	testFsync = true
	path := filepath.Join(b.TempDir(), "bench.qcow2")
	newImageFile(b, path, CreateOptions{Size: benchSize})
	img, fd := openImage(b, path, OpenOptions{})
	if prefill {
		buf := pattern(1<<20, 1)
		for off := int64(0); off < benchSize; off += 1 << 20 {
			if err := img.WriteAt(buf, off, 0); err != nil {
				b.Fatal(err)
			}
		}
		if err := img.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	return img, func() {
		if err := img.Close(); err != nil {
			b.Fatal(err)
		}
		fd.Close()
	}
}

func BenchmarkSeqWrite1M(b *testing.B) {
	img, done := benchOpen(b, false)
	defer done()
	buf := pattern(1<<20, 2)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := img.WriteAt(buf, int64(i)<<20%benchSize, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer() // like qemu-img bench, whose timing ends before the final flush
	if err := img.Flush(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkSeqRead1M(b *testing.B) {
	img, done := benchOpen(b, true)
	defer done()
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := img.ReadAt(buf, int64(i)<<20%benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRandRead4K(b *testing.B) {
	img, done := benchOpen(b, true)
	defer done()
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := img.ReadAt(buf, int64(i)*benchStride%benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRandWrite4K(b *testing.B) {
	img, done := benchOpen(b, false)
	defer done()
	buf := pattern(4096, 3)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := img.WriteAt(buf, int64(i)*benchStride%benchSize, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := img.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkParallelRandRead4K measures lock contention with concurrent
// readers.
func BenchmarkParallelRandRead4K(b *testing.B) {
	img, done := benchOpen(b, true)
	defer done()
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		i := int64(0)
		for pb.Next() {
			i += 7919
			if err := img.ReadAt(buf, i*benchStride%benchSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
