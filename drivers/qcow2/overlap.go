package qcow2

import "fmt"

// Metadata overlap checks (QEMU's "cached" overlap-check template). Before
// any data write and any metadata write-back, the target host range is
// checked against the image's metadata; a hit means the mapping is corrupt,
// and the write is refused and the image marked corrupt instead of letting
// it destroy metadata.
//
// Invariant (under Image.mu): clusters holds every active L2 table and
// every refcount block that lies inside the file, ranges holds the header
// cluster, the active L1 table, the refcount table, the snapshot table,
// the snapshots' L1 tables and the bitmap directory. Entries are updated
// whenever the L1 table, the refcount table or one of their entries change.

type metaKind uint8

const (
	metaNone metaKind = iota
	metaHeader
	metaL1
	metaL2
	metaReftable
	metaRefblock
	metaSnapTable
	metaInactiveL1
	metaBitmapDir
)

// metaNames are QEMU's metadata_ol_names.
var metaNames = [...]string{
	metaNone:       "",
	metaHeader:     "qcow2_header",
	metaL1:         "active L1 table",
	metaL2:         "active L2 table",
	metaReftable:   "refcount table",
	metaRefblock:   "refcount block",
	metaSnapTable:  "snapshot table",
	metaInactiveL1: "inactive L1 table",
	metaBitmapDir:  "bitmap directory",
}

func (k metaKind) String() string { return metaNames[k] }

type metaRange struct {
	start, end int64 // bytes, cluster aligned
	kind       metaKind
}

type overlapSet struct {
	clusters map[int64]metaKind
	ranges   []metaRange
}

func newOverlapSet() overlapSet {
	return overlapSet{clusters: make(map[int64]metaKind)}
}

// setRange replaces the range of a single-instance kind (L1, reftable…).
func (o *overlapSet) setRange(kind metaKind, start, end int64) {
	o.removeRanges(kind)
	if end > start {
		o.ranges = append(o.ranges, metaRange{start, end, kind})
	}
}

func (o *overlapSet) addRange(kind metaKind, start, end int64) {
	if end > start {
		o.ranges = append(o.ranges, metaRange{start, end, kind})
	}
}

func (o *overlapSet) removeRanges(kind metaKind) {
	out := o.ranges[:0]
	for _, r := range o.ranges {
		if r.kind != kind {
			out = append(out, r)
		}
	}
	o.ranges = out
}

// check returns the kind of metadata that [off, off+size) overlaps, other
// than self, or metaNone. off and size need not be aligned.
func (o *overlapSet) check(g *geometry, off, size int64, self metaKind) metaKind {
	if size <= 0 {
		return metaNone
	}
	end := off + size
	for _, r := range o.ranges {
		if r.kind != self && off < r.end && r.start < end {
			return r.kind
		}
	}
	if len(o.clusters) == 0 {
		return metaNone
	}
	for c := off >> g.clusterBits; c <= (end-1)>>g.clusterBits; c++ {
		if k, ok := o.clusters[c]; ok && k != self {
			return k
		}
	}
	return metaNone
}

func overlapMessage(k metaKind) string {
	return fmt.Sprintf("Preventing invalid write on metadata (overlaps with %s)", k)
}
