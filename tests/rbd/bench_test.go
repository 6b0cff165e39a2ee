package rbdtest

import (
	"sync"
	"testing"
)

// BenchmarkWrite256K writes 256 KiB requests, 64 in flight, to an rbd
// node in process (what an NBD client's copy asks of the driver).
func BenchmarkWrite256K(b *testing.B) {
	conf := needCluster(b)
	img := newImage(b, 256<<20)
	dev := openNodeTB(b, conf, img)
	const size, inflight = 256 << 10, 64
	b.SetBytes(size)
	b.ResetTimer()
	var wg sync.WaitGroup
	next := make(chan int64)
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for off := range next {
				if err := dev.WriteAt(buf, off, 0); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		next <- int64(i%1024) * size
	}
	close(next)
	wg.Wait()
	if err := dev.Flush(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBlockStatus asks the status of 256 KiB ranges of a written
// image (what a structured NBD read asks before each read).
func BenchmarkBlockStatus(b *testing.B) {
	conf := needCluster(b)
	img := newImage(b, 64<<20)
	dev := openNodeTB(b, conf, img)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < 64<<20; off += 8 << 20 {
		if err := dev.WriteAt(buf, off, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := dev.BlockStatus(int64(i%256)*(256<<10), 256<<10); err != nil {
			b.Fatal(err)
		}
	}
}
