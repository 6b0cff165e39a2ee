package qcow2

import (
	"encoding/binary"
	"slices"
)

// Metadata switches. An internal snapshot operation changes refcounts and
// the COPIED flags of the active tree, and the two live in different
// clusters: no order of in-place writes keeps them agreeing at every
// instant, and qemu-img check calls any disagreement corruption. So
// create, delete and revert build the new state beside the old one. The
// new active L1 table, each active L2 table whose flags change, the new
// snapshot table and a complete new refcount structure go to fresh
// clusters past the end of the file; a flush; then one write of the
// header's table fields (bytes 36-71: L1 size and offset, refcount table
// offset and size, snapshot count and offset) makes them current, and a
// flush. Before that write the old metadata is in force and nothing it
// references was written (the fresh clusters are free in it); after it the
// new metadata is, complete. A kill or a power loss at any point leaves
// one or the other, and the old structures become free clusters.

// metaSwitch collects the new state: the refcounts of every cluster and
// the fresh clusters' contents.
type metaSwitch struct {
	img    *Image
	r      *refCounter
	res    CheckResult // absorbs refCounter reports; errors are returned instead
	fresh  int64       // next cluster for new metadata
	writes []switchWrite
}

// switchWrite is one write made before the header switch: data, or
// zeroes bytes of zeroes when data is nil (clusters that must read as
// zeroes need no buffer of their own).
type switchWrite struct {
	off    int64
	data   []byte
	zeroes int64
}

// beginSwitch flushes the caches and loads every refcount the file
// holds, minus the references of the current refcount structure, which
// the switch replaces.
func (img *Image) beginSwitch() (*metaSwitch, error) {
	if err := img.flushAll(); err != nil {
		return nil, err
	}
	g := &img.g
	fsz, err := img.file.Size()
	if err != nil {
		return nil, err
	}
	// Counts stored at or past allocEnd are stale (see alloc.go): they
	// are not carried over.
	e := max(img.allocEnd, g.clustersFor(fsz))
	sw := &metaSwitch{img: img, fresh: e}
	sw.r = newRefCounter(e, g, &sw.res)
	block := make([]byte, g.clusterSize)
	for rti, ent := range img.reftable {
		off, first := int64(ent&reftOffsetMask), int64(rti)<<g.refblockBits
		if off == 0 || first >= e {
			continue
		}
		if g.inCluster(off) != 0 || off >= fsz {
			return nil, img.corruptf(true, off, g.clusterSize,
				"Refblock offset %#x invalid (reftable index %#x)", off, rti)
		}
		if err := img.readFileClamped(block, off); err != nil {
			return nil, err
		}
		for i := int64(0); i < g.refblockEntries && first+i < e; i++ {
			if v := getRefcount(block, i, g.refcountOrder); v != 0 {
				sw.r.add(first+i, v)
			}
		}
	}
	if err := sw.refs(int64(img.hdr.refcountTableOffset), int64(img.hdr.refcountTableClusters)<<g.clusterBits, -1); err != nil {
		return nil, err
	}
	for _, ent := range img.reftable {
		if off := int64(ent & reftOffsetMask); off != 0 {
			if err := sw.refs(off, g.clusterSize, -1); err != nil {
				return nil, err
			}
		}
	}
	return sw, nil
}

// refs adds sign (+1 or -1) to the refcount of every cluster of the host
// range [off, off+size).
func (sw *metaSwitch) refs(off, size int64, sign int) error {
	if sign > 0 {
		sw.r.incN(off, size, 1)
	} else {
		sw.r.decN(off, size, 1)
	}
	return sw.corruption()
}

// corruption turns what the counting found wrong into an error that marks
// the image corrupt: a switch must not build on metadata that disagrees
// with its refcounts.
func (sw *metaSwitch) corruption() error {
	if sw.res.Corruptions == 0 {
		return nil
	}
	return sw.img.corruptf(true, -1, -1, "%s", sw.res.Messages[0])
}

// alloc places n clusters of new metadata holding data (zero padded).
func (sw *metaSwitch) alloc(data []byte) int64 {
	g := &sw.img.g
	n := g.clustersFor(int64(len(data)))
	c := sw.fresh
	sw.fresh += n
	sw.r.grow(sw.fresh)
	for i := c; i < sw.fresh; i++ {
		sw.r.add(i, 1)
	}
	buf := make([]byte, n<<g.clusterBits)
	copy(buf, data)
	sw.writes = append(sw.writes, switchWrite{off: c << g.clusterBits, data: buf})
	return c << g.clusterBits
}

// allocZeroes places one fresh cluster that reads as zeroes.
func (sw *metaSwitch) allocZeroes() int64 {
	g := &sw.img.g
	c := sw.fresh
	sw.fresh++
	sw.r.grow(sw.fresh)
	sw.r.add(c, 1)
	sw.zeroes(c<<g.clusterBits, g.clusterSize)
	return c << g.clusterBits
}

// zeroes queues a zero write, merged with the previous one when it
// continues it (fresh zero clusters come in runs).
func (sw *metaSwitch) zeroes(off, n int64) {
	if k := len(sw.writes) - 1; k >= 0 && sw.writes[k].data == nil && sw.writes[k].off+sw.writes[k].zeroes == off {
		sw.writes[k].zeroes += n
		return
	}
	sw.writes = append(sw.writes, switchWrite{off: off, zeroes: n})
}

// walk adds sign to the references of one use of the tree under l1: each
// L2 table once, and every cluster its entries reference (counted per
// use, as qemu-img check counts them).
func (sw *metaSwitch) walk(l1 []uint64, sign int) error {
	count := sw.r.incN
	if sign < 0 {
		count = sw.r.decN
	}
	if err := sw.img.walkL1(sw.r, l1, false, count); err != nil {
		return err
	}
	if sw.r.ioErr != nil {
		return sw.r.ioErr
	}
	return sw.corruption()
}

// activeTree returns the new active L1 table for the tree under l1 (whose
// use walk has counted), written to a fresh cluster, with COPIED set
// exactly where the new refcount is 1. An L2 table whose entries' flags
// change is copied to a fresh cluster with them changed: the old one may
// be part of the metadata in force until the switch. Call it once every
// other reference has been counted.
func (sw *metaSwitch) activeTree(l1 []uint64) (newL1 []uint64, off int64, err error) {
	img, g := sw.img, &sw.img.g
	newL1 = make([]uint64, len(l1))
	table := make([]byte, g.clusterSize)
	for i, e := range l1 {
		l2 := int64(e & l1eOffsetMask)
		if l2 == 0 {
			continue
		}
		if err := img.readFileClamped(table, l2); err != nil {
			return nil, 0, err
		}
		changed := false
		for j := int64(0); j < g.l2Entries; j++ {
			le, bm := img.entryAt(table, j)
			host := int64(le & l2eOffsetMask)
			if le&oflagCompressed != 0 || host == 0 {
				continue
			}
			want := le &^ oflagCopied
			if sw.r.get(host>>g.clusterBits) == 1 {
				want |= oflagCopied
			}
			if want != le {
				img.setEntry(table, j, want, bm)
				changed = true
			}
		}
		if changed {
			if err := sw.refs(l2, g.clusterSize, -1); err != nil {
				return nil, 0, err
			}
			l2 = sw.alloc(table)
		}
		newL1[i] = uint64(l2)
		if sw.r.get(l2>>g.clusterBits) == 1 {
			newL1[i] |= oflagCopied
		}
	}
	if len(newL1) == 0 {
		return nil, int64(img.hdr.l1TableOffset), nil
	}
	{
		buf := make([]byte, len(newL1)*8)
		for i, e := range newL1 {
			binary.BigEndian.PutUint64(buf[i*8:], e)
		}
		off = sw.alloc(buf)
	}
	return newL1, off, nil
}

// commit writes the new state, switches the header to it and makes the
// Image follow: active L1 table l1 at l1Off, snapshot list snaps (whose
// table replaces the current one).
func (sw *metaSwitch) commit(l1 []uint64, l1Off int64, snaps []snapshot) error {
	return sw.commitHeader(l1, l1Off, snaps, nil)
}

// commitHeader is commit with a new header: when nh is not nil, the
// switching write is the whole first cluster serialized from nh (with
// the new table fields), so a version change happens in the same write
// as the switch to the metadata written for it.
func (sw *metaSwitch) commitHeader(l1 []uint64, l1Off int64, snaps []snapshot, nh *header) error {
	img, g := sw.img, &sw.img.g
	tbl, err := encodeSnapshots(snaps)
	if err != nil {
		return err
	}
	if nh != nil {
		// Refuse a header that does not fit before anything is written.
		trial := *nh
		trial.nbSnapshots = uint32(len(snaps))
		if _, err := trial.serialize(); err != nil {
			return err
		}
	}
	if old := img.snapTableRange(); old.end > old.start {
		if err := sw.refs(old.start, old.end-old.start, -1); err != nil {
			return err
		}
	}
	var snapOff int64
	if len(tbl) > 0 {
		snapOff = sw.alloc(tbl)
	}
	l, err := img.writeRefcountStructure(sw.r, true)
	if err != nil {
		return err
	}
	for _, w := range sw.writes {
		if w.data == nil {
			err = img.file.WriteZeroes(w.off, w.zeroes, 0)
		} else {
			err = img.file.WriteAt(w.data, w.off, 0)
		}
		if err != nil {
			return err
		}
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	if nh == nil {
		var hb [36]byte
		be := binary.BigEndian
		be.PutUint32(hb[0:], uint32(len(l1)))
		be.PutUint64(hb[4:], uint64(l1Off))
		be.PutUint64(hb[12:], uint64(l.tableOffset(g)))
		be.PutUint32(hb[20:], uint32(l.nT))
		be.PutUint32(hb[24:], uint32(len(snaps)))
		be.PutUint64(hb[28:], uint64(snapOff))
		err = img.file.WriteAt(hb[:], 36, 0)
	} else {
		nh.l1Size, nh.l1TableOffset = uint32(len(l1)), uint64(l1Off)
		nh.refcountTableOffset, nh.refcountTableClusters = uint64(l.tableOffset(g)), uint32(l.nT)
		nh.nbSnapshots, nh.snapshotsOffset = uint32(len(snaps)), uint64(snapOff)
		var buf []byte
		if buf, err = nh.serialize(); err == nil {
			err = img.file.WriteAt(buf, 0, 0)
		}
	}
	if err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	if nh != nil {
		img.hdr = *nh
	}
	h := &img.hdr
	h.l1Size, h.l1TableOffset = uint32(len(l1)), uint64(l1Off)
	h.nbSnapshots, h.snapshotsOffset = uint32(len(snaps)), uint64(snapOff)
	img.l1, img.snaps = l1, slices.Clone(snaps)
	img.l2c.dropAll()
	img.adoptRefcounts(l)
	img.meta = newOverlapSet()
	img.fillOverlap(l.end()<<g.clusterBits, snapOff+int64(len(tbl)))
	return nil
}

// snapTableRange is the cluster-rounded range of the current snapshot
// table (from the overlap set).
func (img *Image) snapTableRange() metaRange {
	for _, r := range img.meta.ranges {
		if r.kind == metaSnapTable {
			return r
		}
	}
	return metaRange{}
}
