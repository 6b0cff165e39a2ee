package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
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
				r.sub(c, 1)
			}
		}
	}
	uncount(int64(img.hdr.refcountTableOffset), int64(img.hdr.refcountTableClusters))
	for _, e := range img.reftable {
		if off := int64(e & reftOffsetMask); off != 0 && g.inCluster(off) == 0 && off>>g.clusterBits < r.nb {
			uncount(off, 1)
		}
	}
	l, err := img.writeRefcountStructure(r, false)
	if err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	var hb [12]byte
	binary.BigEndian.PutUint64(hb[0:], uint64(l.tableOffset(g)))
	binary.BigEndian.PutUint32(hb[8:], uint32(l.nT))
	if err := img.file.WriteAt(hb[:], 48, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.adoptRefcounts(l)
	return nil
}

// refLayout is a complete refcount structure written past the end of the
// file: nRB refcount blocks from cluster e on, then the nT clusters of
// the refcount table.
type refLayout struct {
	e, nRB, nT int64
	table      []uint64
}

func (l refLayout) tableOffset(g *geometry) int64 { return (l.e + l.nRB) << g.clusterBits }
func (l refLayout) end() int64                    { return l.e + l.nRB + l.nT }

// writeRefcountStructure writes refcount blocks and a table holding r's
// counts, plus one for each of their own clusters, from cluster r.nb on.
// A count above the refcount width is clamped and reported in r.res, or,
// with strict, refused before anything is written.
func (img *Image) writeRefcountStructure(r *refCounter, strict bool) (refLayout, error) {
	g := &img.g
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
		return refLayout{}, errors.New("qcow2: cannot rebuild refcounts: refcount table would be too large")
	}
	if strict {
		for c := int64(0); c < e; c++ {
			if r.get(c) > g.refcountMax {
				return refLayout{}, fmt.Errorf("qcow2: refcount overflow for cluster %#x (refcount bits %d)",
					c<<g.clusterBits, g.refcountBits)
			}
		}
	}
	l := refLayout{e: e, nRB: nRB, nT: nT, table: make([]uint64, nT*g.clusterSize/8)}
	block := make([]byte, g.clusterSize)
	raw := make([]byte, nT*g.clusterSize)
	for j := int64(0); j < nRB; j++ {
		clear(block)
		for i := int64(0); i < g.refblockEntries; i++ {
			c := j<<g.refblockBits + i
			v := r.get(c)
			if c >= e && c < l.end() {
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
			return refLayout{}, err
		}
		l.table[j] = uint64((e + j) << g.clusterBits)
		binary.BigEndian.PutUint64(raw[j*8:], l.table[j])
	}
	return l, img.file.WriteAt(raw, l.tableOffset(g), 0)
}

// adoptRefcounts makes the in-memory state follow a refcount structure
// the header now names.
func (img *Image) adoptRefcounts(l refLayout) {
	g := &img.g
	img.rc.dropAll()
	for c, k := range img.meta.clusters {
		if k == metaRefblock {
			delete(img.meta.clusters, c)
		}
	}
	for j := int64(0); j < l.nRB; j++ {
		img.meta.clusters[l.e+j] = metaRefblock
	}
	tOff := l.tableOffset(g)
	img.reftable = l.table
	img.hdr.refcountTableOffset, img.hdr.refcountTableClusters = uint64(tOff), uint32(l.nT)
	img.meta.setRange(metaReftable, tOff, tOff+l.nT*g.clusterSize)
	img.freeHint, img.freeBytes = 0, 0
	img.allocEnd = max(img.allocEnd, l.end())
	img.l2DependsRef, img.refDependsL2 = false, false
	img.comp.invalidate()
}
