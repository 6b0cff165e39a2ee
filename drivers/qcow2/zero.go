package qcow2

import (
	"blockd/blockio"
)

// WriteZeroes and Discard, after QEMU's qcow2_co_pwrite_zeroes /
// zero_in_l2_slice / zero_l2_subclusters and qcow2_co_pdiscard /
// discard_in_l2_slice.
//
// v3 images use the zero flag (or the extended L2 "reads as zero" bits):
// whole clusters are flagged, releasing their host cluster with MayUnmap
// (compressed clusters always); subcluster-aligned parts of a cluster
// (extended L2) get their zero bits set. Unaligned heads and tails that do
// not already read as zero, compressed clusters zeroed partially, and all
// of v2 (which has no zero flag) fall back to writing zeroes unless
// NoFallback is set. Discard works on whole clusters only (the partial
// cluster at the end of the image counts as whole) and leaves them reading
// as zero on v3; on v2 they become unallocated, and with a backing file
// discard does nothing (it would expose the backing file's data).
//
// Ordering: L2 entries are changed first, then refcounts decremented
// (beforeDecrement), so no on-disk L2 entry can reference a free cluster.

type zeroOp uint8

const (
	opZero zeroOp = iota
	opDiscard
	opEmpty // MakeEmpty: clusters become unallocated, whatever the version
	// opCrop is opEmpty for a shrink (QCOW2_DISCARD_ALWAYS with
	// full_discard): as in QEMU, a range without an L2 table gets one.
	opCrop
)

// WriteZeroes makes guest bytes read as zero.
func (img *Image) WriteZeroes(off, length int64, flags blockio.WriteFlags) error {
	size := img.size.Load()
	if err := blockio.CheckRange(off, length, size); err != nil {
		return err
	}
	if err := img.usable(true); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if img.version.Load() < 3 {
		if flags&blockio.NoFallback != 0 {
			return blockio.ErrNotSupported
		}
		return img.writeZeroBuf(off, length, flags)
	}
	unit := img.g.scSize
	end := off + length
	alignedStart := roundUp(off, unit)
	alignedEnd := end &^ (unit - 1)
	if end == size {
		alignedEnd = roundUp(end, unit)
	}
	if alignedStart >= alignedEnd {
		// Inside one unit and not reaching the image end.
		return img.zeroPartial(off, length, flags)
	}
	if off < alignedStart {
		if err := img.zeroPartial(off, alignedStart-off, flags); err != nil {
			return err
		}
	}
	if alignedEnd < end {
		if err := img.zeroPartial(alignedEnd, end-alignedEnd, flags); err != nil {
			return err
		}
	}
	stop := min(alignedEnd, end)
	return img.zeroRange(alignedStart, stop, opZero, flags)
}

// Discard drops the data of whole clusters in the range.
func (img *Image) Discard(off, length int64) error {
	size := img.size.Load()
	if err := blockio.CheckRange(off, length, size); err != nil {
		return err
	}
	if err := img.usable(true); err != nil {
		return err
	}
	if img.version.Load() < 3 {
		img.mu.Lock()
		hb := img.hasBacking()
		img.mu.Unlock()
		if hb {
			// Without the zero flag, discarding would expose stale
			// backing data: QEMU ignores such discards (-ENOTSUP).
			return nil
		}
	}
	cs := img.g.clusterSize
	start := roundUp(off, cs)
	end := (off + length) &^ (cs - 1)
	if off+length == size {
		end = off + length
	}
	if start >= end {
		return nil
	}
	return img.zeroRange(start, end, opDiscard, 0)
}

// zeroPartial handles a range that does not cover whole units.
func (img *Image) zeroPartial(off, n int64, flags blockio.WriteFlags) error {
	set := img.stripes(off, n)
	img.locks.lock(set, false)
	zero := true
	for pos := off; pos < off+n && zero; {
		img.mu.Lock()
		ext, err := img.mapExtent(pos, off+n-pos)
		img.mu.Unlock()
		if err != nil {
			img.locks.unlock(set, false)
			return err
		}
		switch ext.k {
		case kZero, kZeroAlloc:
		case kUnalloc, kUnallocAlloc:
			zero = img.backing.Load() == nil
		default:
			zero = false
		}
		pos += ext.n
	}
	img.locks.unlock(set, false)
	if zero {
		return nil
	}
	if flags&blockio.NoFallback != 0 {
		return blockio.ErrNotSupported
	}
	return img.writeZeroBuf(off, n, flags)
}

// writeZeroBuf writes zeroes through the normal write path.
func (img *Image) writeZeroBuf(off, n int64, flags blockio.WriteFlags) error {
	zb := img.zeroBuffer()
	for n > 0 {
		m := min(n, int64(len(zb)))
		if err := img.WriteAt(zb[:m], off, flags&blockio.FUA); err != nil {
			return err
		}
		off += m
		n -= m
	}
	return nil
}

// zeroRange applies op to [start, end), which is aligned to subclusters
// (opZero) or clusters (opDiscard), except that end may be the image end.
func (img *Image) zeroRange(start, end int64, op zeroOp, flags blockio.WriteFlags) error {
	for start < end {
		n := img.chunkLen(start, end-start)
		done, err := img.zeroChunk(start, n, op, flags)
		if err != nil {
			return err
		}
		if done < n {
			// A compressed cluster zeroed partially: write zeroes.
			g := &img.g
			m := min(img.g.clusterStart(start+done)+g.clusterSize, end) - (start + done)
			if flags&blockio.NoFallback != 0 {
				return blockio.ErrNotSupported
			}
			if err := img.writeZeroBuf(start+done, m, flags); err != nil {
				return err
			}
			done += m
		}
		start += done
	}
	if flags&blockio.FUA != 0 {
		return img.Flush()
	}
	return nil
}

// zeroChunk processes [off, off+n) inside one L2 slice and returns how far
// it got: it stops before a cluster that needs the write fallback.
func (img *Image) zeroChunk(off, n int64, op zeroOp, flags blockio.WriteFlags) (int64, error) {
	g := &img.g
	set := img.stripes(off, n)
	img.locks.lock(set, true)
	defer img.locks.unlock(set, true)
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(true); err != nil {
		return 0, err
	}
	if err := img.prepareWrite(); err != nil {
		return 0, err
	}
	l1i, _, _ := img.slicePos(off)
	if img.l1[l1i]&l1eOffsetMask == 0 && (op == opEmpty || op == opDiscard && (!img.hasBacking() || img.version.Load() < 3)) {
		return n, nil // unallocated and stays so
	}
	slot, buf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return 0, err
	}
	img.l2c.pin(slot)
	defer img.l2c.unpin(slot)
	unmap := flags&blockio.MayUnmap != 0
	pos := off
	for ; pos < off+n; idx++ {
		cstart := g.clusterStart(pos)
		cend := min(cstart+g.clusterSize, off+n)
		e, bm := img.entryAt(buf, idx)
		if err := img.checkEntry(e, bm, pos); err != nil {
			return pos - off, err
		}
		whole := pos == cstart && (cend == cstart+g.clusterSize || cend == img.size.Load())
		compressed := e&oflagCompressed != 0
		allocated := compressed || e&l2eOffsetMask != 0
		newE, newBM, free := e, bm, false
		switch {
		case op == opEmpty || op == opCrop:
			newE, newBM, free = 0, 0, allocated
		case op == opDiscard:
			if img.hasBacking() || allocated {
				newE, newBM = 0, 0
				if g.extL2 {
					newBM = bitmapAllZero
				} else if img.version.Load() >= 3 {
					newE = oflagZero
				}
			} else {
				newE, newBM = 0, 0
			}
			free = allocated
		case whole:
			free = compressed || unmap && allocated
			if free {
				newE = 0
			}
			if g.extL2 {
				newBM = bitmapAllZero
			} else {
				newE |= oflagZero
			}
		case compressed:
			return pos - off, nil // partial zeroing of a compressed cluster
		default:
			m := g.touchedMask(pos-cstart, cend-cstart)
			newBM = bm&^m | m<<32
		}
		if newE != e || newBM != bm {
			img.setEntry(buf, idx, newE, newBM)
			img.l2c.markDirty(slot)
			if free {
				if err := img.freeEntry(e, true); err != nil {
					return pos - off, err
				}
			}
		}
		pos = cend
	}
	return n, nil
}

func (img *Image) zeroBuffer() []byte {
	img.zeroOnce.Do(func() { img.zeroBuf = make([]byte, img.g.clusterSize) })
	return img.zeroBuf
}
