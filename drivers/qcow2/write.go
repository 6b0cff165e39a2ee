package qcow2

import (
	"blockd/blockio"
)

// Guest writes. A request is split at L2 slice boundaries; each piece
// locks its guest clusters exclusively, then is handled in steps, each
// covering a run of clusters that need the same treatment:
//
//   - in place: clusters owned by this image (COPIED) whose touched
//     subclusters hold data. One file write per host-contiguous run, no
//     metadata change.
//   - allocate, whole clusters: clusters fully overwritten that need a new
//     host cluster (unallocated, zero, compressed, shared). A contiguous
//     host run is allocated, the data written in one go, then the L2
//     entries are pointed at it and the old clusters released.
//   - slow path, one cluster: partial writes needing copy-on-write, zero
//     clusters with a preallocated host cluster, subcluster allocation.
//     The untouched part of the written region is filled from the old
//     content (backing, zeroes, decompressed or shared data) in a scratch
//     cluster buffer so the file sees one write.
//
// Ordering (crash safety): clusters are allocated (refcount 1) under mu;
// the data is written with mu released; only then are the L2 entries
// changed (beforeLink records that the data and the refcounts must be
// stable before that L2 slice is written back), and only after that are
// old clusters released (beforeDecrement). A crash in between leaks the
// new clusters at worst.

type action uint8

const (
	actInPlace     action = iota // write into the owned host cluster, no metadata change
	actInPlaceMeta               // write into the owned host cluster, then update the entry
	actAlloc                     // new host cluster needed (copy-on-write)
)

// WriteAt writes guest bytes. FUA is honoured by a Flush after the write.
func (img *Image) WriteAt(p []byte, off int64, flags blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, int64(len(p)), img.size.Load()); err != nil {
		return err
	}
	if err := img.usable(true); err != nil {
		return err
	}
	if flags&blockio.Compressed != 0 {
		if err := img.writeCompressed(p, off); err != nil {
			return err
		}
		p = nil
	}
	for len(p) > 0 {
		n := img.chunkLen(off, int64(len(p)))
		if err := img.writeChunk(p[:n], off); err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	if flags&blockio.FUA != 0 {
		return img.Flush()
	}
	return nil
}

func (img *Image) writeChunk(p []byte, off int64) error {
	set := img.stripes(off, int64(len(p)))
	img.locks.lock(set, true)
	defer img.locks.unlock(set, true)
	for len(p) > 0 {
		n, err := img.writeStep(p, off)
		if err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

// touchedMask returns the extended L2 subclusters overlapping bytes
// [ws, we) of a cluster.
func (g *geometry) touchedMask(ws, we int64) uint64 {
	first, last := uint(ws>>g.scBits), uint((we-1)>>g.scBits)
	return (uint64(1)<<(last+1) - 1) &^ (uint64(1)<<first - 1)
}

// clusterAction decides how a write of bytes [ws, we) of a cluster with
// entry e (bitmap bm) is done.
func (img *Image) clusterAction(e, bm uint64, ws, we int64) action {
	g := &img.g
	if e&oflagCompressed != 0 || e&oflagCopied == 0 || e&l2eOffsetMask == 0 {
		return actAlloc
	}
	if !g.extL2 {
		if e&oflagZero != 0 {
			return actInPlaceMeta
		}
		return actInPlace
	}
	m := g.touchedMask(ws, we)
	if bm&m == m && (bm>>32)&m == 0 {
		return actInPlace
	}
	return actInPlaceMeta
}

// writeStep writes the first run of p (at guest offset off) and returns
// its length. Guest clusters are locked by the caller.
func (img *Image) writeStep(p []byte, off int64) (int64, error) {
	g := &img.g
	img.mu.Lock()
	locked := true
	defer func() {
		if locked {
			img.mu.Unlock()
		}
	}()
	if err := img.usable(true); err != nil {
		return 0, err
	}
	if err := img.prepareWrite(); err != nil {
		return 0, err
	}
	_, buf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return 0, err
	}
	end := off + int64(len(p))
	cstart := g.clusterStart(off)
	wEnd := min(end, cstart+g.clusterSize)
	e, bm := img.entryAt(buf, idx)
	if bad := img.checkEntry(e, bm, off); bad != nil {
		return 0, bad
	}
	act := img.clusterAction(e, bm, off-cstart, wEnd-cstart)
	full := off == cstart && wEnd == cstart+g.clusterSize

	switch {
	case act == actInPlace:
		host := int64(e&l2eOffsetMask) + off - cstart
		n := wEnd - off
		for i := int64(1); idx+i < img.sliceEntries && off+n < end; i++ {
			c := cstart + i<<g.clusterBits
			ce := min(end, c+g.clusterSize)
			e2, bm2 := img.entryAt(buf, idx+i)
			if img.checkEntry(e2, bm2, c) != nil ||
				img.clusterAction(e2, bm2, 0, ce-c) != actInPlace ||
				int64(e2&l2eOffsetMask) != int64(e&l2eOffsetMask)+i<<g.clusterBits {
				break
			}
			n = ce - off
		}
		if err := img.checkOverlap(host, n); err != nil {
			return 0, err
		}
		img.mu.Unlock()
		locked = false
		return n, img.file.WriteAt(p[:n], host, 0)

	case act == actAlloc && full:
		k := int64(1)
		for idx+k < img.sliceEntries && off+(k+1)<<g.clusterBits <= end {
			e2, bm2 := img.entryAt(buf, idx+k)
			if img.checkEntry(e2, bm2, off+k<<g.clusterBits) != nil ||
				img.clusterAction(e2, bm2, 0, g.clusterSize) != actAlloc {
				break
			}
			k++
		}
		c, err := img.allocRun(k)
		if err != nil {
			return 0, err
		}
		n := k << g.clusterBits
		host := c << g.clusterBits
		if err := img.checkOverlap(host, n); err != nil {
			return 0, err
		}
		img.mu.Unlock()
		werr := img.file.WriteAt(p[:n], host, 0)
		img.mu.Lock()
		if werr != nil {
			_ = img.freeClusters(c, k, false)
			return 0, werr
		}
		return n, img.linkRun(off, k, c)
	}
	locked = false
	return img.writeSlow(p[:wEnd-off], off, e, bm, act)
}

// checkEntry validates an L2 entry before a write relies on it.
func (img *Image) checkEntry(e, bm uint64, off int64) error {
	g := &img.g
	if e&oflagCompressed != 0 {
		return nil
	}
	if g.extL2 && g.classify(e, bm, 0) == kInvalid {
		return img.corruptf(true, -1, -1, "Invalid cluster entry found  (guest offset: %#x)", g.clusterStart(off))
	}
	if h := int64(e & l2eOffsetMask); h != 0 && g.inCluster(h) != 0 {
		return img.corruptf(true, -1, -1, "Cluster allocation offset %#x unaligned (guest offset: %#x)",
			h, g.clusterStart(off))
	} else if h>>g.clusterBits >= img.allocEnd {
		return img.corruptf(true, -1, -1, "Cluster allocation offset %#x beyond the end of the image file (guest offset: %#x)",
			h, g.clusterStart(off))
	}
	return nil
}

// checkOverlap refuses a data write that would land on metadata.
func (img *Image) checkOverlap(host, n int64) error {
	if k := img.meta.check(&img.g, host, n, metaNone); k != metaNone {
		return img.corruptf(true, host, n, "%s", overlapMessage(k))
	}
	return nil
}

// linkRun points the L2 entries of k whole clusters from guest offset off
// at the freshly written host clusters c.. and releases the old ones.
func (img *Image) linkRun(off, k, c int64) error {
	g := &img.g
	slot, buf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return err
	}
	if err := img.beforeLink(); err != nil {
		return err
	}
	nb := uint64(0)
	if g.extL2 {
		nb = bitmapAllAlloc
	}
	img.l2c.pin(slot)
	defer img.l2c.unpin(slot)
	for i := int64(0); i < k; i++ {
		old, _ := img.entryAt(buf, idx+i)
		img.setEntry(buf, idx+i, uint64((c+i)<<g.clusterBits)|oflagCopied, nb)
		img.l2c.markDirty(slot)
		if err := img.freeEntry(old, false); err != nil {
			return err
		}
	}
	return nil
}

// writeSlow writes p, which lies inside one cluster, with copy-on-write.
// Called with mu held; returns with it released.
func (img *Image) writeSlow(p []byte, off int64, e, bm uint64, act action) (int64, error) {
	g := &img.g
	cstart := g.clusterStart(off)
	ws, we := off-cstart, off-cstart+int64(len(p))
	shared := e&oflagCompressed != 0 || e&oflagCopied == 0 && e&l2eOffsetMask != 0
	rs, re := int64(0), g.clusterSize
	if g.extL2 && !shared {
		// Only the touched subclusters are written; the others keep
		// their state (and their data, for in-place writes).
		rs, re = ws&^(g.scSize-1), roundUp(we, g.scSize)
	}
	var host int64
	if act == actAlloc {
		c, err := img.allocRun(1)
		if err != nil {
			img.mu.Unlock()
			return 0, err
		}
		host = c << g.clusterBits
	} else {
		host = int64(e & l2eOffsetMask)
	}
	if err := img.checkOverlap(host+rs, re-rs); err != nil {
		img.mu.Unlock()
		return 0, err
	}
	img.mu.Unlock()

	b := img.getBuf()
	buf := *b
	var err error
	if rs < ws || we < re {
		// The head and tail are read for the copy-on-write (QEMU's
		// do_perform_cow_read); they are written with the data, as
		// QEMU merges them, so there is no cow_write.
		img.event("cow_read")
	}
	if rs < ws {
		err = img.materialize(buf[rs:ws], cstart+rs, e, bm)
	}
	if err == nil && we < re {
		err = img.materialize(buf[we:re], cstart+we, e, bm)
	}
	if err == nil {
		copy(buf[ws:we], p)
		err = img.file.WriteAt(buf[rs:re], host+rs, 0)
	}
	img.putBuf(b)

	img.mu.Lock()
	defer img.mu.Unlock()
	if err != nil {
		if act == actAlloc {
			_ = img.freeClusters(host>>g.clusterBits, 1, false)
		}
		return 0, err
	}
	newE, newBM := uint64(host)|oflagCopied, uint64(0)
	if g.extL2 {
		if e&oflagCompressed != 0 {
			newBM = bitmapAllAlloc
		} else {
			m := g.touchedMask(ws, we)
			newBM = (bm&bitmapAllAlloc | m) | ((bm>>32)&^m)<<32
		}
	}
	slot, lbuf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return 0, err
	}
	if act == actAlloc {
		if err := img.beforeLink(); err != nil {
			return 0, err
		}
	} else {
		// In place, but the entry now exposes the written data (zero
		// flag cleared, subclusters allocated): data first.
		img.needDataFlush = true
	}
	img.setEntry(lbuf, idx, newE, newBM)
	img.l2c.markDirty(slot)
	if act == actAlloc {
		if err := img.freeEntry(e, false); err != nil {
			return 0, err
		}
	}
	return int64(len(p)), nil
}

// materialize fills dst with the current guest content at guest offset
// goff (inside one cluster with entry e, bitmap bm). Called without mu:
// the caller holds the cluster lock, so e is still current.
func (img *Image) materialize(dst []byte, goff int64, e, bm uint64) error {
	g := &img.g
	cstart := g.clusterStart(goff)
	if e&oflagCompressed != 0 {
		return img.readCompressed(dst, e, goff-cstart)
	}
	for len(dst) > 0 {
		k := g.classify(e, bm, uint((goff-cstart)>>g.scBits))
		n := g.scSize - (goff-cstart)&(g.scSize-1)
		for n < int64(len(dst)) && g.classify(e, bm, uint((goff+n-cstart)>>g.scBits)) == k {
			n += g.scSize
		}
		n = min(n, int64(len(dst)))
		var err error
		switch k {
		case kNormal:
			err = img.readFileClamped(dst[:n], int64(e&l2eOffsetMask)+goff-cstart)
		case kZero, kZeroAlloc:
			clear(dst[:n])
		default:
			err = img.readBacking(dst[:n], goff)
		}
		if err != nil {
			return err
		}
		dst = dst[n:]
		goff += n
	}
	return nil
}
