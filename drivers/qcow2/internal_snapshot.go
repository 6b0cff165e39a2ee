package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Internal snapshots (docs/interop/qcow2.txt, "Snapshots"), after QEMU's
// qcow2-snapshot.c. A snapshot is a copy of the active L1 table plus one
// more reference on every L2 table and data cluster it reaches; the
// active layer then copies on write whatever it shares (the COPIED flag
// is set exactly on entries whose cluster has refcount 1, so the write
// path's "in place only if COPIED" rule does the copying).
//
// Create: L1 copy written, COPIED flags of the active tables cleared and
// made stable, refcounts incremented, then the new snapshot table written
// and the header switched to it (one 12-byte write), then the old table
// freed. Delete: new table without the snapshot written and switched to
// first, then the snapshot's references dropped (made stable) and its L1
// table freed, then the COPIED flags set where a refcount fell to 1.
// Apply (revert): the snapshot's references raised, the active L1 table
// overwritten, the old tree's references dropped, flags recomputed. A
// crash between the steps leaves leaked clusters, or entries without
// COPIED whose refcount is 1 (see clearCopied), never a flag on a shared
// cluster; qemu-img check -r repairs them.

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
	all := allStripes()
	img.locks.lock(all, true)
	defer img.locks.unlock(all, true)
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(true); err != nil {
		return SnapshotInfo{}, err
	}
	if len(img.snaps) >= maxSnapshots {
		return SnapshotInfo{}, errors.New("qcow2: too many snapshots (File too large)")
	}
	if err := img.prepareWrite(); err != nil {
		return SnapshotInfo{}, err
	}
	g := &img.g
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
	if err := img.flushCaches(); err != nil {
		return SnapshotInfo{}, err
	}
	if sn.l1Size > 0 {
		n := g.clustersFor(sn.l1Size * 8)
		c, err := img.allocRun(n)
		if err != nil {
			return SnapshotInfo{}, err
		}
		sn.l1Offset = c << g.clusterBits
		buf := make([]byte, sn.l1Size*8)
		for i, e := range img.l1 {
			binary.BigEndian.PutUint64(buf[i*8:], e)
		}
		if k := img.meta.check(g, sn.l1Offset, int64(len(buf)), metaNone); k != metaNone {
			return SnapshotInfo{}, img.corruptf(true, sn.l1Offset, int64(len(buf)), "%s", overlapMessage(k))
		}
		if err := img.file.WriteAt(buf, sn.l1Offset, 0); err != nil {
			return SnapshotInfo{}, err
		}
		img.meta.addRange(metaInactiveL1, sn.l1Offset, sn.l1Offset+n<<g.clusterBits)
	}
	// Every reachable cluster is about to be shared: the flags go first.
	if err := img.clearCopied(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.addTreeRefs(img.l1, 1); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.fixCopied(); err != nil {
		return SnapshotInfo{}, err
	}
	// Refcounts and flags are stable before the table points at the copy.
	if err := img.flushAll(); err != nil {
		return SnapshotInfo{}, err
	}
	snaps := append(append([]snapshot(nil), img.snaps...), sn)
	if err := img.writeSnapshotTable(snaps); err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), nil
}

// DeleteSnapshot removes the snapshot found by id and name (see
// FindSnapshot) and frees what only it used.
func (img *Image) DeleteSnapshot(id, name string) (SnapshotInfo, error) {
	all := allStripes()
	img.locks.lock(all, true)
	defer img.locks.unlock(all, true)
	img.mu.Lock()
	defer img.mu.Unlock()
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
	if err := img.flushCaches(); err != nil {
		return SnapshotInfo{}, err
	}
	snaps := append(append([]snapshot(nil), img.snaps[:i]...), img.snaps[i+1:]...)
	if err := img.writeSnapshotTable(snaps); err != nil {
		return SnapshotInfo{}, err
	}
	g := &img.g
	if sn.l1Size > 0 {
		l1, err := readTable(img.file, sn.l1Offset, sn.l1Size)
		if err != nil {
			return SnapshotInfo{}, err
		}
		if err := img.addTreeRefs(l1, -1); err != nil {
			return SnapshotInfo{}, err
		}
		img.removeInactiveL1(sn.l1Offset)
		if err := img.freeClusters(sn.l1Offset>>g.clusterBits, g.clustersFor(sn.l1Size*8), false); err != nil {
			return SnapshotInfo{}, err
		}
	}
	if err := img.refcountsBeforeFlags(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.fixCopied(); err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), img.flushAll()
}

func (img *Image) removeInactiveL1(off int64) {
	out := img.meta.ranges[:0]
	for _, r := range img.meta.ranges {
		if r.kind != metaInactiveL1 || r.start != off {
			out = append(out, r)
		}
	}
	img.meta.ranges = out
}

// addTreeRefs adds delta to the refcount of every L2 table l1 references
// and of every cluster those tables reference (qcow2_update_snapshot_
// refcount without the flag update). An L2 table that loses its last
// reference leaves the cache and the overlap set.
func (img *Image) addTreeRefs(l1 []uint64, delta int64) error {
	g := &img.g
	for l1i, e := range l1 {
		l2 := int64(e & l1eOffsetMask)
		if l2 == 0 {
			continue
		}
		if g.inCluster(l2) != 0 {
			return img.corruptf(true, -1, -1, "L2 table offset %#x unaligned (L1 index: %#x)", l2, l1i)
		}
		for s := int64(0); s < g.clusterSize/img.sliceBytes; s++ {
			slot, buf, err := img.l2Get(img.l2Key(l2, s))
			if err != nil {
				return err
			}
			img.l2c.pin(slot)
			err = img.sliceRefs(buf, delta)
			img.l2c.unpin(slot)
			if err != nil {
				return err
			}
		}
		nv, err := img.addRefcount(l2>>g.clusterBits, delta)
		if err != nil {
			return err
		}
		if nv == 0 {
			img.dropL2Slices(l2)
			delete(img.meta.clusters, l2>>g.clusterBits)
		}
	}
	return nil
}

func (img *Image) sliceRefs(buf []byte, delta int64) error {
	g := &img.g
	for idx := int64(0); idx < img.sliceEntries; idx++ {
		e, _ := img.entryAt(buf, idx)
		switch {
		case e&oflagCompressed != 0:
			off, size := g.compressedRange(e)
			for c := off >> g.clusterBits; c <= (off+size-1)>>g.clusterBits; c++ {
				if _, err := img.addRefcount(c, delta); err != nil {
					return err
				}
			}
		case e&l2eOffsetMask != 0:
			if _, err := img.addRefcount(int64(e&l2eOffsetMask)>>g.clusterBits, delta); err != nil {
				return err
			}
		}
	}
	return nil
}

// fixCopied sets the COPIED flag of the active L1 entries and of the
// entries of every L2 table they reach exactly where the cluster's
// refcount is 1 (qcow2_update_snapshot_refcount with addend 0).
func (img *Image) fixCopied() error {
	g := &img.g
	l1Changed := false
	for l1i, e := range img.l1 {
		l2 := int64(e & l1eOffsetMask)
		if l2 == 0 {
			continue
		}
		for s := int64(0); s < g.clusterSize/img.sliceBytes; s++ {
			slot, buf, err := img.l2Get(img.l2Key(l2, s))
			if err != nil {
				return err
			}
			img.l2c.pin(slot)
			changed, err := img.fixSliceCopied(buf)
			if changed {
				img.l2c.markDirty(slot)
			}
			img.l2c.unpin(slot)
			if err != nil {
				return err
			}
		}
		rc, err := img.refcount(l2 >> g.clusterBits)
		if err != nil {
			return err
		}
		ne := e &^ oflagCopied
		if rc == 1 {
			ne |= oflagCopied
		}
		if ne != e {
			img.l1[l1i] = ne
			l1Changed = true
		}
	}
	if !l1Changed {
		return nil
	}
	// L2 flag changes and refcounts first, then the L1 table.
	if err := img.flushCaches(); err != nil {
		return err
	}
	buf := make([]byte, len(img.l1)*8)
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	return img.file.WriteAt(buf, int64(img.hdr.l1TableOffset), 0)
}

func (img *Image) fixSliceCopied(buf []byte) (bool, error) {
	g := &img.g
	changed := false
	for idx := int64(0); idx < img.sliceEntries; idx++ {
		e, bm := img.entryAt(buf, idx)
		if e&oflagCompressed != 0 || e&l2eOffsetMask == 0 {
			continue
		}
		rc, err := img.refcount(int64(e&l2eOffsetMask) >> g.clusterBits)
		if err != nil {
			return changed, err
		}
		ne := e &^ oflagCopied
		if rc == 1 {
			ne |= oflagCopied
		}
		if ne != e {
			img.setEntry(buf, idx, ne, bm)
			changed = true
		}
	}
	return changed, nil
}

// writeSnapshotTable writes snaps as a new table in fresh clusters, makes
// the header point at it (count and offset in one write), then frees the
// old table (qcow2_write_snapshots).
func (img *Image) writeSnapshotTable(snaps []snapshot) error {
	g := &img.g
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
		return fmt.Errorf("qcow2: snapshot table too large")
	}
	var off int64
	if len(buf) > 0 {
		n := g.clustersFor(int64(len(buf)))
		c, err := img.allocRun(n)
		if err != nil {
			return err
		}
		off = c << g.clusterBits
		if k := img.meta.check(g, off, int64(len(buf)), metaNone); k != metaNone {
			return img.corruptf(true, off, int64(len(buf)), "%s", overlapMessage(k))
		}
		if err := img.file.WriteAt(buf, off, 0); err != nil {
			return err
		}
	}
	if err := img.metadataBarrier(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(len(snaps)))
	binary.BigEndian.PutUint64(hb[4:], uint64(off))
	if err := img.file.WriteAt(hb[:], 60, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	oldOff, oldLen := int64(img.hdr.snapshotsOffset), img.snapTableBytes()
	img.hdr.nbSnapshots, img.hdr.snapshotsOffset = uint32(len(snaps)), uint64(off)
	img.snaps = snaps
	img.meta.setRange(metaSnapTable, off, off+roundUp(int64(len(buf)), g.clusterSize))
	if oldOff != 0 && oldLen > 0 {
		return img.freeClusters(oldOff>>g.clusterBits, g.clustersFor(oldLen), false)
	}
	return nil
}

// snapTableBytes is the size of the current table (from the overlap set,
// which holds its cluster-rounded range).
func (img *Image) snapTableBytes() int64 {
	for _, r := range img.meta.ranges {
		if r.kind == metaSnapTable {
			return r.end - r.start
		}
	}
	return 0
}

// ApplySnapshot reverts the active layer to the snapshot whose id, or
// else name, is idOrName (qcow2_snapshot_goto, for qemu-img snapshot -a).
// The image first takes the snapshot's size; then the snapshot's tree
// gains a reference, made stable before the active L1 table is
// overwritten with the snapshot's (written through), and only then does
// the old tree lose its reference; COPIED flags are recomputed last. A
// crash therefore leaves at most leaked clusters or COPIED flags that
// disagree with a refcount, as QEMU's algorithm does.
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
	all := allStripes()
	img.locks.lock(all, true)
	defer img.locks.unlock(all, true)
	img.mu.Lock()
	defer img.mu.Unlock()
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
	if sn.l1Size > int64(len(img.l1)) {
		if err := img.growL1(sn.l1Size); err != nil {
			return SnapshotInfo{}, err
		}
	}
	snL1, err := readTable(img.file, sn.l1Offset, sn.l1Size)
	if err != nil {
		return SnapshotInfo{}, err
	}
	// The snapshot's copy of L1 keeps the flags of the moment it was
	// taken; none may claim a cluster unshared before fixCopied decides.
	newL1 := make([]uint64, len(img.l1))
	for j, e := range snL1 {
		newL1[j] = e &^ oflagCopied
	}
	if err := img.flushCaches(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.addTreeRefs(snL1, 1); err != nil {
		return SnapshotInfo{}, err
	}
	// The new references are stable before the L1 table uses them.
	if err := img.flushAll(); err != nil {
		return SnapshotInfo{}, err
	}
	g := &img.g
	buf := make([]byte, len(newL1)*8)
	for j, e := range newL1 {
		binary.BigEndian.PutUint64(buf[j*8:], e)
	}
	l1Off := int64(img.hdr.l1TableOffset)
	if k := img.meta.check(g, l1Off, int64(len(buf)), metaL1); k != metaNone {
		return SnapshotInfo{}, img.corruptf(true, l1Off, int64(len(buf)), "%s", overlapMessage(k))
	}
	if err := img.file.WriteAt(buf, l1Off, 0); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.file.Flush(); err != nil {
		return SnapshotInfo{}, err
	}
	old := img.l1
	img.l1 = newL1
	// The active L2 tables are now the snapshot's.
	for c, k := range img.meta.clusters {
		if k == metaL2 {
			delete(img.meta.clusters, c)
		}
	}
	for _, e := range newL1 {
		if l2 := int64(e & l1eOffsetMask); l2 != 0 {
			img.meta.clusters[l2>>g.clusterBits] = metaL2
		}
	}
	if err := img.addTreeRefs(old, -1); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.refcountsBeforeFlags(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.fixCopied(); err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), img.flushAll()
}

// The COPIED flag says a cluster is not shared, so a write may change it
// in place. Whenever refcounts and flags change together, the order of
// the writes keeps every intermediate state on the safe side: a flag is
// cleared before a refcount rises (clearCopied) and set only after a
// refcount has fallen (refcountsBeforeFlags). A kill in between leaves
// at worst an entry without COPIED whose refcount is 1 (a needless
// copy-on-write, reported by qemu-img check as an OFLAG_COPIED error and
// repaired by -r all), never a flag on a shared cluster.

// clearCopied clears the COPIED flag on every active L1 and L2 entry and
// makes the tables stable.
func (img *Image) clearCopied() error {
	g := &img.g
	for l1i, e := range img.l1 {
		l2 := int64(e & l1eOffsetMask)
		if l2 == 0 {
			continue
		}
		for s := int64(0); s < g.clusterSize/img.sliceBytes; s++ {
			slot, buf, err := img.l2Get(img.l2Key(l2, s))
			if err != nil {
				return err
			}
			changed := false
			for idx := int64(0); idx < img.sliceEntries; idx++ {
				if e, bm := img.entryAt(buf, idx); e&oflagCopied != 0 {
					img.setEntry(buf, idx, e&^oflagCopied, bm)
					changed = true
				}
			}
			if changed {
				img.l2c.markDirty(slot)
			}
		}
		img.l1[l1i] = e &^ oflagCopied
	}
	if err := img.flushCaches(); err != nil {
		return err
	}
	buf := make([]byte, len(img.l1)*8)
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	if err := img.file.WriteAt(buf, int64(img.hdr.l1TableOffset), 0); err != nil {
		return err
	}
	return img.file.Flush()
}

// refcountsBeforeFlags makes lowered refcounts stable before fixCopied
// sets flags from them. The references they drop are already unreachable
// (an old L1 table or a snapshot no longer in the table), so nothing
// depends on an L2 write going first.
func (img *Image) refcountsBeforeFlags() error {
	if err := img.writeRefcounts(); err != nil {
		return err
	}
	return img.file.Flush()
}
