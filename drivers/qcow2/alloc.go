package qcow2

// Host cluster allocation (under mu).
//
// Invariants:
//   - every cluster below freeHint has a non-zero refcount, so scans start
//     there (it moves back whenever a refcount drops to 0);
//   - allocRun returns clusters whose refcount went from 0 to 1 and that
//     are covered by refcount blocks present in the table; metadata needed
//     for that (new refcount blocks, a bigger table) is created first, and
//     the search restarts because that metadata took free clusters
//     (the same -EAGAIN loop as QEMU's qcow2_alloc_clusters);
//   - clusters past the end of the refcount table, or in a range without a
//     refcount block, count as free;
//   - clusters at or past allocEnd are free whatever their stored refcount
//     says: allocEnd starts at the end of the file and only grows with
//     what this Image allocates, so nothing can legitimately use them.
//     This bounds every scan by the file size (a damaged refcount table
//     cannot make it endless) and skips reading empty refcount blocks.
//     Such a cluster gets refcount 1 when allocated, not +1, so a stale
//     count past the end of the file is overwritten rather than kept.

// findFree returns the first index of a run of n clusters with refcount 0
// at or after freeHint. firstFree is the first free cluster seen, which
// becomes the new hint when the run starts later (holes too small for n).
func (img *Image) findFree(n int64) (start, firstFree int64, err error) {
	g := &img.g
	i := img.freeHint
	firstFree = -1
	run := int64(0)
	for {
		if i >= img.allocEnd {
			if firstFree < 0 {
				firstFree = i
			}
			if run == 0 {
				start = i
			}
			return start, firstFree, nil
		}
		r := i >> g.refblockBits
		rb, err := img.refblockOffset(r)
		if err != nil {
			return 0, 0, err
		}
		rangeEnd := (r + 1) << g.refblockBits
		if rb == 0 {
			if firstFree < 0 {
				firstFree = i
			}
			if run == 0 {
				start = i
			}
			run += rangeEnd - i
			if run >= n {
				return start, firstFree, nil
			}
			i = rangeEnd
			continue
		}
		_, buf, err := img.rcGet(rb)
		if err != nil {
			return 0, 0, err
		}
		for j := i & (g.refblockEntries - 1); j < g.refblockEntries && i < img.allocEnd; j++ {
			if getRefcount(buf, j, g.refcountOrder) == 0 {
				if firstFree < 0 {
					firstFree = i
				}
				if run == 0 {
					start = i
				}
				run++
				if run >= n {
					return start, firstFree, nil
				}
			} else {
				run = 0
			}
			i++
		}
	}
}

// allocRun allocates n contiguous host clusters and returns the first.
func (img *Image) allocRun(n int64) (int64, error) {
	img.event("cluster_alloc")
	g := &img.g
	for {
		s, first, err := img.findFree(n)
		if err != nil {
			return 0, err
		}
		if (s+n)<<g.clusterBits <= 0 || (s+n)<<g.clusterBits > maxHostOffset {
			return 0, errNoSpace
		}
		done, err := img.coverRange(s, n)
		if err != nil {
			return 0, err
		}
		if !done {
			continue
		}
		for c := s; c < s+n; c++ {
			if err := img.takeCluster(c); err != nil {
				// Undo what was taken; the caller sees the error.
				for u := s; u < c; u++ {
					_, _ = img.addRefcount(u, -1)
				}
				return 0, err
			}
		}
		if first >= s {
			img.freeHint = s + n
		} else {
			img.freeHint = first
		}
		img.allocEnd = max(img.allocEnd, s+n)
		return s, nil
	}
}

// takeCluster sets the refcount of a free cluster to 1.
func (img *Image) takeCluster(c int64) error {
	if c < img.allocEnd {
		_, err := img.addRefcount(c, 1)
		return err
	}
	v, err := img.refcount(c)
	if err != nil {
		return err
	}
	if v == 0 {
		_, err = img.addRefcount(c, 1)
		return err
	}
	// A stale count past the end of the file: replace it.
	return img.setClusterRefcount(c, 1)
}

// coverRange makes sure refcount blocks exist for clusters [s, s+n). It
// creates at most one piece of metadata per call and then reports false
// so the caller searches again.
func (img *Image) coverRange(s, n int64) (bool, error) {
	g := &img.g
	for r := s >> g.refblockBits; r <= (s+n-1)>>g.refblockBits; r++ {
		if r >= int64(len(img.reftable)) {
			return false, img.growReftable(r + 1)
		}
		if img.reftable[r]&reftOffsetMask != 0 {
			continue
		}
		b, _, err := img.findFree(1)
		if err != nil {
			return false, err
		}
		rb := b >> g.refblockBits
		if rb >= int64(len(img.reftable)) {
			return false, img.growReftable(rb + 1)
		}
		if img.reftable[rb]&reftOffsetMask == 0 {
			// b's own range has no block yet: create that one first,
			// describing itself.
			r = rb
		}
		return false, img.newRefblock(r, b)
	}
	return true, nil
}

// freeEntry drops the reference an L2 entry held on its host cluster(s).
// punch passes the freed clusters down to the file as discards.
func (img *Image) freeEntry(entry uint64, punch bool) error {
	g := &img.g
	if entry&oflagCompressed != 0 {
		img.event("cluster_free")
		off, size := g.compressedRange(entry)
		for c := off >> g.clusterBits; c <= (off+size-1)>>g.clusterBits; c++ {
			if _, err := img.addRefcount(c, -1); err != nil {
				return err
			}
		}
		return nil
	}
	host := int64(entry & l2eOffsetMask)
	if host == 0 {
		return nil
	}
	return img.freeClusters(host>>g.clusterBits, 1, punch)
}

// freeClusters decrements n clusters' refcounts starting at idx.
func (img *Image) freeClusters(idx, n int64, punch bool) error {
	img.event("cluster_free")
	g := &img.g
	for c := idx; c < idx+n; c++ {
		nv, err := img.addRefcount(c, -1)
		if err != nil {
			return err
		}
		if nv == 0 && punch {
			// Advisory: a failure to punch leaves the data in place.
			_ = img.file.Discard(c<<g.clusterBits, g.clusterSize)
		}
	}
	return nil
}
