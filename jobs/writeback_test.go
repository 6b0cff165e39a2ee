package jobs

import (
	"sync/atomic"
	"testing"
	"time"

	"blockd/blockio"
)

// patternDev reads a pattern (or zeroes) computed from the offset and
// throws writes away, so a long copy needs no memory.
type patternDev struct {
	blockio.Device // nil: only what the copier calls is here
	size           int64
	zero           bool
}

func (d *patternDev) ReadAt(p []byte, off int64) error {
	if !d.zero {
		for i := range p {
			p[i] = byte(off+int64(i)) | 1
		}
	}
	return nil
}

func (d *patternDev) Size() (int64, error) { return d.size, nil }

// writebackTarget counts data written and write-backs asked for; each
// takes a while, so that waiting for them can be checked.
type writebackTarget struct {
	patternDev
	data              atomic.Int64
	started, finished atomic.Int64
}

func (d *writebackTarget) WriteAt(p []byte, _ int64, _ blockio.WriteFlags) error {
	d.data.Add(int64(len(p)))
	return nil
}

func (d *writebackTarget) WriteZeroes(int64, int64, blockio.WriteFlags) error { return nil }

func (d *writebackTarget) BlockStatus(_, n int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: n}, nil
}

func (d *writebackTarget) StartWriteback() error {
	d.started.Add(1)
	time.Sleep(20 * time.Millisecond)
	d.finished.Add(1)
	return nil
}

func copyAll(t *testing.T, src blockio.Device, dst *writebackTarget, size int64) {
	t.Helper()
	cp := newCopier(&Job{ctl: &control{}}, src, dst)
	for off := int64(0); off < size; off += chunkSize {
		cp.start(off, min(chunkSize, size-off))
	}
	if err := cp.wait(); err != nil {
		t.Fatal(err)
	}
}

// A job's copier asks its target to start writing back as the data goes
// out, one request at a time, and is not done before the last one is.
// Zero ranges are not data and do not count.
func TestCopierStartsWritebackAsItGoes(t *testing.T) {
	const size = 3*writebackEvery + 4<<20
	dst := &writebackTarget{}
	copyAll(t, &patternDev{size: size}, dst, size)
	s, f := dst.started.Load(), dst.finished.Load()
	if dst.data.Load() != size || s < 2 || s > 3 || f != s {
		t.Fatalf("%d bytes written, write-back started %d times, finished %d; want %d, 2 or 3, all", dst.data.Load(), s, f, int64(size))
	}

	zeroes := &writebackTarget{}
	copyAll(t, &patternDev{size: size, zero: true}, zeroes, size)
	if zeroes.data.Load() != 0 || zeroes.started.Load() != 0 {
		t.Fatalf("a copy of zeroes wrote %d bytes and started write-back %d times", zeroes.data.Load(), zeroes.started.Load())
	}
}
