package qcow2

import (
	"fmt"

	"blockd/blockio"
)

// Check verifies the refcounts like qemu-img check (qcow2_check_refcounts):
// it counts every reference the metadata makes (header, L1/L2 tables and
// data of the active image and of internal snapshots, refcount table and
// blocks, snapshot table, bitmaps) and compares with the stored refcounts.
// A stored refcount above the count is a leak, below it a corruption; a
// COPIED flag that disagrees with refcount == 1 is a corruption too.
//
// Repair: leaks alone are fixed in place; any refcount corruption rebuilds
// the whole refcount structure at the end of the file (rebuild.go); COPIED
// flags are then fixed from the new refcounts. The corrupt and dirty bits
// are cleared when nothing uncorrectable remains.

// CheckResult holds the counts qemu-img check reports.
type CheckResult struct {
	Corruptions        int
	Leaks              int
	CheckErrors        int
	CorruptionsFixed   int
	LeaksFixed         int
	ImageEndOffset     int64
	TotalClusters      int64
	AllocatedClusters  int64
	FragmentedClusters int64
	CompressedClusters int64
	Messages           []string // first findings, like qemu-img check's output
}

const maxCheckMessages = 200

func (r *CheckResult) msg(format string, args ...any) {
	if len(r.Messages) < maxCheckMessages {
		r.Messages = append(r.Messages, fmt.Sprintf(format, args...))
	}
}

// Check checks the image and, with repair, fixes what it can. It waits for
// in-flight requests and blocks new ones while it runs.
func (img *Image) Check(repair bool) (CheckResult, error) {
	if repair && img.readOnly {
		return CheckResult{}, blockio.ErrReadOnly
	}
	defer img.lockExclusive()()
	if img.closed.Load() {
		return CheckResult{}, errClosed
	}
	if !img.readOnly {
		// The walk reads tables from the file: make it current.
		if err := img.flushAll(); err != nil {
			return CheckResult{}, err
		}
	}
	res, refs, err := img.checkPass()
	if err != nil || !repair {
		return res, err
	}
	if res.Corruptions == 0 && res.Leaks == 0 && res.CheckErrors == 0 &&
		img.hdr.incompat&(incompatCorrupt|incompatDirty) == 0 && !img.corrupt.Load() {
		return res, nil
	}
	if err := img.repair(&res, refs); err != nil {
		return res, err
	}
	after, _, err := img.checkPass()
	if err != nil {
		return res, err
	}
	after.CorruptionsFixed = max(0, res.Corruptions-after.Corruptions)
	after.LeaksFixed = max(0, res.Leaks-after.Leaks)
	after.Messages = append(res.Messages, after.Messages...)
	if after.Corruptions == 0 && after.CheckErrors == 0 {
		if err := img.flushAll(); err != nil {
			return after, err
		}
		clearBits := uint64(incompatCorrupt | incompatDirty)
		if img.version.Load() >= 3 && img.hdr.incompat&clearBits != 0 {
			if err := img.writeIncompat(img.hdr.incompat &^ clearBits); err != nil {
				return after, err
			}
		}
		img.corrupt.Store(false)
		img.broken.Store(false)
		img.signaledFatal, img.signaledNonFatal = false, false
	}
	return after, nil
}

// checkPass computes references and compares them with the refcounts.
func (img *Image) checkPass() (CheckResult, *refCounter, error) {
	g := &img.g
	var res CheckResult
	fsz, err := img.file.Size()
	if err != nil {
		return res, nil, err
	}
	r := newRefCounter(g.clustersFor(fsz), g, &res)
	res.TotalClusters = g.clustersFor(img.size.Load())
	h := &img.hdr

	r.inc(0, g.clusterSize)
	if h.nbSnapshots > 0 {
		snaps, end, err := readSnapshots(img.file, int64(h.snapshotsOffset), int(h.nbSnapshots), fsz)
		if err != nil {
			res.CheckErrors++
			res.msg("ERROR: %v", err)
		} else {
			r.inc(int64(h.snapshotsOffset), end-int64(h.snapshotsOffset))
		}
		for i, s := range snaps {
			if g.inCluster(s.l1Offset) != 0 {
				res.Corruptions++
				res.msg("ERROR snapshot %d l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", i, s.l1Offset)
				continue
			}
			r.inc(s.l1Offset, s.l1Size*8)
			l1, err := readTable(img.file, s.l1Offset, s.l1Size)
			if err != nil {
				res.CheckErrors++
				res.msg("ERROR: cannot read snapshot %d L1 table: %v", i, err)
				continue
			}
			if err := img.countL1(r, l1, false); err != nil {
				return res, nil, err
			}
		}
	}
	r.inc(int64(h.l1TableOffset), int64(len(img.l1))*8)
	if err := img.countL1(r, img.l1, true); err != nil {
		return res, nil, err
	}
	r.inc(int64(h.refcountTableOffset), int64(h.refcountTableClusters)<<g.clusterBits)
	for i, e := range img.reftable {
		off := int64(e & reftOffsetMask)
		switch {
		case off == 0:
		case g.inCluster(off) != 0:
			res.Corruptions++
			r.rebuild = true
			res.msg("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
		case off >= fsz:
			res.Corruptions++
			r.rebuild = true
			res.msg("ERROR refcount block %d is outside image", i)
		default:
			r.inc(off, g.clusterSize)
		}
	}
	if b := h.bitmaps; b != nil && h.autoclear&autoclearBitmaps != 0 {
		img.countBitmaps(r, b, fsz)
	}
	if err := img.compareRefcounts(r); err != nil {
		return res, nil, err
	}
	if err := img.checkCopied(&res, false); err != nil {
		return res, nil, err
	}
	return res, r, nil
}

// diskRefcount reads a stored refcount (0 for clusters without a usable
// refcount block).
func (img *Image) diskRefcount(c, fsz int64) (uint64, error) {
	g := &img.g
	rti := c >> g.refblockBits
	if rti >= int64(len(img.reftable)) {
		return 0, nil
	}
	off := int64(img.reftable[rti] & reftOffsetMask)
	if off == 0 || g.inCluster(off) != 0 || off >= fsz {
		return 0, nil
	}
	_, buf, err := img.rcGet(off)
	if err != nil {
		return 0, err
	}
	return getRefcount(buf, c&(g.refblockEntries-1), g.refcountOrder), nil
}

func (img *Image) compareRefcounts(r *refCounter) error {
	g := &img.g
	fsz := r.nb << g.clusterBits
	highest := int64(-1)
	for c := int64(0); c < r.nb; c++ {
		rc, err := img.diskRefcount(c, fsz)
		if err != nil {
			return err
		}
		ref := r.get(c)
		if rc != ref {
			if rc > ref {
				r.res.Leaks++
				r.res.msg("Leaked cluster %d refcount=%d reference=%d", c, rc, ref)
			} else {
				r.res.Corruptions++
				r.rebuild = true
				r.res.msg("ERROR cluster %d refcount=%d reference=%d", c, rc, ref)
			}
		}
		if rc != 0 || ref != 0 {
			highest = c
		}
	}
	r.res.ImageEndOffset = (highest + 1) << g.clusterBits
	return nil
}

// checkCopied compares the COPIED flags of the active tables with the
// stored refcounts; with fix, wrong flags are corrected on disk.
func (img *Image) checkCopied(res *CheckResult, fix bool) error {
	g := &img.g
	fsz, err := img.file.Size()
	if err != nil {
		return err
	}
	table := make([]byte, g.clusterSize)
	seen := map[int64]bool{}
	for i, e := range img.l1 {
		l2off := int64(e & l1eOffsetMask)
		if l2off == 0 || g.inCluster(l2off) != 0 || l2off >= fsz {
			continue
		}
		rc, err := img.diskRefcount(l2off>>g.clusterBits, fsz)
		if err != nil {
			return err
		}
		if (rc == 1) != (e&oflagCopied != 0) {
			res.Corruptions++
			res.msg("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", i, e, rc)
			if fix {
				if err := img.writeL1Entry(int64(i), e^oflagCopied); err != nil {
					return err
				}
			}
		}
		if seen[l2off] {
			continue
		}
		seen[l2off] = true
		if err := img.readFileClamped(table, l2off); err != nil {
			continue
		}
		dirty := false
		for j := int64(0); j < g.l2Entries; j++ {
			le, bm := img.entryAt(table, j)
			host := int64(le & l2eOffsetMask)
			if le&oflagCompressed != 0 || host == 0 || g.inCluster(host) != 0 {
				continue
			}
			rc, err := img.diskRefcount(host>>g.clusterBits, fsz)
			if err != nil {
				return err
			}
			if (rc == 1) != (le&oflagCopied != 0) {
				res.Corruptions++
				res.msg("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", le, rc)
				img.setEntry(table, j, le^oflagCopied, bm)
				dirty = true
			}
		}
		if fix && dirty {
			if k := img.meta.check(g, l2off, g.clusterSize, metaL2); k != metaNone {
				return img.corruptf(true, l2off, g.clusterSize, "%s", overlapMessage(k))
			}
			if err := img.file.WriteAt(table, l2off, 0); err != nil {
				return err
			}
			img.dropL2Slices(l2off)
		}
	}
	return nil
}
