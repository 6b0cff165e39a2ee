package qcow2

import (
	"encoding/binary"
	"errors"
)

// Refcount repair. Called by Check(true) with every guest cluster locked
// and the caches flushed, so the file holds the current metadata.

func (img *Image) repair(res *CheckResult, r *refCounter) error {
	var err error
	switch {
	case r.rebuild:
		err = img.rebuildRefcounts(r)
	case res.Leaks > 0:
		err = img.fixLeaks(r)
	}
	if err != nil {
		return err
	}
	if err := img.flushAll(); err != nil {
		return err
	}
	var scratch CheckResult
	if err := img.checkCopied(&scratch, true); err != nil {
		return err
	}
	return img.flushAll()
}

// fixLeaks lowers refcounts that exceed the references to the reference
// count. The metadata on disk no longer references the extra counts, so
// no write ordering is involved.
func (img *Image) fixLeaks(r *refCounter) error {
	g := &img.g
	fsz := r.nb << g.clusterBits
	for c := int64(0); c < r.nb; c++ {
		rc, err := img.diskRefcount(c, fsz)
		if err != nil {
			return err
		}
		ref := r.get(c)
		if rc <= ref {
			continue
		}
		if err := img.setClusterRefcount(c, ref); err != nil {
			return err
		}
	}
	img.freeHint, img.freeBytes = 0, 0
	img.comp.invalidate()
	return nil
}

// rebuildRefcounts writes a complete new refcount structure describing
// the counted references (QEMU's rebuild_refcount_structure) past the end
// of the file, then switches the header to it. The old table and blocks
// become unreferenced; a crash before the switch leaves the old structure
// in force.
func (img *Image) rebuildRefcounts(r *refCounter) error {
	g := &img.g
	// The old structure is being replaced: its clusters lose their
	// references.
	uncount := func(off, n int64) {
		for c := off >> g.clusterBits; c < (off>>g.clusterBits)+n && c < r.nb; c++ {
			if v := r.get(c); v > 0 {
				if v >= 0xffff {
					r.big[c] = v - 1
				} else {
					r.n[c] = uint16(v - 1)
				}
			}
		}
	}
	uncount(int64(img.hdr.refcountTableOffset), int64(img.hdr.refcountTableClusters))
	for _, e := range img.reftable {
		if off := int64(e & reftOffsetMask); off != 0 && g.inCluster(off) == 0 && off>>g.clusterBits < r.nb {
			uncount(off, 1)
		}
	}
	e := r.nb
	var nRB, nT int64 = 1, 0
	for {
		nT = g.clustersFor(nRB * 8)
		need := (e + nRB + nT + g.refblockEntries - 1) / g.refblockEntries
		if need > nRB {
			nRB = need
			continue
		}
		break
	}
	if nT*g.clusterSize > maxReftableBytes {
		return errors.New("qcow2: cannot rebuild refcounts: refcount table would be too large")
	}
	block := make([]byte, g.clusterSize)
	table := make([]byte, nT*g.clusterSize)
	for j := int64(0); j < nRB; j++ {
		clear(block)
		for i := int64(0); i < g.refblockEntries; i++ {
			c := j<<g.refblockBits + i
			v := r.get(c)
			if c >= e && c < e+nRB+nT {
				v++
			}
			if v > g.refcountMax {
				r.res.CheckErrors++
				r.res.msg("ERROR: overflow cluster offset=%#x", c<<g.clusterBits)
				v = g.refcountMax
			}
			if v != 0 {
				setRefcount(block, i, g.refcountOrder, v)
			}
		}
		if err := img.file.WriteAt(block, (e+j)<<g.clusterBits, 0); err != nil {
			return err
		}
		binary.BigEndian.PutUint64(table[j*8:], uint64((e+j)<<g.clusterBits))
	}
	tOff := (e + nRB) << g.clusterBits
	if err := img.file.WriteAt(table, tOff, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(tOff))
	binary.BigEndian.PutUint32(hb[8:], uint32(nT))
	if err := img.file.WriteAt(hb[:], 48, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.rc.dropAll()
	for c, k := range img.meta.clusters {
		if k == metaRefblock {
			delete(img.meta.clusters, c)
		}
	}
	newTable := make([]uint64, nT*g.clusterSize/8)
	for j := int64(0); j < nRB; j++ {
		newTable[j] = uint64((e + j) << g.clusterBits)
		img.meta.clusters[e+j] = metaRefblock
	}
	img.reftable = newTable
	img.hdr.refcountTableOffset, img.hdr.refcountTableClusters = uint64(tOff), uint32(nT)
	img.meta.setRange(metaReftable, tOff, tOff+nT*g.clusterSize)
	img.freeHint, img.freeBytes = 0, 0
	img.allocEnd = max(img.allocEnd, e+nRB+nT)
	img.l2DependsRef, img.refDependsL2 = false, false
	img.comp.invalidate()
	return nil
}
