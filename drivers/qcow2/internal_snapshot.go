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
// The writes of each operation come in groups separated by flushes;
// docs/design.md ("Internal snapshots") shows why every state a power
// loss can leave within a group is safe. Create: the L1 copy, the new
// snapshot table, the raised refcounts and the cleared COPIED flags,
// one flush, then the header names the new table (one 12-byte write,
// flushed) and the old table is freed. Delete: new table, flush, header,
// flush; then the snapshot's references drop and COPIED is set where a
// refcount fell to 1, flushed. Apply: the snapshot's tree gains a
// reference and loses its flags, flush, the active L1 table is
// overwritten, flush, the old tree's references drop and the flags are
// recomputed, flush. Within a group the writes go back to back
// (writeGroup), so a killed process leaves check-visible disagreement
// between a refcount and a COPIED flag only if it dies between the first
// and the last write of a group; a crash otherwise leaves at most leaked
// clusters.

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
	// Barrier: what earlier writes left in the caches is stable, so that
	// the caches hold only this snapshot's changes below.
	if err := img.flushAll(); err != nil {
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
	snaps := append(append([]snapshot(nil), img.snaps...), sn)
	tbl, err := img.newSnapshotTable(snaps)
	if err != nil {
		return SnapshotInfo{}, err
	}
	// Every reachable cluster gains a reference and loses its COPIED
	// flag. Until the header names the new table nothing but the active
	// tree references these clusters, so any mix of old and new
	// refcounts and flags is safe: the writes go back to back, flags
	// first (a kill in between shows as entries without COPIED), and one
	// flush makes them, the L1 copy and the table stable together.
	l1Changed, err := img.treeRefs(img.l1, 1, true)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.writeGroup(false, l1Changed); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.switchSnapshotTable(snaps, tbl); err != nil {
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
	if err := img.flushAll(); err != nil {
		return SnapshotInfo{}, err
	}
	snaps := append(append([]snapshot(nil), img.snaps[:i]...), img.snaps[i+1:]...)
	tbl, err := img.newSnapshotTable(snaps)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.metadataBarrier(); err != nil {
		return SnapshotInfo{}, err
	}
	// switchSnapshotTable flushes the header: from here on the snapshot's
	// tree is unreachable, so its references may drop in any order.
	if err := img.switchSnapshotTable(snaps, tbl); err != nil {
		return SnapshotInfo{}, err
	}
	g := &img.g
	if sn.l1Size > 0 {
		l1, err := readTable(img.file, sn.l1Offset, sn.l1Size)
		if err != nil {
			return SnapshotInfo{}, err
		}
		if _, err := img.treeRefs(l1, -1, false); err != nil {
			return SnapshotInfo{}, err
		}
		img.removeInactiveL1(sn.l1Offset)
		if err := img.freeClusters(sn.l1Offset>>g.clusterBits, g.clustersFor(sn.l1Size*8), false); err != nil {
			return SnapshotInfo{}, err
		}
	}
	// COPIED where a refcount fell to 1. The in-memory refcounts count
	// every remaining reference, so a flag set before its refcount is
	// written marks a cluster that nothing else references (only a leak
	// until the refcount lands): refcounts go first only so that a kill
	// in between shows as entries without COPIED.
	l1Changed, err := img.treeRefs(img.l1, 0, true)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), img.writeGroup(true, l1Changed)
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

// treeRefs adds delta (-1, 0 or +1) to the refcount of every L2 table l1
// references and of every cluster those tables reference
// (qcow2_update_snapshot_refcount). With flags, the COPIED flag of each
// entry of those L2 tables and of l1 itself becomes "refcount is 1" (in
// the cache and in l1; the caller writes them); l1Changed says whether l1
// changed. An L2 table that loses its last reference leaves the cache and
// the overlap set.
func (img *Image) treeRefs(l1 []uint64, delta int64, flags bool) (l1Changed bool, err error) {
	g := &img.g
	for l1i, e := range l1 {
		l2 := int64(e & l1eOffsetMask)
		if l2 == 0 {
			continue
		}
		if g.inCluster(l2) != 0 {
			return l1Changed, img.corruptf(true, -1, -1, "L2 table offset %#x unaligned (L1 index: %#x)", l2, l1i)
		}
		for s := int64(0); s < g.clusterSize/img.sliceBytes; s++ {
			slot, buf, err := img.l2Get(img.l2Key(l2, s))
			if err != nil {
				return l1Changed, err
			}
			img.l2c.pin(slot)
			changed, err := img.sliceRefs(buf, delta, flags)
			if changed {
				img.l2c.markDirty(slot)
			}
			img.l2c.unpin(slot)
			if err != nil {
				return l1Changed, err
			}
		}
		rc, err := img.changeRefcount(l2>>g.clusterBits, delta)
		if err != nil {
			return l1Changed, err
		}
		if rc == 0 && delta < 0 {
			img.dropL2Slices(l2)
			delete(img.meta.clusters, l2>>g.clusterBits)
		}
		if flags {
			ne := e &^ oflagCopied
			if rc == 1 {
				ne |= oflagCopied
			}
			if ne != e {
				l1[l1i] = ne
				l1Changed = true
			}
		}
	}
	return l1Changed, nil
}

// changeRefcount adds delta to a cluster's refcount and returns the new
// value (the current one for delta 0).
func (img *Image) changeRefcount(c, delta int64) (uint64, error) {
	if delta == 0 {
		return img.refcount(c)
	}
	return img.addRefcount(c, delta)
}

func (img *Image) sliceRefs(buf []byte, delta int64, flags bool) (changed bool, err error) {
	g := &img.g
	for idx := int64(0); idx < img.sliceEntries; idx++ {
		e, bm := img.entryAt(buf, idx)
		switch {
		case e&oflagCompressed != 0:
			if delta == 0 {
				continue
			}
			off, size := g.compressedRange(e)
			for c := off >> g.clusterBits; c <= (off+size-1)>>g.clusterBits; c++ {
				if _, err := img.addRefcount(c, delta); err != nil {
					return changed, err
				}
			}
		case e&l2eOffsetMask != 0:
			rc, err := img.changeRefcount(int64(e&l2eOffsetMask)>>g.clusterBits, delta)
			if err != nil {
				return changed, err
			}
			if !flags {
				continue
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
	}
	return changed, nil
}

// snapTable is a snapshot table written to fresh clusters and not yet
// named by the header.
type snapTable struct {
	off  int64
	size int64
}

// newSnapshotTable writes snaps as a new table in fresh clusters
// (qcow2_write_snapshots up to the header update). Its refcounts are in
// the cache: the caller makes them stable before switchSnapshotTable.
func (img *Image) newSnapshotTable(snaps []snapshot) (snapTable, error) {
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
		return snapTable{}, fmt.Errorf("qcow2: snapshot table too large")
	}
	t := snapTable{size: int64(len(buf))}
	if len(buf) == 0 {
		return t, nil
	}
	c, err := img.allocRun(g.clustersFor(t.size))
	if err != nil {
		return snapTable{}, err
	}
	t.off = c << g.clusterBits
	if k := img.meta.check(g, t.off, t.size, metaNone); k != metaNone {
		return snapTable{}, img.corruptf(true, t.off, t.size, "%s", overlapMessage(k))
	}
	return t, img.file.WriteAt(buf, t.off, 0)
}

// switchSnapshotTable makes the header name t (count and offset in one
// write), flushes, then frees the old table. The caller has made t and
// everything it references stable.
func (img *Image) switchSnapshotTable(snaps []snapshot, t snapTable) error {
	g := &img.g
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(len(snaps)))
	binary.BigEndian.PutUint64(hb[4:], uint64(t.off))
	if err := img.file.WriteAt(hb[:], 60, 0); err != nil {
		return err
	}
	// The old table's clusters are freed only once no header names them.
	if err := img.file.Flush(); err != nil {
		return err
	}
	oldOff, oldLen := int64(img.hdr.snapshotsOffset), img.snapTableBytes()
	img.hdr.nbSnapshots, img.hdr.snapshotsOffset = uint32(len(snaps)), uint64(t.off)
	img.snaps = snaps
	img.meta.setRange(metaSnapTable, t.off, t.off+roundUp(t.size, g.clusterSize))
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
// gains a reference and loses every COPIED flag (a QEMU-written table
// may carry flags from when it was unshared), made stable before the
// active L1 table is overwritten with the snapshot's (flags cleared,
// made stable), and only then does the old tree lose its reference and
// the flags follow the refcounts. Every state a crash can leave holds at
// most leaked clusters.
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
	if err := img.flushAll(); err != nil {
		return SnapshotInfo{}, err
	}
	// The snapshot's tree: one more reference, no COPIED flag (its
	// refcounts are now at least 2). Nothing active reads these flags yet
	// and the raised refcounts are leaks until the L1 table switches, so
	// the writes may land in any order; they are stable before it.
	if _, err := img.treeRefs(snL1, 1, true); err != nil {
		return SnapshotInfo{}, err
	}
	if err := img.writeGroup(true, false); err != nil {
		return SnapshotInfo{}, err
	}
	newL1 := make([]uint64, len(img.l1))
	for j, e := range snL1 {
		newL1[j] = e &^ oflagCopied
	}
	old := img.l1
	img.l1 = newL1
	if err := img.writeL1Table(); err != nil {
		img.l1 = old
		return SnapshotInfo{}, err
	}
	// The switch is stable before the old tree's references drop.
	if err := img.file.Flush(); err != nil {
		img.l1 = old
		return SnapshotInfo{}, err
	}
	g := &img.g
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
	if _, err := img.treeRefs(old, -1, false); err != nil {
		return SnapshotInfo{}, err
	}
	// The old tree is unreachable: its refcounts and the flags they allow
	// go back to back (see DeleteSnapshot).
	l1Changed, err := img.treeRefs(img.l1, 0, true)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return sn.info(), img.writeGroup(true, l1Changed)
}
