package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Internal snapshots (docs/interop/qcow2.txt, "Snapshots"), after QEMU's
// qcow2-snapshot.c. A snapshot is an L1 table plus one more use of every
// L2 table and data cluster it reaches; the active layer then copies on
// write whatever it shares (the COPIED flag is set exactly on entries
// whose cluster has refcount 1, so the write path's "in place only if
// COPIED" rule does the copying). Create, delete and revert each build
// their new metadata in fresh clusters and switch to it with one header
// write (metaswitch.go), so a crash leaves the old state or the new one,
// with at most leaked clusters.

// SnapshotInfo describes an internal snapshot.
type SnapshotInfo struct {
	ID, Name    string
	DateSec     uint32
	DateNsec    uint32
	VMClockNsec uint64
	VMStateSize uint64
	DiskSize    int64 // -1 when the snapshot does not record it
	Icount      uint64
	HasIcount   bool
}

// snapshotExtraBytes is the extra data QEMU 7.2 writes: vm_state_size
// (64 bits), disk size, icount.
const snapshotExtraBytes = 24

func (s *snapshot) info() SnapshotInfo {
	in := SnapshotInfo{ID: s.id, Name: s.name, DateSec: s.dateSec, DateNsec: s.dateNsec,
		VMClockNsec: s.vmClockNsec, VMStateSize: uint64(s.vmStateSize), DiskSize: -1}
	be := binary.BigEndian
	if len(s.extra) >= 8 {
		in.VMStateSize = be.Uint64(s.extra)
	}
	if len(s.extra) >= 16 {
		in.DiskSize = int64(be.Uint64(s.extra[8:]))
	}
	if len(s.extra) >= 24 {
		if ic := be.Uint64(s.extra[16:]); ic != NoIcount {
			in.Icount, in.HasIcount = ic, true
		}
	}
	return in
}

// Snapshots lists the internal snapshots in table order.
func (img *Image) Snapshots() []SnapshotInfo {
	img.mu.Lock()
	defer img.mu.Unlock()
	out := make([]SnapshotInfo, 0, len(img.snaps))
	for i := range img.snaps {
		out = append(out, img.snaps[i].info())
	}
	return out
}

// FindSnapshot is find_snapshot_by_id_and_name: with both, both must
// match; otherwise the one given.
func (img *Image) FindSnapshot(id, name string) (SnapshotInfo, bool) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if i := img.findSnapshot(id, name); i >= 0 {
		return img.snaps[i].info(), true
	}
	return SnapshotInfo{}, false
}

func (img *Image) findSnapshot(id, name string) int {
	for i, s := range img.snaps {
		switch {
		case id != "" && name != "":
			if s.id == id && s.name == name {
				return i
			}
		case id != "":
			if s.id == id {
				return i
			}
		case name != "" && s.name == name:
			return i
		}
	}
	return -1
}

// ErrSnapshotNotFound is returned for a snapshot that does not exist.
var ErrSnapshotNotFound = errors.New("Can't find the snapshot")

// NoIcount is the icount of a snapshot that records none.
const NoIcount = ^uint64(0)

// CreateSnapshot takes an internal snapshot of the active layer (VM
// state size 0) with the next free numeric id.
func (img *Image) CreateSnapshot(name string, dateSec, dateNsec uint32, vmClockNsec, icount uint64) (SnapshotInfo, error) {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return SnapshotInfo{}, err
	}
	if len(img.snaps) >= maxSnapshots {
		return SnapshotInfo{}, errors.New("qcow2: too many snapshots (File too large)")
	}
	if err := img.prepareWrite(); err != nil {
		return SnapshotInfo{}, err
	}
	maxID := 0
	for _, s := range img.snaps {
		if n, err := strconv.Atoi(s.id); err == nil && n > maxID {
			maxID = n
		}
	}
	extra := make([]byte, snapshotExtraBytes)
	binary.BigEndian.PutUint64(extra[8:], uint64(img.size.Load()))
	binary.BigEndian.PutUint64(extra[16:], icount)
	sn := snapshot{l1Size: int64(len(img.l1)), id: strconv.Itoa(maxID + 1), name: name,
		dateSec: dateSec, dateNsec: dateNsec, vmClockNsec: vmClockNsec, extra: extra}
	sw, err := img.beginSwitch()
	if err != nil {
		return SnapshotInfo{}, err
	}
	// The snapshot takes the active L1 table as it is (flags in a
	// snapshot's tree mean nothing); the active layer gets a new one, and
	// every L2 table and data cluster one more use.
	if sn.l1Size > 0 {
		sn.l1Offset = int64(img.hdr.l1TableOffset)
	}
	if err := sw.walk(img.l1, 1); err != nil {
		return SnapshotInfo{}, err
	}
	l1, l1Off, err := sw.activeTree(img.l1)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := sw.commit(l1, l1Off, append(slices.Clone(img.snaps), sn)); err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), nil
}

// DeleteSnapshot removes the snapshot found by id and name (see
// FindSnapshot) and frees what only it used.
func (img *Image) DeleteSnapshot(id, name string) (SnapshotInfo, error) {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return SnapshotInfo{}, err
	}
	i := img.findSnapshot(id, name)
	if i < 0 {
		return SnapshotInfo{}, ErrSnapshotNotFound
	}
	if err := img.prepareWrite(); err != nil {
		return SnapshotInfo{}, err
	}
	sn := img.snaps[i]
	sw, err := img.beginSwitch()
	if err != nil {
		return SnapshotInfo{}, err
	}
	if sn.l1Size > 0 {
		l1, err := readTable(img.file, sn.l1Offset, sn.l1Size)
		if err != nil {
			return SnapshotInfo{}, err
		}
		if err := sw.walk(l1, -1); err != nil {
			return SnapshotInfo{}, err
		}
		if err := sw.refs(sn.l1Offset, sn.l1Size*8, -1); err != nil {
			return SnapshotInfo{}, err
		}
	}
	// The active layer gets a new L1 table, with COPIED where a refcount
	// fell to 1.
	if err := sw.refs(int64(img.hdr.l1TableOffset), int64(len(img.l1))*8, -1); err != nil {
		return SnapshotInfo{}, err
	}
	l1, l1Off, err := sw.activeTree(img.l1)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), sw.commit(l1, l1Off, slices.Delete(slices.Clone(img.snaps), i, i+1))
}

// encodeSnapshots is the snapshot table holding snaps.
func encodeSnapshots(snaps []snapshot) ([]byte, error) {
	var buf []byte
	for _, s := range snaps {
		var h [snapshotHdrSize]byte
		be := binary.BigEndian
		be.PutUint64(h[0:], uint64(s.l1Offset))
		be.PutUint32(h[8:], uint32(s.l1Size))
		be.PutUint16(h[12:], uint16(len(s.id)))
		be.PutUint16(h[14:], uint16(len(s.name)))
		be.PutUint32(h[16:], s.dateSec)
		be.PutUint32(h[20:], s.dateNsec)
		be.PutUint64(h[24:], s.vmClockNsec)
		be.PutUint32(h[32:], s.vmStateSize)
		be.PutUint32(h[36:], uint32(len(s.extra)))
		buf = append(buf, h[:]...)
		buf = append(buf, s.extra...)
		buf = append(buf, s.id...)
		buf = append(buf, s.name...)
		for len(buf)%8 != 0 {
			buf = append(buf, 0)
		}
	}
	if int64(len(buf)) > maxSnapshotsBytes {
		return nil, fmt.Errorf("qcow2: snapshot table too large")
	}
	return buf, nil
}

// ApplySnapshot reverts the active layer to the snapshot whose id, or
// else name, is idOrName (qcow2_snapshot_goto, for qemu-img snapshot -a).
// The image first takes the snapshot's size; then the active layer gets a
// new L1 table naming the snapshot's L2 tables (one more use of each and
// of what they reference) and the old tree loses its use, in one switch.
func (img *Image) ApplySnapshot(idOrName string) (SnapshotInfo, error) {
	img.mu.Lock()
	i := img.findSnapshot(idOrName, "")
	if i < 0 {
		i = img.findSnapshot("", idOrName)
	}
	var in SnapshotInfo
	if i >= 0 {
		in = img.snaps[i].info()
	}
	img.mu.Unlock()
	if i < 0 {
		return SnapshotInfo{}, ErrSnapshotNotFound
	}
	if in.DiskSize >= 0 && in.DiskSize != img.size.Load() {
		if err := img.Truncate(in.DiskSize); err != nil {
			return SnapshotInfo{}, err
		}
	}
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return SnapshotInfo{}, err
	}
	if i = img.findSnapshot(in.ID, in.Name); i < 0 {
		return SnapshotInfo{}, ErrSnapshotNotFound
	}
	sn := img.snaps[i]
	if err := img.prepareWrite(); err != nil {
		return SnapshotInfo{}, err
	}
	snL1, err := readTable(img.file, sn.l1Offset, sn.l1Size)
	if err != nil {
		return SnapshotInfo{}, err
	}
	sw, err := img.beginSwitch()
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := sw.walk(snL1, 1); err != nil {
		return SnapshotInfo{}, err
	}
	if err := sw.walk(img.l1, -1); err != nil {
		return SnapshotInfo{}, err
	}
	if err := sw.refs(int64(img.hdr.l1TableOffset), int64(len(img.l1))*8, -1); err != nil {
		return SnapshotInfo{}, err
	}
	l1 := make([]uint64, max(len(img.l1), len(snL1)))
	copy(l1, snL1)
	l1, l1Off, err := sw.activeTree(l1)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), sw.commit(l1, l1Off, img.snaps)
}
