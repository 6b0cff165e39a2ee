package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"blockd/blockio"
)

// Snapshot and bitmap tables as found on disk. Persistent bitmaps are not
// modified by this engine, but their tables reference clusters: the
// overlap checks protect them and Check counts their references.
// Internal snapshots are created and deleted in internal_snapshot.go.

const (
	maxSnapshotExtra  = 1024     // QCOW_MAX_SNAPSHOT_EXTRA_DATA
	maxSnapshotsBytes = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE
	bitmapEntryBytes  = 24
	maxBitmapDirBytes = 64 << 20
)

type snapshot struct {
	l1Offset    int64
	l1Size      int64
	id, name    string
	dateSec     uint32
	dateNsec    uint32
	vmClockNsec uint64
	vmStateSize uint32
	extra       []byte // extra data, kept as found
}

// seqReader reads a table entry by entry with bounds checks.
type seqReader struct {
	f        blockio.Device
	off, end int64
}

func (r *seqReader) read(n int64) ([]byte, error) {
	if n < 0 || r.off+n > r.end {
		return nil, errors.New("table extends past its limit")
	}
	b := make([]byte, n)
	if err := r.f.ReadAt(b, r.off); err != nil {
		return nil, err
	}
	r.off += n
	return b, nil
}

// readSnapshots decodes the snapshot table and returns the snapshots and
// the end offset of the table.
func readSnapshots(f blockio.Device, off int64, n int, fsz int64) ([]snapshot, int64, error) {
	end := min(fsz, off+maxSnapshotsBytes)
	r := &seqReader{f: f, off: off, end: end}
	snaps := make([]snapshot, 0, min(n, 1024))
	for i := 0; i < n; i++ {
		h, err := r.read(snapshotHdrSize)
		if err != nil {
			return snaps, 0, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		be := binary.BigEndian
		s := snapshot{l1Offset: int64(be.Uint64(h[0:])), l1Size: int64(be.Uint32(h[8:]))}
		idLen, nameLen := int64(be.Uint16(h[12:])), int64(be.Uint16(h[14:]))
		extra := int64(be.Uint32(h[36:]))
		if extra > maxSnapshotExtra {
			return snaps, 0, fmt.Errorf("Too much extra metadata in snapshot table entry %d", i)
		}
		rest, err := r.read(extra + idLen + nameLen)
		if err != nil {
			return snaps, 0, fmt.Errorf("Failed to read snapshot table: %w", err)
		}
		s.dateSec, s.dateNsec = be.Uint32(h[16:]), be.Uint32(h[20:])
		s.vmClockNsec, s.vmStateSize = be.Uint64(h[24:]), be.Uint32(h[32:])
		s.extra = rest[:extra]
		s.id, s.name = string(rest[extra:extra+idLen]), string(rest[extra+idLen:])
		r.off = roundUp(r.off-off, 8) + off
		if s.l1Size > maxL1Bytes/8 || s.l1Offset < 0 {
			return snaps, 0, fmt.Errorf("Snapshot L1 table too large (snapshot %d)", i)
		}
		snaps = append(snaps, s)
	}
	return snaps, r.off, nil
}

type bitmapTable struct {
	offset int64
	size   int64 // entries
}

// readBitmapDirectory returns the bitmap tables of the bitmaps extension.
func readBitmapDirectory(f blockio.Device, b *bitmapsExt, fsz int64) ([]bitmapTable, error) {
	if b.dirSize > maxBitmapDirBytes || b.dirOffset > uint64(fsz) {
		return nil, errors.New("bitmap directory out of range")
	}
	r := &seqReader{f: f, off: int64(b.dirOffset), end: int64(b.dirOffset + b.dirSize)}
	var out []bitmapTable
	for i := uint32(0); i < b.nbBitmaps; i++ {
		h, err := r.read(bitmapEntryBytes)
		if err != nil {
			return out, err
		}
		be := binary.BigEndian
		t := bitmapTable{offset: int64(be.Uint64(h[0:])), size: int64(be.Uint32(h[8:]))}
		nameLen, extra := int64(be.Uint16(h[18:])), int64(be.Uint32(h[20:]))
		if _, err := r.read(extra + nameLen); err != nil {
			return out, err
		}
		r.off = roundUp(r.off-int64(b.dirOffset), 8) + int64(b.dirOffset)
		out = append(out, t)
	}
	return out, nil
}
