package qcow2

// Reference counting for Check and for metadata switches (metaswitch.go):
// every reference the metadata makes is accumulated in a refCounter, one
// counter per host cluster of the file.

// refCounter accumulates the references found in the metadata.
type refCounter struct {
	n   []uint16 // saturating; exact values above 0xfffe live in big
	big map[int64]uint64
	nb  int64
	g   *geometry
	res *CheckResult
	// rebuild: some refcount is too low or the refcount table is damaged,
	// so repair must rebuild the refcount structure.
	rebuild bool
	ioErr   error // the first read error of a walk (Check goes on after it)
}

// newRefCounter counts nb clusters, reporting to res.
func newRefCounter(nb int64, g *geometry, res *CheckResult) *refCounter {
	return &refCounter{nb: nb, n: make([]uint16, nb), big: map[int64]uint64{}, g: g, res: res}
}

func (r *refCounter) get(c int64) uint64 {
	if c < 0 || c >= r.nb {
		return 0
	}
	if v := r.n[c]; v != 0xffff {
		return uint64(v)
	}
	return r.big[c]
}

func (r *refCounter) add(c int64, d uint64) {
	v := r.get(c) + d
	if v >= 0xffff {
		r.n[c] = 0xffff
		r.big[c] = v
		return
	}
	r.n[c] = uint16(v)
}

// sub removes d references; false (and no change) if there are fewer.
func (r *refCounter) sub(c int64, d uint64) bool {
	v := r.get(c)
	if v < d {
		return false
	}
	v -= d
	if v >= 0xffff {
		r.big[c] = v
		return true
	}
	delete(r.big, c)
	r.n[c] = uint16(v)
	return true
}

// grow extends the counted range to nb clusters (the new ones at 0).
func (r *refCounter) grow(nb int64) {
	if nb > r.nb {
		r.n = append(r.n, make([]uint16, nb-r.nb)...)
		r.nb = nb
	}
}

// inc counts one reference to every cluster of host range [off, off+size).
func (r *refCounter) inc(off, size int64) { r.incN(off, size, 1) }

func (r *refCounter) incN(off, size int64, k uint64) {
	if size <= 0 {
		return
	}
	if off < 0 || (off+size-1)>>r.g.clusterBits >= r.nb {
		r.res.Corruptions++
		r.res.msg("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", off, size)
		return
	}
	for c := off >> r.g.clusterBits; c <= (off+size-1)>>r.g.clusterBits; c++ {
		r.add(c, k)
	}
}

// decN removes k references from every cluster of host range [off,
// off+size); a cluster with fewer is a corruption (and keeps its count).
func (r *refCounter) decN(off, size int64, k uint64) {
	if size <= 0 {
		return
	}
	if off < 0 || (off+size-1)>>r.g.clusterBits >= r.nb {
		r.res.Corruptions++
		r.res.msg("ERROR: dropping a reference to a region past the end of the file: offset %#x size %#x", off, size)
		return
	}
	for c := off >> r.g.clusterBits; c <= (off+size-1)>>r.g.clusterBits; c++ {
		if !r.sub(c, k) {
			r.res.Corruptions++
			r.res.msg("ERROR: refcount underflow for cluster offset %#x", c<<r.g.clusterBits)
		}
	}
}

// countL1 counts an L1 table's L2 tables and their clusters.
func (img *Image) countL1(r *refCounter, l1 []uint64, active bool) error {
	return img.walkL1(r, l1, active, r.incN)
}

// walkL1 calls count for the L2 tables of an L1 table and their clusters
// (with active, the allocation statistics of the active layer go to
// r.res too). A table referenced several times (only legitimate across
// snapshots) is read once and its references counted once per use, which
// keeps the walk bounded by the file size even for adversarial L1 tables.
func (img *Image) walkL1(r *refCounter, l1 []uint64, active bool, count func(off, size int64, k uint64)) error {
	g := &img.g
	uses := map[int64]uint64{}
	var order []int64
	for _, e := range l1 {
		l2off := int64(e & l1eOffsetMask)
		if l2off == 0 {
			continue
		}
		if g.inCluster(l2off) != 0 {
			r.res.Corruptions++
			r.res.msg("ERROR l2_offset=%#x: Table is not cluster aligned; L1 entry corrupted", l2off)
			continue
		}
		count(l2off, g.clusterSize, 1)
		if l2off>>g.clusterBits >= r.nb {
			continue
		}
		if uses[l2off] == 0 {
			order = append(order, l2off)
		}
		uses[l2off]++
	}
	table := make([]byte, g.clusterSize)
	for _, l2off := range order {
		k := uses[l2off]
		// Contiguity is judged within one L2 table, as check_refcounts_l2
		// does (its next_contiguous_offset starts afresh for each table).
		prev := int64(-1)
		if err := img.readFileClamped(table, l2off); err != nil {
			if r.ioErr == nil {
				r.ioErr = err
			}
			r.res.CheckErrors++
			r.res.msg("ERROR: I/O error reading L2 table at %#x", l2off)
			continue
		}
		for j := int64(0); j < g.l2Entries; j++ {
			le, bm := img.entryAt(table, j)
			switch {
			case le&oflagCompressed != 0:
				if le&oflagCopied != 0 {
					r.res.Corruptions++
					r.res.msg("ERROR: coffset=%#x: copied flag must never be set for compressed clusters", le&g.cOffsetMask)
				}
				off, size := g.compressedRange(le)
				count(off, size, k)
				if active {
					// Compressed clusters count as fragmented by nature, as
					// in QEMU: adjacent ones still need their sectors re-read.
					r.res.CompressedClusters++
					r.res.AllocatedClusters++
					r.res.FragmentedClusters++
				}
			case g.extL2 && g.classify(le, bm, 0) == kInvalid:
				r.res.Corruptions++
				r.res.msg("ERROR: Invalid cluster entry found (L2 offset: %#x, L2 index: %#x)", l2off, j)
			case le&l2eOffsetMask != 0:
				host := int64(le & l2eOffsetMask)
				if g.inCluster(host) != 0 {
					r.res.Corruptions++
					r.res.msg("ERROR offset=%#x: Cluster is not properly aligned; L2 entry corrupted", host)
					continue
				}
				count(host, g.clusterSize, k)
				if active {
					r.res.AllocatedClusters++
					if prev >= 0 && host != prev+g.clusterSize {
						r.res.FragmentedClusters++
					}
					prev = host
				}
			}
		}
	}
	return nil
}

func (img *Image) countBitmaps(r *refCounter, b *bitmapsExt, fsz int64) {
	g := &img.g
	r.inc(int64(b.dirOffset), int64(b.dirSize))
	tables, err := readBitmapDirectory(img.file, b, fsz)
	if err != nil {
		r.res.CheckErrors++
		r.res.msg("ERROR: cannot read bitmap directory: %v", err)
	}
	for _, t := range tables {
		if g.inCluster(t.offset) != 0 || t.size > maxL1Bytes/8 {
			r.res.Corruptions++
			r.res.msg("ERROR: bitmap table offset %#x invalid", t.offset)
			continue
		}
		r.inc(t.offset, t.size*8)
		entries, err := readTable(img.file, t.offset, t.size)
		if err != nil {
			r.res.CheckErrors++
			continue
		}
		for _, e := range entries {
			if off := int64(e & l2eOffsetMask); off != 0 {
				r.inc(off, g.clusterSize)
			}
		}
	}
}
