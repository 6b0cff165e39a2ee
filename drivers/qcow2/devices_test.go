package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"blockd/blockio"
)

// fileDev is a minimal os.File-backed blockio.Device for tests (the real
// file driver lives elsewhere). Reads past the end fail with
// ErrOutOfRange, writes past the end grow the file.
type fileDev struct {
	f  *os.File
	ro bool
}

func openFileDev(path string, ro bool) (*fileDev, error) {
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	return &fileDev{f: f, ro: ro}, nil
}

func createFileDev(path string) (*fileDev, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &fileDev{f: f}, nil
}

func (d *fileDev) Close() error { return d.f.Close() }

// SendRange lends the file itself, as the file driver does.
func (d *fileDev) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	return sink(blockio.FileRange{FD: int(d.f.Fd()), Offset: off,
		ReadAt: func(p []byte, at int64) error { return d.ReadAt(p, off+at) }})
}

func (d *fileDev) ReadAt(p []byte, off int64) error {
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF || (err == nil && n < len(p)) {
		return fmt.Errorf("%w: read %d at %d", blockio.ErrOutOfRange, len(p), off)
	}
	return err
}

func (d *fileDev) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if d.ro {
		return blockio.ErrReadOnly
	}
	if _, err := d.f.WriteAt(p, off); err != nil {
		return err
	}
	if flags&blockio.FUA != 0 {
		return d.Flush()
	}
	return nil
}

func (d *fileDev) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	buf := make([]byte, min(length, 1<<20))
	for length > 0 {
		n := min(length, int64(len(buf)))
		if err := d.WriteAt(buf[:n], off, 0); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

func (d *fileDev) Discard(off, length int64) error {
	const punchHole, keepSize = 0x02, 0x01
	err := syscall.Fallocate(int(d.f.Fd()), punchHole|keepSize, off, length)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return blockio.ErrNotSupported
	}
	return err
}

// testFsync makes Flush call fdatasync. Tests only need the ordering of
// writes to be right (a killed process loses nothing from the page cache;
// power loss is simulated in memory), so they skip it unless
// QCOW2_TEST_FSYNC=1; benchmarks turn it on.
var testFsync = os.Getenv("QCOW2_TEST_FSYNC") == "1"

func (d *fileDev) Flush() error {
	if d.ro || !testFsync {
		return nil
	}
	return syscall.Fdatasync(int(d.f.Fd()))
}

func (d *fileDev) BlockStatus(off, length int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: length}, nil
}

func (d *fileDev) Size() (int64, error) {
	st, err := d.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (d *fileDev) Truncate(size int64) error { return d.f.Truncate(size) }

// memDev is an in-memory device (fuzzing, power-loss simulation).
type memDev struct {
	mu      sync.Mutex
	b       []byte
	ro      bool
	limit   int64 // maximum size (default 4 GiB)
	flushes int
	// journal, when set, records every write since the last flush so a
	// power loss can be simulated (crash_test.go).
	journal *[]memWrite
}

type memWrite struct {
	off  int64
	data []byte
}

func (d *memDev) ReadAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.b)) {
		return blockio.ErrOutOfRange
	}
	copy(p, d.b[off:])
	return nil
}

func (d *memDev) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ro {
		return blockio.ErrReadOnly
	}
	limit := d.limit
	if limit == 0 {
		limit = 1 << 32
	}
	if off < 0 || off+int64(len(p)) > limit {
		return blockio.ErrOutOfRange
	}
	if end := off + int64(len(p)); end > int64(len(d.b)) {
		d.b = append(d.b, make([]byte, end-int64(len(d.b)))...)
	}
	copy(d.b[off:], p)
	if d.journal != nil {
		*d.journal = append(*d.journal, memWrite{off, append([]byte(nil), p...)})
	}
	return nil
}

func (d *memDev) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	return d.WriteAt(make([]byte, length), off, flags)
}

func (d *memDev) Discard(off, length int64) error { return blockio.ErrNotSupported }

func (d *memDev) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes++
	if d.journal != nil {
		*d.journal = (*d.journal)[:0]
	}
	return nil
}

func (d *memDev) BlockStatus(off, length int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: length}, nil
}

func (d *memDev) Size() (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.b)), nil
}

func (d *memDev) Truncate(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size <= int64(len(d.b)) {
		d.b = d.b[:size]
	} else {
		d.b = append(d.b, make([]byte, size-int64(len(d.b)))...)
	}
	return nil
}

func (d *memDev) bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.b...)
}
