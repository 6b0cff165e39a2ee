package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Refcounts (docs/interop/qcow2.txt, "Host cluster management").
//
// Invariants (under mu):
//   - img.reftable mirrors the on-disk refcount table entry for entry;
//   - a cluster whose refcount table entry is 0, or that lies past the end
//     of the table, has refcount 0;
//   - every refcount block referenced by the table has refcount >= 1 in
//     itself or in another block (new blocks are created self-describing
//     when they can be);
//   - refcount changes go through the refcount cache; new refcount blocks
//     and the refcount table itself are written through, block content
//     first, flushed, then the table entry or header that points at it.

var errCachePinned = errors.New("qcow2: metadata cache exhausted")

func getRefcount(buf []byte, i int64, order uint) uint64 {
	switch order {
	case 0, 1, 2:
		bits := int64(1) << order
		bit := i * bits
		return uint64(buf[bit>>3]>>(bit&7)) & (1<<bits - 1)
	case 3:
		return uint64(buf[i])
	case 4:
		return uint64(binary.BigEndian.Uint16(buf[i*2:]))
	case 5:
		return uint64(binary.BigEndian.Uint32(buf[i*4:]))
	default:
		return binary.BigEndian.Uint64(buf[i*8:])
	}
}

func setRefcount(buf []byte, i int64, order uint, v uint64) {
	switch order {
	case 0, 1, 2:
		bits := int64(1) << order
		bit := i * bits
		mask := byte(1<<bits-1) << (bit & 7)
		buf[bit>>3] = buf[bit>>3]&^mask | byte(v<<(bit&7))&mask
	case 3:
		buf[i] = byte(v)
	case 4:
		binary.BigEndian.PutUint16(buf[i*2:], uint16(v))
	case 5:
		binary.BigEndian.PutUint32(buf[i*4:], uint32(v))
	default:
		binary.BigEndian.PutUint64(buf[i*8:], v)
	}
}

// refblockOffset returns the host offset of the refcount block for table
// index r, 0 when none is allocated.
func (img *Image) refblockOffset(r int64) (int64, error) {
	if r >= int64(len(img.reftable)) {
		return 0, nil
	}
	off := int64(img.reftable[r] & reftOffsetMask)
	if off != 0 && img.g.inCluster(off) != 0 {
		return 0, img.corruptf(true, -1, -1,
			"Refblock offset %#x unaligned (reftable index: %#x)", off, r)
	}
	if off>>img.g.clusterBits >= img.allocEnd {
		return 0, img.corruptf(true, -1, -1,
			"Refblock offset %#x beyond the end of the image file (reftable index: %#x)", off, r)
	}
	return off, nil
}

// refcount returns the refcount of host cluster idx.
func (img *Image) refcount(idx int64) (uint64, error) {
	g := &img.g
	rb, err := img.refblockOffset(idx >> g.refblockBits)
	if err != nil || rb == 0 {
		return 0, err
	}
	_, buf, err := img.rcGet(rb)
	if err != nil {
		return 0, err
	}
	return getRefcount(buf, idx&(g.refblockEntries-1), g.refcountOrder), nil
}

// addRefcount changes the refcount of host cluster idx by delta (+1 or
// -1 in practice). Increments require the refcount block to exist (the
// allocator creates it); a decrement to 0 makes the cluster reusable.
func (img *Image) addRefcount(idx, delta int64) (uint64, error) {
	g := &img.g
	r := idx >> g.refblockBits
	rb, err := img.refblockOffset(r)
	if err != nil {
		return 0, err
	}
	if rb == 0 {
		if delta < 0 {
			return 0, img.corruptf(false, idx<<g.clusterBits, g.clusterSize,
				"Cannot free cluster %#x: it has no refcount block", idx<<g.clusterBits)
		}
		return 0, fmt.Errorf("qcow2: internal error: no refcount block for cluster %#x", idx)
	}
	if delta < 0 {
		if err := img.beforeDecrement(); err != nil {
			return 0, err
		}
	}
	slot, buf, err := img.rcGet(rb)
	if err != nil {
		return 0, err
	}
	j := idx & (g.refblockEntries - 1)
	v := getRefcount(buf, j, g.refcountOrder)
	var nv uint64
	switch {
	case delta < 0:
		if v < uint64(-delta) {
			return 0, img.corruptf(false, idx<<g.clusterBits, g.clusterSize,
				"Refcount underflow for cluster %#x", idx<<g.clusterBits)
		}
		nv = v - uint64(-delta)
	default:
		if g.refcountMax-v < uint64(delta) {
			return 0, fmt.Errorf("qcow2: refcount overflow for cluster %#x (refcount bits %d)",
				idx<<g.clusterBits, g.refcountBits)
		}
		nv = v + uint64(delta)
		if v == 0 && img.refDependsL2 {
			// Reusing a cluster that may have been freed by an L2 change
			// not yet on disk: make that change stable first.
			if err := img.refPrereq(); err != nil {
				return 0, err
			}
		}
	}
	setRefcount(buf, j, g.refcountOrder, nv)
	img.rc.markDirty(slot)
	if nv == 0 {
		if idx < img.freeHint {
			img.freeHint = idx
		}
		if img.freeBytes>>g.clusterBits == idx {
			img.freeBytes = 0
		}
		img.comp.invalidate()
	}
	return nv, nil
}

// setClusterRefcount stores an exact refcount (repairs, stale counts).
// The refcount block must exist.
func (img *Image) setClusterRefcount(c int64, v uint64) error {
	g := &img.g
	rb, err := img.refblockOffset(c >> g.refblockBits)
	if err != nil {
		return err
	}
	if rb == 0 {
		return fmt.Errorf("qcow2: internal error: no refcount block for cluster %#x", c)
	}
	slot, buf, err := img.rcGet(rb)
	if err != nil {
		return err
	}
	setRefcount(buf, c&(g.refblockEntries-1), g.refcountOrder, v)
	img.rc.markDirty(slot)
	if img.freeBytes>>g.clusterBits == c {
		img.freeBytes = 0
	}
	return nil
}

// newRefblock creates the refcount block for table index r at host
// cluster b, which the caller found free. If b is not covered by the new
// block itself its refcount is taken in its own (existing) block.
func (img *Image) newRefblock(r, b int64) error {
	img.event("refblock_alloc")
	g := &img.g
	buf := make([]byte, g.clusterSize)
	if b>>g.refblockBits == r {
		setRefcount(buf, b&(g.refblockEntries-1), g.refcountOrder, 1)
	} else if _, err := img.addRefcount(b, 1); err != nil {
		return err
	}
	off := b << g.clusterBits
	if k := img.meta.check(g, off, g.clusterSize, metaNone); k != metaNone {
		return img.corruptf(true, off, g.clusterSize, "%s", overlapMessage(k))
	}
	img.event("refblock_alloc_write")
	if err := img.file.WriteAt(buf, off, 0); err != nil {
		return err
	}
	// The block (and b's refcount if kept elsewhere) must be stable
	// before the table points at it.
	if err := img.metadataBarrier(); err != nil {
		return err
	}
	img.event("refblock_alloc_hookup")
	if err := img.writeReftableEntry(r, uint64(off)); err != nil {
		return err
	}
	img.allocEnd = max(img.allocEnd, b+1)
	img.meta.clusters[b] = metaRefblock
	return img.rcInstall(off, buf)
}

func (img *Image) writeReftableEntry(r int64, v uint64) error {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], v)
	pos := int64(img.hdr.refcountTableOffset) + r*8
	if err := img.file.WriteAt(e[:], pos, 0); err != nil {
		return err
	}
	img.reftable[r] = v
	return nil
}

// growReftable replaces the refcount table by one with at least minEntries
// entries (QEMU's qcow2_refcount_area). The new table and the refcount
// blocks describing it go to a fresh area just past the clusters the old
// table can describe, so they need nothing from the old table:
//
//	[A, A+nRB)        new refcount blocks, for the ranges of the area
//	[A+nRB, A+nRB+nT) the new table
//
// Order: blocks and table written, flush, header switched in one 12-byte
// write, flush, then the old table's clusters are freed.
func (img *Image) growReftable(minEntries int64) error {
	img.event("reftable_grow")
	g := &img.g
	old := int64(len(img.reftable))
	a := old << g.refblockBits
	perCluster := g.clusterSize / 8
	want := old + (old+1)/2
	if want < minEntries {
		want = minEntries
	}
	var nRB, nT int64 = 1, 0
	for {
		nT = (want + perCluster - 1) / perCluster
		need := (nRB + nT + g.refblockEntries - 1) / g.refblockEntries
		if need > nRB {
			nRB = need
			continue
		}
		if old+nRB > want {
			want = old + nRB
			continue
		}
		break
	}
	want = nT * perCluster
	if want*8 > maxReftableBytes {
		return errors.New("qcow2: refcount table would exceed its maximum size (File too large)")
	}
	// Refcount blocks for the area: every cluster of the area is in use.
	blocks := make([]byte, nRB*g.clusterSize)
	for c := a; c < a+nRB+nT; c++ {
		j := c - a
		blk := blocks[(j>>g.refblockBits)*g.clusterSize:][:g.clusterSize]
		setRefcount(blk, j&(g.refblockEntries-1), g.refcountOrder, 1)
	}
	table := make([]byte, nT*g.clusterSize)
	for i, e := range img.reftable {
		binary.BigEndian.PutUint64(table[i*8:], e)
	}
	for j := int64(0); j < nRB; j++ {
		binary.BigEndian.PutUint64(table[(old+j)*8:], uint64((a+j)<<g.clusterBits))
	}
	aOff := a << g.clusterBits
	if k := img.meta.check(g, aOff, (nRB+nT)<<g.clusterBits, metaNone); k != metaNone {
		return img.corruptf(true, aOff, (nRB+nT)<<g.clusterBits, "%s", overlapMessage(k))
	}
	img.event("refblock_alloc_write_blocks")
	if err := img.file.WriteAt(blocks, aOff, 0); err != nil {
		return err
	}
	tOff := (a + nRB) << g.clusterBits
	img.event("refblock_alloc_write_table")
	if err := img.file.WriteAt(table, tOff, 0); err != nil {
		return err
	}
	if err := img.metadataBarrier(); err != nil {
		return err
	}
	img.event("refblock_alloc_switch_table")
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(tOff))
	binary.BigEndian.PutUint32(hb[8:], uint32(nT))
	if err := img.file.WriteAt(hb[:], 48, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	oldOff, oldClusters := int64(img.hdr.refcountTableOffset), int64(img.hdr.refcountTableClusters)
	img.hdr.refcountTableOffset, img.hdr.refcountTableClusters = uint64(tOff), uint32(nT)
	newTable := make([]uint64, want)
	copy(newTable, img.reftable)
	for j := int64(0); j < nRB; j++ {
		newTable[old+j] = uint64((a + j) << g.clusterBits)
		img.meta.clusters[a+j] = metaRefblock
	}
	img.reftable = newTable
	img.allocEnd = max(img.allocEnd, a+nRB+nT)
	img.meta.setRange(metaReftable, tOff, tOff+nT<<g.clusterBits)
	for c := int64(0); c < oldClusters; c++ {
		if _, err := img.addRefcount(oldOff>>g.clusterBits+c, -1); err != nil {
			return err
		}
	}
	return nil
}
