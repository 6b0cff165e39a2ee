package qcow2

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"blockd/blockio"
)

// fullDev is a file system that fills up: writes that would grow the
// image beyond max fail as the kernel fails them, with an *os.PathError
// carrying ENOSPC.
type fullDev struct {
	*memDev
	max int64
}

func (d *fullDev) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if off+int64(len(p)) > d.max {
		return &os.PathError{Op: "write", Path: "full.qcow2", Err: syscall.ENOSPC}
	}
	return d.memDev.WriteAt(p, off, flags)
}

func (d *fullDev) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	return d.WriteAt(make([]byte, length), off, flags)
}

// A write that needs new clusters on a full file system fails with an
// error that is ENOSPC to errors.Is, whichever metadata or data write hit
// the limit: jobs decide on-error=enospc and io-status from it.
func TestWriteErrorsKeepTheirErrno(t *testing.T) {
	for _, room := range []int64{0, 64 << 10, 128 << 10, 200 << 10, 1 << 20} {
		mem := &memDev{}
		if err := Create(mem, CreateOptions{Size: 64 << 20}); err != nil {
			t.Fatal(err)
		}
		size, _ := mem.Size()
		dev := &fullDev{memDev: mem, max: size + room}
		img, err := Open(dev, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		for off := int64(0); off < 32<<20 && werr == nil; off += 1 << 20 {
			werr = img.WriteAt(pattern(1<<20, byte(off>>20)), off, 0)
			if werr == nil {
				werr = img.Flush()
			}
		}
		if werr == nil {
			t.Fatalf("room %d: 32 MiB of writes fit in a full file system", room)
		}
		if !errors.Is(werr, syscall.ENOSPC) {
			t.Errorf("room %d: error %v (%T) is not ENOSPC to errors.Is", room, werr, werr)
		}
		_ = img.Close()
	}
}

// A compressed cluster that does not decompress is an EIO, as QEMU's
// read fails, and keeps the cause.
func TestDecompressErrorIsEIO(t *testing.T) {
	cause := errors.New("flate: corrupt input before offset 3")
	err := error(&decompressError{off: 0x50000, err: cause})
	if !errors.Is(err, syscall.EIO) || !errors.Is(err, cause) {
		t.Fatalf("%v: EIO %v, cause %v", err, errors.Is(err, syscall.EIO), errors.Is(err, cause))
	}
	if want := "qcow2: could not decompress cluster at host offset 0x50000: flate: corrupt input before offset 3 (Input/output error)"; err.Error() != want {
		t.Fatalf("text %q", err.Error())
	}
}
