package qcow2

import (
	"errors"
	"fmt"
	"math/bits"

	"blockd/blockio"
)

// Whole-image operations: Flush, Close, Truncate, SetBackingFile.

// Flush writes back the cached metadata (in dependency order) and flushes
// the file: every write that completed before the call is then stable.
func (img *Image) Flush() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(false); err != nil {
		return err
	}
	if img.readOnly {
		return nil
	}
	return img.flushAll()
}

func (img *Image) flushAll() error {
	if err := img.flushCaches(); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.needDataFlush, img.l2DependsRef, img.refDependsL2 = false, false, false
	return nil
}

// Close flushes the caches and clears the dirty bit lazy refcounts set.
// The file is left open. Further calls fail.
func (img *Image) Close() error {
	defer img.lockExclusive()()
	if img.closed.Load() {
		return nil
	}
	var err error
	if !img.readOnly {
		// Even after a fatal corruption the cached metadata is consistent
		// (the overlap checks refuse bad write-backs), so it is written
		// rather than leaked, as QEMU does on close.
		err = img.flushAll()
		if err == nil && img.hdr.incompat&incompatDirty != 0 {
			err = img.writeIncompat(img.hdr.incompat &^ incompatDirty)
		}
	}
	img.closed.Store(true)
	img.l2c.dropAll()
	img.rc.dropAll()
	return err
}

// Truncate resizes the virtual disk (block_resize, qemu-img resize).
// Growing: the new area reads as zeroes even when the backing file is
// longer than the old size (QEMU zero-fills it too). Shrinking: see
// shrink in resize.go.
func (img *Image) Truncate(size int64) error {
	if size < 0 {
		return blockio.ErrOutOfRange
	}
	if size%512 != 0 {
		return errors.New("The new size must be a multiple of 512")
	}
	if size < img.size.Load() {
		return img.shrink(size)
	}
	old, err := img.grow(size)
	if err != nil || size <= old {
		return err
	}
	// Bytes of the old last cluster past the old end, and the range the
	// backing file would otherwise show, must read as zeroes.
	zeroEnd := roundUp(old, img.g.clusterSize)
	if br := img.backing.Load(); br != nil {
		if bsz, err := br.dev.Size(); err == nil && bsz > zeroEnd {
			zeroEnd = bsz
		}
	}
	if zeroEnd > size {
		zeroEnd = size
	}
	if zeroEnd > old {
		return img.WriteZeroes(old, zeroEnd-old, 0)
	}
	return nil
}

func (img *Image) grow(size int64) (int64, error) {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return 0, err
	}
	old := img.size.Load()
	if size == old {
		return old, nil
	}
	if size < old {
		return old, errors.New("qcow2: the image shrank during a resize")
	}
	if err := img.resizable(); err != nil {
		return old, err
	}
	n := img.g.l1EntriesFor(size)
	if n > maxL1Bytes/8 {
		return old, errors.New("Failed to grow the L1 table: File too large")
	}
	if n > int64(len(img.l1)) {
		if err := img.growL1(n); err != nil {
			return old, err
		}
	}
	return old, img.writeSize(size)
}

// SetBackingFile rewrites the backing file name and the backing format
// extension (qemu-img rebase -u). An empty name removes the backing file.
// All other extensions and unknown header fields are kept byte for byte;
// the header is only rewritten after the rest of the metadata is flushed,
// and the in-memory state changes only once the write succeeded.
func (img *Image) SetBackingFile(name, format string) error {
	if len(name) > maxBackingName {
		return errors.New("Backing file name too long")
	}
	if name == "" {
		format = ""
	}
	if len(format) > maxBackingFmt {
		return fmt.Errorf("Backing format name too long (max %d bytes)", maxBackingFmt)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(true); err != nil {
		return err
	}
	h := img.hdr
	h.backingFile, h.backingFormat = name, format
	return img.writeHeader(&h)
}

// AmendLazyRefcounts sets or clears the header's lazy refcounts feature
// (qemu-img amend -o lazy_refcounts, after qcow2_amend_options): turning
// it off first writes everything back and clears the dirty bit
// (qcow2_mark_clean), so the header never claims exact refcounts that
// are not on disk. The image uses the new setting from then on.
func (img *Image) AmendLazyRefcounts(on bool) error {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return err
	}
	if on && img.hdr.version < 3 {
		return errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
	}
	if img.lazy == on && (img.hdr.compat&compatLazyRefcounts != 0) == on {
		return nil
	}
	if !on {
		if err := img.markCleanLocked(); err != nil {
			return err
		}
	}
	h := img.hdr
	if on {
		h.compat |= compatLazyRefcounts
	} else {
		h.compat &^= compatLazyRefcounts
	}
	if err := img.writeHeader(&h); err != nil {
		return err
	}
	img.lazy = on
	return nil
}

// AmendRefcountBits changes the refcount width (qemu-img amend -o
// refcount_bits, qcow2_change_refcount_order). The new refcount
// structure is written in fresh clusters past the end of the file, then
// one header write names it with the new width: a crash leaves either
// width complete, the other structure leaked at most.
func (img *Image) AmendRefcountBits(width int) error {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return err
	}
	order := uint(bits.TrailingZeros(uint(width)))
	if order == img.g.refcountOrder {
		return nil
	}
	if img.hdr.version < 3 {
		return errors.New("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	sw, err := img.beginSwitch()
	if err != nil {
		return err
	}
	newG := newGeometry(img.g.clusterBits, order, img.g.extL2)
	for c := int64(0); c < sw.r.nb; c++ {
		if v := sw.r.get(c); v > newG.refcountMax {
			return fmt.Errorf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d",
				width, c<<img.g.clusterBits, v)
		}
	}
	oldG := img.g
	img.g = newG
	l, err := img.writeRefcountStructure(sw.r, false) // every count fits: checked above
	if err == nil {
		h := img.hdr
		h.refcountOrder = uint32(order)
		h.refcountTableOffset, h.refcountTableClusters = uint64(l.tableOffset(&img.g)), uint32(l.nT)
		err = img.writeHeader(&h)
	}
	if err != nil {
		img.g = oldG
		return err
	}
	img.adoptRefcounts(l)
	return nil
}
