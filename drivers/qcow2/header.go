package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Header layout (docs/interop/qcow2.txt, "Header"). All fields big endian.
// Invariants kept by parseHeader for every header it returns:
//   - version is 2 or 3, cluster_bits is in [9, 21];
//   - headerLength is 72 for v2, >= 104 and <= cluster size for v3;
//   - refcountOrder <= 6, and 4 for v2;
//   - the extension area lies inside the first cluster;
//   - unknown extensions and unknown header fields are kept byte for byte
//     (exts, tail) so serialize can write them back unchanged.

const (
	qcowMagic = 0x514649fb // "QFI\xfb"

	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441

	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtL2       = 1 << 4
	// incompatKnown are the bits QEMU 7.2 knows; anything else is refused
	// with the feature name table's names.
	incompatKnown = incompatDirty | incompatCorrupt | incompatDataFile |
		incompatCompression | incompatExtL2

	compatLazyRefcounts = 1 << 0

	autoclearBitmaps = 1 << 0

	compressionZlib = 0
	compressionZstd = 1

	minClusterBits = 9
	maxClusterBits = 21

	v2HeaderLength = 72
	v3HeaderLength = 104 // without compression_type
	// qemuHeaderLength is what QEMU 7.2 writes: compression_type + padding.
	qemuHeaderLength = 112

	maxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	maxReftableBytes = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	maxSnapshots     = 65536    // QCOW_MAX_SNAPSHOTS
	snapshotHdrSize  = 40
	maxBackingName   = 1023
	maxBackingFmt    = 15 // sizeof(bs->backing_format) - 1
)

// ErrNotQcow2 is returned by Open when the magic does not match.
var ErrNotQcow2 = errors.New("Image is not in qcow2 format")

type headerExt struct {
	magic uint32
	data  []byte
}

type header struct {
	version               uint32
	backingFileOffset     uint64
	backingFileSize       uint32
	clusterBits           uint32
	size                  uint64
	cryptMethod           uint32
	l1Size                uint32
	l1TableOffset         uint64
	refcountTableOffset   uint64
	refcountTableClusters uint32
	nbSnapshots           uint32
	snapshotsOffset       uint64
	incompat              uint64
	compat                uint64
	autoclear             uint64
	refcountOrder         uint32
	headerLength          uint32
	compressionType       uint8

	// tail holds the v3 header bytes [104, headerLength): compression type,
	// padding and fields newer than QEMU 7.2, preserved on rewrite.
	tail []byte

	backingFile   string
	backingFormat string
	exts          []headerExt // in file order, without the backing format
	hasDataFile   bool        // external data file name extension present
	bitmaps       *bitmapsExt
}

type bitmapsExt struct {
	nbBitmaps uint32
	dirSize   uint64
	dirOffset uint64
}

type feature struct {
	typ  uint8
	bit  uint8
	name string
}

// qemuFeatures is the feature name table QEMU 7.2 writes for v3 images
// with clusters larger than 4 KiB.
var qemuFeatures = []feature{
	{0, 0, "dirty bit"},
	{0, 1, "corrupt bit"},
	{0, 2, "external data file"},
	{0, 3, "compression type"},
	{0, 4, "extended L2 entries"},
	{1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},
	{2, 1, "raw external data"},
}

// parseFixedHeader decodes the fixed part of the header and validates the
// fields needed to know the cluster size. buf holds the first bytes of the
// file (at least 72 of them if the file is that large).
func parseFixedHeader(buf []byte) (*header, error) {
	if len(buf) < v2HeaderLength {
		if len(buf) >= 4 && binary.BigEndian.Uint32(buf) == qcowMagic {
			return nil, errors.New("Could not read qcow2 header: file too short")
		}
		return nil, ErrNotQcow2
	}
	be := binary.BigEndian
	if be.Uint32(buf[0:]) != qcowMagic {
		return nil, ErrNotQcow2
	}
	h := &header{
		version:               be.Uint32(buf[4:]),
		backingFileOffset:     be.Uint64(buf[8:]),
		backingFileSize:       be.Uint32(buf[16:]),
		clusterBits:           be.Uint32(buf[20:]),
		size:                  be.Uint64(buf[24:]),
		cryptMethod:           be.Uint32(buf[32:]),
		l1Size:                be.Uint32(buf[36:]),
		l1TableOffset:         be.Uint64(buf[40:]),
		refcountTableOffset:   be.Uint64(buf[48:]),
		refcountTableClusters: be.Uint32(buf[56:]),
		nbSnapshots:           be.Uint32(buf[60:]),
		snapshotsOffset:       be.Uint64(buf[64:]),
	}
	if h.version < 2 || h.version > 3 {
		return nil, fmt.Errorf("Unsupported qcow2 version %d", h.version)
	}
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return nil, fmt.Errorf("Unsupported cluster size: 2^%d", h.clusterBits)
	}
	if h.version == 2 {
		h.refcountOrder = 4
		h.headerLength = v2HeaderLength
		return h, nil
	}
	if len(buf) < v3HeaderLength {
		return nil, errors.New("qcow2 header too short")
	}
	h.incompat = be.Uint64(buf[72:])
	h.compat = be.Uint64(buf[80:])
	h.autoclear = be.Uint64(buf[88:])
	h.refcountOrder = be.Uint32(buf[96:])
	h.headerLength = be.Uint32(buf[100:])
	if h.headerLength < v3HeaderLength {
		return nil, errors.New("qcow2 header too short")
	}
	if uint64(h.headerLength) > 1<<h.clusterBits {
		return nil, errors.New("qcow2 header exceeds cluster size")
	}
	return h, nil
}

// parseHeaderCluster finishes parsing with the whole first cluster (or as
// much of it as the file holds) and validates everything that does not need
// other tables.
func parseHeaderCluster(h *header, buf []byte) error {
	be := binary.BigEndian
	cs := uint64(1) << h.clusterBits
	if h.version == 3 {
		if uint64(len(buf)) < uint64(h.headerLength) {
			return errors.New("Could not read unknown qcow2 header fields")
		}
		h.tail = append([]byte(nil), buf[v3HeaderLength:h.headerLength]...)
		if len(h.tail) > 0 {
			h.compressionType = h.tail[0]
		}
	}
	if h.backingFileOffset > cs {
		return errors.New("Invalid backing file offset")
	}
	extEndOff := cs
	if h.backingFileOffset != 0 {
		extEndOff = h.backingFileOffset
	}
	if err := h.validateCompression(); err != nil {
		return err
	}
	exts, err := parseExtensions(buf, uint64(h.headerLength), extEndOff)
	if unknown := h.incompat &^ incompatKnown; unknown != 0 {
		// Report by name even when the extension area is damaged.
		return fmt.Errorf("Unsupported qcow2 feature(s): %s", featureList(exts, unknown))
	}
	if err != nil {
		return err
	}
	for _, e := range exts {
		switch e.magic {
		case extBackingFormat:
			if len(e.data) > maxBackingFmt {
				return fmt.Errorf("ERROR: ext_backing_format: len=%d too large (>=%d)",
					len(e.data), maxBackingFmt+1)
			}
			h.backingFormat = string(e.data)
			continue
		case extBitmaps:
			if len(e.data) != 24 {
				return errors.New("bitmaps_ext: Invalid extension length")
			}
			h.bitmaps = &bitmapsExt{
				nbBitmaps: be.Uint32(e.data[0:]),
				dirSize:   be.Uint64(e.data[8:]),
				dirOffset: be.Uint64(e.data[16:]),
			}
		case extDataFile:
			h.hasDataFile = true
		}
		h.exts = append(h.exts, headerExt{e.magic, append([]byte(nil), e.data...)})
	}
	if h.backingFileOffset != 0 {
		n := uint64(h.backingFileSize)
		if n > maxBackingName || n > cs-h.backingFileOffset {
			return errors.New("Backing file name too long")
		}
		end := h.backingFileOffset + n
		if end > uint64(len(buf)) {
			return errors.New("Could not read backing file name")
		}
		h.backingFile = string(buf[h.backingFileOffset:end])
	}
	return nil
}

func (h *header) validateCompression() error {
	switch h.compressionType {
	case compressionZlib:
		if h.incompat&incompatCompression != 0 {
			return errors.New("qcow2: Compression type incompatible feature bit must not be set")
		}
	case compressionZstd:
		if h.incompat&incompatCompression == 0 {
			return errors.New("qcow2: Compression type incompatible feature bit must be set")
		}
	default:
		return fmt.Errorf("qcow2: unknown compression type: %d", h.compressionType)
	}
	return nil
}

// headerPrefix is how much of the first cluster Open reads first.
const headerPrefix = 4096

// fitsIn reports whether parseHeaderCluster, given buf (a prefix of the
// first cluster), would read nothing beyond it, and so gives the result
// the whole cluster would: the header fields, the backing file name and
// the extension chain up to its end marker all lie inside buf. When in
// doubt it answers false and the caller reads the whole cluster.
func (h *header) fitsIn(buf []byte) bool {
	n := uint64(len(buf))
	if uint64(h.headerLength) > n {
		return false
	}
	if h.backingFileOffset != 0 && (h.backingFileOffset > n || uint64(h.backingFileSize) > n-h.backingFileOffset) {
		return false
	}
	if h.backingFileOffset != 0 && h.backingFileOffset <= n {
		return true // the extension area ends where the name starts
	}
	for off := uint64(h.headerLength); off+8 <= n; {
		magic := binary.BigEndian.Uint32(buf[off:])
		size := uint64(binary.BigEndian.Uint32(buf[off+4:]))
		off += 8
		if magic == extEnd {
			return size <= n-off
		}
		if size > n-off {
			return false
		}
		off += (size + 7) &^ 7
	}
	return false
}

// parseExtensions walks the extension area [start, end) of the header
// cluster. The returned slices alias buf.
func parseExtensions(buf []byte, start, end uint64) ([]headerExt, error) {
	var out []headerExt
	if end > uint64(len(buf)) {
		end = uint64(len(buf))
	}
	off := start
	for off < end {
		if end-off < 8 {
			return out, errors.New("Header extension too large")
		}
		magic := binary.BigEndian.Uint32(buf[off:])
		n := uint64(binary.BigEndian.Uint32(buf[off+4:]))
		off += 8
		if n > end-off {
			return out, errors.New("Header extension too large")
		}
		if magic == extEnd {
			return out, nil
		}
		out = append(out, headerExt{magic, buf[off : off+n]})
		off += (n + 7) &^ 7
	}
	return out, nil
}

// featureList names the bits of mask from the image's feature name table,
// like QEMU's report_unsupported_feature.
func featureList(exts []headerExt, mask uint64) string {
	var names []string
	for _, e := range exts {
		if e.magic != extFeatureTable {
			continue
		}
		for p := e.data; len(p) >= 48; p = p[48:] {
			if p[0] != 0 || p[1] > 63 || mask&(1<<p[1]) == 0 {
				continue
			}
			name := p[2:48]
			if i := strings.IndexByte(string(name), 0); i >= 0 {
				name = name[:i]
			}
			names = append(names, string(name))
			mask &^= 1 << p[1]
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("Unknown incompatible feature: %x", mask))
	}
	return strings.Join(names, ", ")
}

func featureTableExt() headerExt {
	data := make([]byte, 48*len(qemuFeatures))
	for i, f := range qemuFeatures {
		e := data[48*i:]
		e[0], e[1] = f.typ, f.bit
		copy(e[2:48], f.name)
	}
	return headerExt{extFeatureTable, data}
}

// serialize builds the whole first cluster: fixed header, preserved header
// fields, backing format extension, preserved extensions in their original
// order, end marker, then the backing file name. It fails rather than
// truncate anything when the result does not fit in one cluster. It updates
// h.backingFileOffset/Size to the new layout, so callers work on a copy and
// publish it only once the write succeeded.
func (h *header) serialize() ([]byte, error) {
	cs := 1 << h.clusterBits
	buf := make([]byte, cs)
	be := binary.BigEndian
	be.PutUint32(buf[0:], qcowMagic)
	be.PutUint32(buf[4:], h.version)
	be.PutUint32(buf[20:], h.clusterBits)
	be.PutUint64(buf[24:], h.size)
	be.PutUint32(buf[32:], h.cryptMethod)
	be.PutUint32(buf[36:], h.l1Size)
	be.PutUint64(buf[40:], h.l1TableOffset)
	be.PutUint64(buf[48:], h.refcountTableOffset)
	be.PutUint32(buf[56:], h.refcountTableClusters)
	be.PutUint32(buf[60:], h.nbSnapshots)
	be.PutUint64(buf[64:], h.snapshotsOffset)
	off := v2HeaderLength
	if h.version >= 3 {
		be.PutUint64(buf[72:], h.incompat)
		be.PutUint64(buf[80:], h.compat)
		be.PutUint64(buf[88:], h.autoclear)
		be.PutUint32(buf[96:], h.refcountOrder)
		be.PutUint32(buf[100:], h.headerLength)
		copy(buf[v3HeaderLength:], h.tail)
		if len(h.tail) > 0 {
			buf[v3HeaderLength] = h.compressionType
		}
		off = int(h.headerLength)
	}
	put := func(magic uint32, data []byte) error {
		n := 8 + (len(data)+7)&^7
		if off+n > cs {
			return errors.New("qcow2 header does not fit in the first cluster")
		}
		be.PutUint32(buf[off:], magic)
		be.PutUint32(buf[off+4:], uint32(len(data)))
		copy(buf[off+8:], data)
		off += n
		return nil
	}
	if h.backingFormat != "" {
		if err := put(extBackingFormat, []byte(h.backingFormat)); err != nil {
			return nil, err
		}
	}
	for _, e := range h.exts {
		if err := put(e.magic, e.data); err != nil {
			return nil, err
		}
	}
	if err := put(extEnd, nil); err != nil {
		return nil, err
	}
	h.backingFileOffset, h.backingFileSize = 0, 0
	if h.backingFile != "" {
		if off+len(h.backingFile) > cs {
			return nil, errors.New("qcow2 header does not fit in the first cluster")
		}
		copy(buf[off:], h.backingFile)
		h.backingFileOffset, h.backingFileSize = uint64(off), uint32(len(h.backingFile))
		be.PutUint64(buf[8:], h.backingFileOffset)
		be.PutUint32(buf[16:], h.backingFileSize)
	}
	return buf, nil
}
