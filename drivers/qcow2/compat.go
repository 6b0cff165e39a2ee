package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Compat amend: qemu-img amend -o compat=1.1 (qcow2_upgrade) and
// -o compat=0.10 (qcow2_downgrade).
//
// Write order. An upgrade is one header write, or, when a snapshot's
// extra data is too short for v3, a metadata switch (metaswitch.go) whose
// switching write is the new v3 header. A downgrade that has zero
// clusters to remove or bitmaps to drop is a metadata switch too: every
// L2 table holding a zero entry is copied to a fresh cluster with the
// entry made v2-valid, new zeroed data clusters and the new L1 tables,
// snapshot table and refcount structure go past the end of the file, and
// one write of the first cluster, between two flushes, replaces the v3
// header by the v2 one naming them. Until that write the v3 image is in
// force and unchanged as the guest sees it: the only writes inside it
// zero preallocated zero clusters, which read as zeroes either way and
// which no other entry references. After it the v2 image is complete. A
// kill or power loss leaves one or the other, plus leaked clusters at
// most. A downgrade without either is a single header write.

// AmendCompat changes the image to qcow2 version 3 (compat=1.1) or 2
// (compat=0.10), with QEMU 7.2's refusals and texts.
func (img *Image) AmendCompat(version int) error {
	defer img.lockExclusive()()
	if err := img.usable(true); err != nil {
		return err
	}
	switch {
	case version == int(img.hdr.version):
		return nil
	case version == 3:
		return img.upgrade()
	case version == 2:
		return img.downgrade()
	}
	return fmt.Errorf("qcow2: no compatibility level for version %d", version)
}

// upgrade is qcow2_upgrade: a 112-byte v3 header (QEMU's, compression
// type zlib) with no feature bits, the feature name table, and every
// snapshot given the extra data v3 requires.
func (img *Image) upgrade() error {
	h := img.hdr
	h.version = 3
	h.incompat, h.compat, h.autoclear = 0, 0, 0
	h.refcountOrder = 4
	h.headerLength = qemuHeaderLength
	h.tail = make([]byte, qemuHeaderLength-v3HeaderLength)
	h.compressionType = compressionZlib
	// A v2 image cannot vouch for a bitmaps extension (it has no autoclear
	// bits): QEMU drops one when it rewrites the header, and so does this.
	h.exts, h.bitmaps = withoutExts(h.exts, extFeatureTable, extBitmaps), nil
	if img.g.clusterSize > 4096 {
		// Where qcow2_update_header puts it: after the backing format,
		// before the extensions it does not know.
		h.exts = append([]headerExt{featureTableExt()}, h.exts...)
	}
	snaps, rewrite := upgradedSnapshots(img.snaps, img.size.Load())
	var err error
	if !rewrite {
		err = img.writeHeader(&h)
	} else {
		var sw *metaSwitch
		if sw, err = img.beginSwitch(); err == nil {
			err = sw.commitHeader(img.l1, int64(img.hdr.l1TableOffset), snaps, &h)
		}
	}
	if err != nil {
		return err
	}
	img.version.Store(3)
	return nil
}

// upgradedSnapshots returns the snapshot list an upgrade writes. v3
// requires each entry's extra data to hold the 64-bit VM state size and
// the disk size; when one lacks them QEMU rewrites the whole table in
// qcow2_write_snapshots' layout (24 bytes: VM state size, disk size,
// icount, then any unknown extra data), and so does this. rewrite is
// false when every entry already qualifies.
func upgradedSnapshots(snaps []snapshot, size int64) (out []snapshot, rewrite bool) {
	for _, s := range snaps {
		if len(s.extra) < 16 {
			rewrite = true
		}
	}
	if !rewrite {
		return snaps, false
	}
	be := binary.BigEndian
	out = slices.Clone(snaps)
	for i := range out {
		in := out[i].info()
		extra := make([]byte, max(snapshotExtraBytes, len(out[i].extra)))
		copy(extra, out[i].extra)
		be.PutUint64(extra[0:], in.VMStateSize)
		if in.DiskSize < 0 {
			in.DiskSize = size // what QEMU assumes for a snapshot without one
		}
		be.PutUint64(extra[8:], uint64(in.DiskSize))
		icount := NoIcount
		if in.HasIcount {
			icount = in.Icount
		}
		be.PutUint64(extra[16:], icount)
		out[i].extra = extra
		// A VM state too large for the 32-bit field is left out of it, so
		// that older readers see a disk-only snapshot.
		out[i].vmStateSize = 0
		if in.VMStateSize <= math.MaxUint32 {
			out[i].vmStateSize = uint32(in.VMStateSize)
		}
	}
	return out, true
}

// downgrade is qcow2_downgrade: refusals in QEMU's order, then the
// image without anything v2 cannot express: zero clusters, feature bits,
// the feature table, persistent bitmaps.
//
// Two deliberate departures from QEMU 7.2, both where it loses data: a
// preallocated zero cluster whose host cluster another entry still uses
// (a snapshot's) is replaced rather than zeroed in place, and zstd
// compressed clusters are looked for in the snapshots too, not only in
// the active layer. Bitmaps are dropped with their clusters freed, where
// QEMU leaves a bitmaps extension v2 cannot vouch for (and leaked
// clusters once it is next opened).
func (img *Image) downgrade() error {
	if img.g.refcountOrder != 4 {
		return errors.New("compat=0.10 requires refcount_bits=16")
	}
	size := img.size.Load()
	for _, s := range img.snaps {
		in := s.info()
		if in.VMStateSize > math.MaxUint32 || in.DiskSize >= 0 && in.DiskSize != size {
			return errors.New("Internal snapshots prevent downgrade of image")
		}
	}
	if img.hdr.incompat&incompatDirty != 0 {
		if err := img.markCleanLocked(); err != nil {
			return fmt.Errorf("Failed to make the image clean: %w", err)
		}
	}
	if other := img.hdr.incompat &^ incompatCompression; other != 0 {
		return fmt.Errorf("Cannot downgrade an image with incompatible features %#x set", other)
	}
	if err := img.flushAll(); err != nil {
		return err
	}
	p, err := img.planDowngrade()
	if err != nil {
		return err
	}
	if p.compressed && img.hdr.compressionType == compressionZstd {
		return errors.New("Cannot downgrade an image with zstd compression type and existing compressed clusters")
	}
	h := img.hdr
	h.version = 2
	h.incompat, h.compat, h.autoclear = 0, 0, 0
	h.headerLength = v2HeaderLength
	h.tail = nil
	h.compressionType = compressionZlib
	h.exts, h.bitmaps = withoutExts(h.exts, extFeatureTable, extBitmaps), nil
	dropBitmaps := img.bitmapsValid()
	if len(p.zeroTables) == 0 && !dropBitmaps {
		err = img.writeHeader(&h)
	} else {
		err = img.downgradeSwitch(p, &h, dropBitmaps)
	}
	if err != nil {
		return err
	}
	img.version.Store(2)
	img.compression.Store(compressionZlib)
	img.lazy = false
	img.keepBitmaps, img.bitmapDir = false, nil
	return nil
}

// downgradePlan is what a downgrade found in the L2 tables of every tree
// (the active layer's and each snapshot's).
type downgradePlan struct {
	active     []uint64
	snapL1     [][]uint64       // per snapshot, in img.snaps order
	uses       map[int64]uint64 // L2 table offset: references from all L1 tables
	order      []int64          // L2 tables, each once, in the order found
	zeroTables map[int64][]byte // the L2 tables holding zero entries, as read
	compressed bool             // some entry is compressed
}

// planDowngrade reads every L2 table once (the caches are flushed).
func (img *Image) planDowngrade() (*downgradePlan, error) {
	g := &img.g
	p := &downgradePlan{active: img.l1, uses: map[int64]uint64{}, zeroTables: map[int64][]byte{}}
	trees := [][]uint64{img.l1}
	for _, s := range img.snaps {
		l1, err := readTable(img.file, s.l1Offset, s.l1Size)
		if err != nil {
			return nil, err
		}
		p.snapL1 = append(p.snapL1, l1)
		trees = append(trees, l1)
	}
	for _, l1 := range trees {
		for _, e := range l1 {
			off := int64(e & l1eOffsetMask)
			if off == 0 {
				continue
			}
			if g.inCluster(off) != 0 {
				return nil, img.corruptf(true, -1, -1, "L2 table offset %#x unaligned", off)
			}
			if p.uses[off] == 0 {
				p.order = append(p.order, off)
			}
			p.uses[off]++
		}
	}
	for _, off := range p.order {
		table := make([]byte, g.clusterSize)
		if err := img.readFileClamped(table, off); err != nil {
			return nil, err
		}
		for j := int64(0); j < g.l2Entries; j++ {
			le, bm := img.entryAt(table, j)
			switch g.classify(le, bm, 0) {
			case kCompressed:
				p.compressed = true
			case kZero, kZeroAlloc:
				p.zeroTables[off] = table
			}
		}
	}
	return p, nil
}

// downgradeSwitch writes the v2 image beside the v3 one and switches to
// it with header nh (see the comment at the top of the file).
func (img *Image) downgradeSwitch(p *downgradePlan, nh *header, dropBitmaps bool) error {
	g := &img.g
	cs := g.clusterSize
	sw, err := img.beginSwitch()
	if err != nil {
		return err
	}
	if dropBitmaps {
		if err := sw.dropBitmaps(img.hdr.bitmaps); err != nil {
			return err
		}
	}
	// Zero entries, as qcow2_expand_zero_clusters turns them: without a
	// backing file they become unallocated (reading zeroes all the same);
	// with one, each gets a zeroed data cluster of its own. A
	// preallocated one keeps its cluster, zeroed, when every use of that
	// cluster is through this table.
	backed := img.hasBacking()
	newTables := map[int64][]byte{}
	released := map[int64]bool{} // host clusters that lost references
	for _, off := range p.order {
		table, ok := p.zeroTables[off]
		if !ok {
			continue
		}
		uses := p.uses[off]
		for j := int64(0); j < g.l2Entries; j++ {
			le, _ := img.entryAt(table, j)
			k := g.classify(le, 0, 0)
			if k != kZero && k != kZeroAlloc {
				continue
			}
			if k == kZeroAlloc {
				host := int64(le & l2eOffsetMask)
				if sw.r.get(host>>g.clusterBits) == uses {
					// Every other entry using host (in a table processed
					// before) was a zero entry too: zeroing it now is
					// invisible under the v3 metadata.
					if m := img.meta.check(g, host, cs, metaNone); m != metaNone {
						return img.corruptf(true, host, cs, "%s", overlapMessage(m))
					}
					sw.zeroes(host, cs)
					img.setEntry(table, j, le&^oflagZero, 0)
					continue
				}
				sw.r.decN(host, cs, uses)
				if err := sw.corruption(); err != nil {
					return err
				}
				released[host>>g.clusterBits] = true
			}
			var ne uint64
			if backed {
				d := sw.allocZeroes()
				sw.r.add(d>>g.clusterBits, uses-1)
				ne = uint64(d)
				if uses == 1 {
					ne |= oflagCopied
				}
			}
			img.setEntry(table, j, ne, 0)
		}
		newTables[off] = table
	}
	if len(released) > 0 {
		if err := img.recopyFlags(sw, p, newTables, released); err != nil {
			return err
		}
	}
	// The changed tables move to fresh clusters, with the same uses.
	moved := map[int64]int64{}
	for _, off := range p.order {
		table, ok := newTables[off]
		if !ok {
			continue
		}
		uses := p.uses[off]
		sw.r.decN(off, cs, uses)
		if err := sw.corruption(); err != nil {
			return err
		}
		n := sw.alloc(table)
		sw.r.add(n>>g.clusterBits, uses-1)
		moved[off] = n
	}
	remap := func(l1 []uint64, active bool) ([]uint64, bool) {
		out, changed := slices.Clone(l1), false
		for i, e := range l1 {
			n, ok := moved[int64(e&l1eOffsetMask)]
			if !ok {
				continue
			}
			out[i] = uint64(n) | e&^l1eOffsetMask
			if active {
				out[i] &^= oflagCopied
				if sw.r.get(n>>g.clusterBits) == 1 {
					out[i] |= oflagCopied
				}
			}
			changed = true
		}
		return out, changed
	}
	l1, l1Off := img.l1, int64(img.hdr.l1TableOffset)
	if nl1, changed := remap(img.l1, true); changed {
		if err := sw.refs(l1Off, int64(len(l1))*8, -1); err != nil {
			return err
		}
		l1, l1Off = nl1, sw.alloc(tableBytes(nl1))
	}
	snaps := slices.Clone(img.snaps)
	for i := range snaps {
		nl1, changed := remap(p.snapL1[i], false)
		if !changed {
			continue
		}
		if err := sw.refs(snaps[i].l1Offset, snaps[i].l1Size*8, -1); err != nil {
			return err
		}
		snaps[i].l1Offset = sw.alloc(tableBytes(nl1))
	}
	return sw.commitHeader(l1, l1Off, snaps, nh)
}

// recopyFlags keeps the active layer's COPIED flags exact after a
// downgrade dropped references to the host clusters in released: an
// entry elsewhere may now hold the last one. Tables whose flags change
// join newTables.
func (img *Image) recopyFlags(sw *metaSwitch, p *downgradePlan, newTables map[int64][]byte, released map[int64]bool) error {
	g := &img.g
	for _, e := range p.active {
		off := int64(e & l1eOffsetMask)
		if off == 0 {
			continue
		}
		table, pending := newTables[off]
		if !pending {
			table = make([]byte, g.clusterSize)
			if err := img.readFileClamped(table, off); err != nil {
				return err
			}
		}
		changed := false
		for j := int64(0); j < g.l2Entries; j++ {
			le, _ := img.entryAt(table, j)
			host := int64(le & l2eOffsetMask)
			if le&oflagCompressed != 0 || host == 0 || !released[host>>g.clusterBits] {
				continue
			}
			want := le &^ oflagCopied
			if sw.r.get(host>>g.clusterBits) == 1 {
				want |= oflagCopied
			}
			if want != le {
				img.setEntry(table, j, want, 0)
				changed = true
			}
		}
		if changed && !pending {
			newTables[off] = table
		}
	}
	return nil
}

// dropBitmaps removes the references of every cluster the bitmaps
// extension uses: directory, tables and data.
func (sw *metaSwitch) dropBitmaps(b *bitmapsExt) error {
	img, g := sw.img, &sw.img.g
	fsz, err := img.file.Size()
	if err != nil {
		return err
	}
	var res CheckResult
	used := newRefCounter(sw.r.nb, g, &res)
	img.countBitmaps(used, b, fsz)
	if res.Corruptions+res.CheckErrors > 0 {
		return fmt.Errorf("Cannot drop the persistent bitmaps: %s", res.Messages[0])
	}
	for c := int64(0); c < used.nb; c++ {
		if v := used.get(c); v > 0 {
			sw.r.decN(c<<g.clusterBits, g.clusterSize, v)
		}
	}
	return sw.corruption()
}

// withoutExts is exts less those with the given magics.
func withoutExts(exts []headerExt, magics ...uint32) []headerExt {
	var out []headerExt
	for _, e := range exts {
		if !slices.Contains(magics, e.magic) {
			out = append(out, e)
		}
	}
	return out
}

// tableBytes is an L1 table as stored.
func tableBytes(t []uint64) []byte {
	buf := make([]byte, len(t)*8)
	for i, e := range t {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	return buf
}
