package qcow2

// Derived sizes and the encodings of L1, L2 and refcount table entries.
// Everything here is a pure function of the header, computed once at open.

const (
	l1eOffsetMask   = 0x00fffffffffffe00
	l2eOffsetMask   = 0x00fffffffffffe00
	reftOffsetMask  = 0xfffffffffffffe00
	oflagCopied     = uint64(1) << 63
	oflagCompressed = uint64(1) << 62
	oflagZero       = uint64(1)

	// Extended L2 bitmap: low 32 bits "allocated", high 32 bits "reads as
	// zero", one bit per subcluster.
	subclusters          = 32
	bitmapAllAlloc       = uint64(0xffffffff)
	bitmapAllZero        = bitmapAllAlloc << 32
	compressedSectorSize = 512
)

type geometry struct {
	clusterBits     uint
	clusterSize     int64
	extL2           bool
	l2EntryBytes    int64 // 8, or 16 with extended L2 entries
	l2Bits          uint  // log2(entries per L2 table)
	l2Entries       int64
	scBits          uint // log2(subcluster size); clusterBits without extL2
	scSize          int64
	refcountOrder   uint
	refcountBits    uint
	refcountMax     uint64
	refblockBits    uint // log2(entries per refcount block)
	refblockEntries int64
	csizeShift      uint
	csizeMask       uint64
	cOffsetMask     uint64
}

func newGeometry(clusterBits, refcountOrder uint, extL2 bool) geometry {
	g := geometry{
		clusterBits:   clusterBits,
		clusterSize:   int64(1) << clusterBits,
		extL2:         extL2,
		l2EntryBytes:  8,
		refcountOrder: refcountOrder,
		refcountBits:  1 << refcountOrder,
	}
	if extL2 {
		g.l2EntryBytes = 16
	}
	g.l2Bits = clusterBits - 3
	if extL2 {
		g.l2Bits = clusterBits - 4
	}
	g.l2Entries = int64(1) << g.l2Bits
	g.scBits = clusterBits
	if extL2 {
		g.scBits = clusterBits - 5
	}
	g.scSize = int64(1) << g.scBits
	if g.refcountBits == 64 {
		g.refcountMax = ^uint64(0)
	} else {
		g.refcountMax = uint64(1)<<g.refcountBits - 1
	}
	// entries = cluster_size * 8 / refcount_bits
	g.refblockBits = clusterBits + 3 - refcountOrder
	g.refblockEntries = int64(1) << g.refblockBits
	g.csizeShift = 62 - (clusterBits - 8)
	g.csizeMask = uint64(1)<<(clusterBits-8) - 1
	g.cOffsetMask = uint64(1)<<g.csizeShift - 1
	return g
}

func (g *geometry) inCluster(off int64) int64    { return off & (g.clusterSize - 1) }
func (g *geometry) clusterStart(off int64) int64 { return off &^ (g.clusterSize - 1) }
func (g *geometry) l1Index(off int64) int64      { return off >> (g.clusterBits + g.l2Bits) }
func (g *geometry) l2Index(off int64) int64 {
	return (off >> g.clusterBits) & (g.l2Entries - 1)
}

// l1EntriesFor is size_to_l1: L1 entries needed for a virtual size.
func (g *geometry) l1EntriesFor(size int64) int64 {
	shift := g.clusterBits + g.l2Bits
	return (size + (int64(1) << shift) - 1) >> shift
}

func (g *geometry) clustersFor(bytes int64) int64 {
	return (bytes + g.clusterSize - 1) >> g.clusterBits
}

// compressedRange decodes a compressed L2 entry into the host byte range
// holding the compressed stream (qcow2_parse_compressed_l2_entry).
func (g *geometry) compressedRange(entry uint64) (off, size int64) {
	off = int64(entry & g.cOffsetMask)
	sectors := int64((entry>>g.csizeShift)&g.csizeMask) + 1
	size = sectors*compressedSectorSize - off&(compressedSectorSize-1)
	return off, size
}

// kind is the state of one (sub)cluster as seen by reads, the union of
// QEMU's QCow2SubclusterType values.
type kind uint8

const (
	kUnalloc      kind = iota // falls through to the backing file
	kUnallocAlloc             // extL2: unallocated subcluster of an allocated cluster
	kZero                     // reads as zeroes, no host cluster
	kZeroAlloc                // reads as zeroes, host cluster preallocated
	kNormal                   // data at the host offset
	kCompressed               // compressed cluster
	kInvalid                  // inconsistent extended L2 bitmap
)

// classify returns the state of subcluster sc (0 without extL2) of an L2
// entry and its bitmap.
func (g *geometry) classify(entry, bitmap uint64, sc uint) kind {
	if entry&oflagCompressed != 0 {
		return kCompressed
	}
	if !g.extL2 {
		if entry&oflagZero != 0 {
			if entry&l2eOffsetMask != 0 {
				return kZeroAlloc
			}
			return kZero
		}
		if entry&l2eOffsetMask == 0 {
			return kUnalloc
		}
		return kNormal
	}
	if entry&l2eOffsetMask == 0 {
		if bitmap&bitmapAllAlloc != 0 {
			return kInvalid
		}
		if bitmap&(1<<(32+sc)) != 0 {
			return kZero
		}
		return kUnalloc
	}
	if (bitmap>>32)&bitmap&bitmapAllAlloc != 0 {
		return kInvalid
	}
	if bitmap&(1<<(32+sc)) != 0 {
		return kZeroAlloc
	}
	if bitmap&(1<<sc) != 0 {
		return kNormal
	}
	return kUnallocAlloc
}
