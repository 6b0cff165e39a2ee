package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Guest → host mapping through the L1 table and L2 tables (cached in
// slices of sliceBytes). Everything here runs under mu.
//
// Invariants:
//   - img.l1 mirrors the on-disk L1 table; an L1 entry with the COPIED
//     flag points at an L2 table with refcount 1 that may be modified in
//     place; any other non-zero entry is shared and is copied before the
//     first modification (l2ForWrite);
//   - a new L2 table is written in full and made stable, together with its
//     refcount, before the L1 entry pointing at it is written.

// slicePos locates the L2 entry for guest offset off: the L1 index, the
// slice index within the table and the entry index within the slice.
func (img *Image) slicePos(off int64) (l1i, slice, idx int64) {
	g := &img.g
	l1i = g.l1Index(off)
	l2i := g.l2Index(off)
	return l1i, l2i / img.sliceEntries, l2i % img.sliceEntries
}

// l2Table returns the L2 table offset for L1 index l1i (0 = none),
// signalling a corruption for an unaligned one.
func (img *Image) l2Table(l1i int64) (int64, error) {
	if l1i >= int64(len(img.l1)) {
		return 0, fmt.Errorf("qcow2: internal error: L1 index %d past the table", l1i)
	}
	off := int64(img.l1[l1i] & l1eOffsetMask)
	if off != 0 && img.g.inCluster(off) != 0 {
		return 0, img.corruptf(true, -1, -1, "L2 table offset %#x unaligned (L1 index: %#x)", off, l1i)
	}
	// Tables are written before anything points at them, so one past the
	// end of the file is corrupt (and must not be written there).
	if off>>img.g.clusterBits >= img.allocEnd {
		return 0, img.corruptf(true, -1, -1, "L2 table offset %#x beyond the end of the image file (L1 index: %#x)", off, l1i)
	}
	return off, nil
}

func (img *Image) entryAt(buf []byte, idx int64) (entry, bitmap uint64) {
	if img.g.extL2 {
		return binary.BigEndian.Uint64(buf[idx*16:]), binary.BigEndian.Uint64(buf[idx*16+8:])
	}
	return binary.BigEndian.Uint64(buf[idx*8:]), 0
}

func (img *Image) setEntry(buf []byte, idx int64, entry, bitmap uint64) {
	if img.g.extL2 {
		binary.BigEndian.PutUint64(buf[idx*16:], entry)
		binary.BigEndian.PutUint64(buf[idx*16+8:], bitmap)
		return
	}
	binary.BigEndian.PutUint64(buf[idx*8:], entry)
}

// extent is a run of guest bytes with one state, as found by mapExtent.
type extent struct {
	k     kind
	host  int64  // host offset of the first byte (kNormal, kZeroAlloc, kUnallocAlloc)
	n     int64  // length in bytes
	entry uint64 // the L2 entry (kCompressed)
}

// mapExtent describes guest bytes [off, off+max): the state of the first
// byte and how far it extends (within one L2 slice, host-contiguous for
// states with a host offset, one cluster for compressed clusters).
func (img *Image) mapExtent(off, max int64) (extent, error) {
	g := &img.g
	l1i, slice, idx := img.slicePos(off)
	l2off, err := img.l2Table(l1i)
	if err != nil {
		return extent{}, err
	}
	if l2off == 0 {
		// The whole L2 table range is unallocated.
		span := int64(1) << (g.clusterBits + g.l2Bits)
		n := span - off&(span-1)
		if n > max {
			n = max
		}
		return extent{k: kUnalloc, n: n}, nil
	}
	_, buf, err := img.l2Get(img.l2Key(l2off, slice))
	if err != nil {
		return extent{}, err
	}
	var ext extent
	pos := off
	end := off + max
	for idx < img.sliceEntries && pos < end {
		e, bm := img.entryAt(buf, idx)
		cstart := g.clusterStart(pos)
		sc := uint((pos - cstart) >> g.scBits)
		for sc < uint(int64(1)<<(g.clusterBits-g.scBits)) && pos < end {
			k := g.classify(e, bm, sc)
			host := int64(0)
			switch k {
			case kInvalid:
				return extent{}, img.corruptf(true, -1, -1,
					"Invalid cluster entry found  (L2 offset: %#x, L2 index: %#x)",
					l2off, slice*img.sliceEntries+idx)
			case kZero, kZeroAlloc:
				if img.version.Load() < 3 {
					return extent{}, img.corruptf(true, -1, -1,
						"Zero cluster entry found in pre-v3 image (L2 offset: %#x, L2 index: %#x)",
						l2off, slice*img.sliceEntries+idx)
				}
			}
			if k == kNormal || k == kZeroAlloc || k == kUnallocAlloc {
				hc := int64(e & l2eOffsetMask)
				if g.inCluster(hc) != 0 {
					return extent{}, img.corruptf(true, -1, -1,
						"Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %#x)",
						hc, l2off, slice*img.sliceEntries+idx)
				}
				if hc>>g.clusterBits >= img.allocEnd {
					return extent{}, img.corruptf(true, -1, -1,
						"Cluster allocation offset %#x beyond the end of the image file (L2 offset: %#x, L2 index: %#x)",
						hc, l2off, slice*img.sliceEntries+idx)
				}
				host = hc + (pos - cstart)
			}
			step := int64(1)<<g.scBits - (pos-cstart)&(g.scSize-1)
			if k == kCompressed {
				step = g.clusterSize - (pos - cstart)
			}
			if step > end-pos {
				step = end - pos
			}
			if ext.n == 0 {
				ext = extent{k: k, host: host, n: step, entry: e}
			} else if k != ext.k || k == kCompressed || (host != 0 && host != ext.host+ext.n) {
				return ext, nil
			} else {
				ext.n += step
			}
			pos += step
			if k == kCompressed {
				break
			}
			sc++
		}
		if ext.k == kCompressed {
			return ext, nil
		}
		idx++
	}
	return ext, nil
}

// l2ForWrite returns the slice holding the entry for guest offset off
// from an L2 table that may be modified in place, allocating a new table
// (or copying a shared one) first if needed.
func (img *Image) l2ForWrite(off int64) (int32, []byte, int64, error) {
	l1i, slice, idx := img.slicePos(off)
	l2off, err := img.l2Table(l1i)
	if err != nil {
		return -1, nil, 0, err
	}
	if l2off == 0 || img.l1[l1i]&oflagCopied == 0 {
		if l2off, err = img.newL2Table(l1i, l2off); err != nil {
			return -1, nil, 0, err
		}
	}
	slot, buf, err := img.l2Get(img.l2Key(l2off, slice))
	return slot, buf, idx, err
}

// newL2Table gives L1 entry l1i a fresh, exclusively owned L2 table:
// empty, or a copy of the shared table at old.
func (img *Image) newL2Table(l1i, old int64) (int64, error) {
	g := &img.g
	table := make([]byte, g.clusterSize)
	if old != 0 {
		img.event("l2_alloc_cow_read")
		// A shared table is never modified by this image, so the file
		// holds its current content.
		if err := img.readFileClamped(table, old); err != nil {
			return 0, err
		}
	}
	c, err := img.allocRun(1)
	if err != nil {
		return 0, err
	}
	off := c << g.clusterBits
	if off == 0 {
		return 0, img.corruptf(true, -1, -1, "Preventing invalid allocation of L2 table at offset 0")
	}
	if k := img.meta.check(g, off, g.clusterSize, metaNone); k != metaNone {
		return 0, img.corruptf(true, off, g.clusterSize, "%s", overlapMessage(k))
	}
	img.event("l2_alloc_write")
	if err := img.file.WriteAt(table, off, 0); err != nil {
		_, _ = img.addRefcount(c, -1)
		return 0, err
	}
	if err := img.metadataBarrier(); err != nil {
		return 0, err
	}
	if err := img.writeL1Entry(l1i, uint64(off)|oflagCopied); err != nil {
		return 0, err
	}
	img.meta.clusters[c] = metaL2
	if old != 0 {
		delete(img.meta.clusters, old>>g.clusterBits)
		nv, err := img.addRefcount(old>>g.clusterBits, -1)
		if err != nil {
			return 0, err
		}
		if nv == 0 {
			img.dropL2Slices(old)
		}
	}
	return off, nil
}

func (img *Image) dropL2Slices(table int64) {
	for s := int64(0); s < img.g.clusterSize/img.sliceBytes; s++ {
		img.l2c.drop(img.l2Key(table, s))
	}
}

func (img *Image) writeL1Entry(l1i int64, v uint64) error {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], v)
	pos := int64(img.hdr.l1TableOffset) + l1i*8
	if k := img.meta.check(&img.g, pos, 8, metaL1); k != metaNone {
		return img.corruptf(true, pos, 8, "%s", overlapMessage(k))
	}
	img.event("l1_update")
	if err := img.file.WriteAt(e[:], pos, 0); err != nil {
		return err
	}
	img.l1[l1i] = v
	return nil
}

// growL1 replaces the L1 table by one with n entries (n > len(l1)):
// new table written and stable, header switched (l1_size and
// l1_table_offset are adjacent: one 12-byte write), then the old table
// freed.
func (img *Image) growL1(n int64) error {
	g := &img.g
	if n*8 > maxL1Bytes {
		return errors.New("Failed to grow the L1 table: File too large")
	}
	clusters := g.clustersFor(n * 8)
	img.event("l1_grow_alloc_table")
	c, err := img.allocRun(clusters)
	if err != nil {
		return err
	}
	off := c << g.clusterBits
	// Only the table's bytes are written, as QEMU does: a fresh image's
	// file then ends where QEMU's ends.
	buf := make([]byte, n*8)
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	if k := img.meta.check(g, off, int64(len(buf)), metaNone); k != metaNone {
		return img.corruptf(true, off, int64(len(buf)), "%s", overlapMessage(k))
	}
	img.event("l1_grow_write_table")
	if err := img.file.WriteAt(buf, off, 0); err != nil {
		return err
	}
	if err := img.metadataBarrier(); err != nil {
		return err
	}
	img.event("l1_grow_activate_table")
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(n))
	binary.BigEndian.PutUint64(hb[4:], uint64(off))
	if err := img.file.WriteAt(hb[:], 36, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	oldOff, oldN := int64(img.hdr.l1TableOffset), int64(len(img.l1))
	l1 := make([]uint64, n)
	copy(l1, img.l1)
	img.l1 = l1
	img.hdr.l1Size, img.hdr.l1TableOffset = uint32(n), uint64(off)
	img.meta.setRange(metaL1, off, off+clusters<<g.clusterBits)
	if oldOff != 0 && oldN > 0 {
		return img.freeClusters(oldOff>>g.clusterBits, g.clustersFor(oldN*8), false)
	}
	return nil
}
