package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Corruption handling, after QEMU's qcow2_signal_corruption: a detected
// inconsistency is reported once per class (fatal / non-fatal) through
// OnCorrupt, the daemon's hook for BLOCK_IMAGE_CORRUPTED. A fatal one on a
// writable image also sets the corrupt bit in the header (v3) and makes
// every further request fail, so that nothing more is written on top of a
// broken mapping. On read-only images corruption is never fatal.

// ErrCorrupt is matched (errors.Is) by every corruption error.
var ErrCorrupt = errors.New("qcow2: image is corrupt")

// CorruptError describes one detected corruption. Offset and Size are -1
// when the corruption is not tied to a host range.
type CorruptError struct {
	Msg    string
	Offset int64
	Size   int64
	Fatal  bool
}

func (e *CorruptError) Error() string { return "qcow2: Image is corrupt: " + e.Msg }

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// CorruptFunc receives corruption events. It runs with the image's
// internal lock held and must not call back into the Image.
type CorruptFunc func(msg string, offset, size int64, fatal bool)

// errBroken is returned for every request after a fatal corruption.
var errBroken = &CorruptError{
	Msg:    "further access to the image is prevented after a fatal corruption; please use qemu-img check -r",
	Offset: -1, Size: -1, Fatal: true,
}

// corruptf signals a corruption and returns the error to give the caller.
// Called with mu held.
func (img *Image) corruptf(fatal bool, offset, size int64, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	fatal = fatal && !img.readOnly
	e := &CorruptError{Msg: msg, Offset: offset, Size: size, Fatal: fatal}
	if fatal {
		if img.signaledFatal {
			img.broken.Store(true)
			return e
		}
		img.signaledFatal = true
		img.broken.Store(true)
		// Persist the corrupt bit; failure to do so changes nothing about
		// refusing further access.
		_ = img.markCorrupt()
	} else {
		if img.signaledNonFatal {
			return e
		}
		img.signaledNonFatal = true
	}
	if img.onCorrupt != nil {
		img.onCorrupt(msg, offset, size, fatal)
	}
	return e
}

// markCorrupt sets the corrupt bit on disk (v3 only: v2 has no feature
// fields, and QEMU does not persist it either).
func (img *Image) markCorrupt() error {
	img.corrupt.Store(true)
	if img.version.Load() < 3 || img.readOnly || img.hdr.incompat&incompatCorrupt != 0 {
		return nil
	}
	return img.writeIncompat(img.hdr.incompat | incompatCorrupt)
}

// writeIncompat rewrites the incompatible feature field alone (one 8-byte
// write inside the first sector, so it is atomic) and flushes it.
func (img *Image) writeIncompat(v uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if err := img.file.WriteAt(b[:], 72, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.hdr.incompat = v
	return nil
}
