package qcow2

import (
	"encoding/binary"
	"errors"
)

// Resizing, after QEMU's qcow2_co_truncate. Growing (ops.go) makes the L1
// table big enough (growL1: new table written and flushed before the
// header points at it) and then records the size. Shrinking crops in an
// order that keeps the image valid at every instant, with leaks at most:
//
//  1. clusters from the new end (rounded up to a cluster) to the old end
//     become unallocated, through the normal discard path (L2 entries
//     written before the refcounts drop), for the part covered by L2
//     tables that stay; as in QEMU, that part gets an L2 table if it had
//     none;
//  2. L1 entries past the new L1 size are zeroed on disk and flushed, and
//     only then are the L2 tables they referenced, and the clusters those
//     tables alone referenced, freed (QEMU's qcow2_shrink_l1_table; the
//     L1 table keeps its size, as in QEMU);
//  3. the new size is written to the header;
//  4. everything is flushed and the file is cut after the last cluster in
//     use, as QEMU does.
//
// Refcount blocks that only describe free clusters are kept (QEMU's
// qcow2_shrink_reftable frees them); they only matter for images whose
// file shrinks by more than a refcount block's span.

// resizable refuses what QEMU refuses before any resize (under mu).
func (img *Image) resizable() error {
	if err := img.usable(true); err != nil {
		return err
	}
	if img.hdr.nbSnapshots > 0 && img.version.Load() < 3 {
		return errors.New("Can't resize a v2 image which has snapshots")
	}
	return img.prepareWrite()
}

// writeSize records the virtual size in the header (under mu).
func (img *Image) writeSize(size int64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(size))
	if err := img.file.WriteAt(b[:], 24, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.hdr.size = uint64(size)
	img.size.Store(size)
	return nil
}

func (img *Image) shrink(size int64) error {
	img.mu.Lock()
	err := img.resizable()
	img.mu.Unlock()
	if err != nil {
		return err
	}
	g := &img.g
	old := img.size.Load()
	keepL1 := g.l1EntriesFor(size)
	start := roundUp(size, g.clusterSize)
	end := min(old, keepL1<<(g.clusterBits+g.l2Bits))
	if start < end {
		if err := img.zeroRange(start, end, opCrop, 0); err != nil {
			return err
		}
	}
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return err
	}
	if err := img.growLikeQemu(keepL1, g.l1EntriesFor(old)); err != nil {
		return err
	}
	if err := img.shrinkL1(keepL1); err != nil {
		return err
	}
	if err := img.writeSize(size); err != nil {
		return err
	}
	return img.cutFile()
}

// shrinkL1 drops the L1 entries from keep on (under mu and every stripe).
func (img *Image) shrinkL1(keep int64) error {
	g := &img.g
	n := int64(len(img.l1))
	if keep >= n {
		return nil
	}
	drop := false
	for _, e := range img.l1[keep:] {
		drop = drop || e&l1eOffsetMask != 0
	}
	if !drop {
		return nil
	}
	// Dirty L2 slices of the tables being dropped must not be written
	// back after the tables are freed: write everything now.
	if err := img.flushCaches(); err != nil {
		return err
	}
	pos := int64(img.hdr.l1TableOffset) + keep*8
	if k := img.meta.check(g, pos, (n-keep)*8, metaL1); k != metaNone {
		return img.corruptf(true, pos, (n-keep)*8, "%s", overlapMessage(k))
	}
	if err := img.file.WriteAt(make([]byte, (n-keep)*8), pos, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	table := make([]byte, g.clusterSize)
	for i := keep; i < n; i++ {
		l2 := int64(img.l1[i] & l1eOffsetMask)
		img.l1[i] = 0
		if l2 == 0 {
			continue
		}
		rc, err := img.refcount(l2 >> g.clusterBits)
		if err != nil {
			return err
		}
		if rc == 1 {
			// This image alone used the table: its clusters go with it.
			if err := img.readFileClamped(table, l2); err != nil {
				return err
			}
			for j := int64(0); j < g.l2Entries; j++ {
				e, _ := img.entryAt(table, j)
				if err := img.freeEntry(e, true); err != nil {
					return err
				}
			}
		}
		img.dropL2Slices(l2)
		delete(img.meta.clusters, l2>>g.clusterBits)
		if err := img.freeClusters(l2>>g.clusterBits, 1, true); err != nil {
			return err
		}
	}
	return nil
}

// cutFile truncates the file after the last cluster in use (under mu).
func (img *Image) cutFile() error {
	if err := img.flushAll(); err != nil {
		return err
	}
	g := &img.g
	last := img.allocEnd - 1
	for ; last >= 0; last-- {
		rc, err := img.refcount(last)
		if err != nil {
			return err
		}
		if rc != 0 {
			break
		}
	}
	fsz, err := img.file.Size()
	if err != nil {
		return err
	}
	if newEnd := (last + 1) << g.clusterBits; newEnd < fsz {
		// As QEMU, a file that cannot be cut is not an error.
		if img.file.Truncate(newEnd) == nil {
			img.allocEnd = last + 1
			img.freeHint = min(img.freeHint, img.allocEnd)
		}
	}
	return nil
}

// growLikeQemu reproduces the file length QEMU reaches while shrinking:
// its discard of the cropped range also gives each dropped L1 entry that
// has no L2 table of its own (none, or one shared with a snapshot) a new
// table before the entries are dropped, so the file grows by them before
// it is cut after the last cluster in use. The clusters QEMU would take
// are taken and released again, and the file extended to cover them;
// cutFile then gives the same length as QEMU's.
func (img *Image) growLikeQemu(keep, oldEntries int64) error {
	g := &img.g
	var taken []int64
	for i := keep; i < min(oldEntries, int64(len(img.l1))); i++ {
		e := img.l1[i]
		if e&l1eOffsetMask != 0 && e&oflagCopied != 0 {
			continue
		}
		c, err := img.allocRun(1)
		if err != nil {
			return err
		}
		taken = append(taken, c)
	}
	if len(taken) == 0 {
		return nil
	}
	end := int64(0)
	for _, c := range taken {
		end = max(end, (c+1)<<g.clusterBits)
		if _, err := img.addRefcount(c, -1); err != nil {
			return err
		}
	}
	fsz, err := img.file.Size()
	if err != nil || fsz >= end {
		return err
	}
	return img.file.Truncate(end)
}
