package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"blockd/blockio"
)

// OpenOptions are the runtime options of QEMU's qcow2 driver that apply
// to the engine. Zero values mean QEMU 7.2's defaults.
type OpenOptions struct {
	ReadOnly bool
	// Cache sizes in bytes (cache-size, l2-cache-size, l2-cache-entry-size,
	// refcount-cache-size); resolved exactly like QEMU's read_cache_sizes.
	CacheSize, L2CacheSize, L2CacheEntrySize, RefcountCacheSize int64
	// LazyRefcounts overrides the header's lazy refcounts bit (nil: keep).
	LazyRefcounts *bool
	// OnCorrupt receives BLOCK_IMAGE_CORRUPTED-style events.
	OnCorrupt CorruptFunc
	// Repair allows opening an image marked corrupt read-write so that
	// Check(true) can repair it (QEMU's BDRV_O_CHECK). Guest writes stay
	// refused until the repair clears the corrupt bit.
	Repair bool
}

const (
	defaultL2CacheMax   = 32 << 20 // DEFAULT_L2_CACHE_MAX_SIZE (Linux)
	minRefcountCacheEnt = 4        // MIN_REFCOUNT_CACHE_SIZE
	minL2CacheEnt       = 2        // MIN_L2_CACHE_SIZE
)

// Open parses and validates the image on file. The file is not closed by
// the Image; on a read-write open nothing is written until the first
// modification, except the repair of an image left dirty by lazy
// refcounts.
func Open(file blockio.Device, o OpenOptions) (*Image, error) {
	fsz, err := file.Size()
	if err != nil {
		return nil, err
	}
	head := make([]byte, min(fsz, qemuHeaderLength))
	if err := file.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("Could not read qcow2 header: %w", err)
	}
	h, err := parseFixedHeader(head)
	if err != nil {
		return nil, err
	}
	cs := int64(1) << h.clusterBits
	// The header, its extensions and the backing file name nearly always
	// sit in the first few hundred bytes: read a page, and the whole
	// cluster only when what the parse needs may lie beyond it (a cluster
	// per open dominated opening deep chains).
	hc := make([]byte, min(fsz, cs, headerPrefix))
	if err := file.ReadAt(hc, 0); err != nil {
		return nil, fmt.Errorf("Could not read qcow2 header: %w", err)
	}
	if int64(len(hc)) < min(fsz, cs) && !h.fitsIn(hc) {
		hc = make([]byte, min(fsz, cs))
		if err := file.ReadAt(hc, 0); err != nil {
			return nil, fmt.Errorf("Could not read qcow2 header: %w", err)
		}
	}
	if err := parseHeaderCluster(h, hc); err != nil {
		return nil, err
	}
	if err := validateFeatures(h, o); err != nil {
		return nil, err
	}
	img := &Image{
		file:      file,
		debug:     blockio.DebugEvents(file),
		readOnly:  o.ReadOnly,
		onCorrupt: o.OnCorrupt,
		hdr:       *h,
		meta:      newOverlapSet(),
		g:         newGeometry(uint(h.clusterBits), uint(h.refcountOrder), h.incompat&incompatExtL2 != 0),
	}
	img.size.Store(int64(h.size))
	img.version.Store(h.version)
	img.compression.Store(uint32(h.compressionType))
	img.corrupt.Store(h.incompat&incompatCorrupt != 0)
	if err := img.loadTables(fsz, o.Repair); err != nil {
		return nil, err
	}
	if err := img.setupCaches(o); err != nil {
		return nil, err
	}
	img.lazy = h.compat&compatLazyRefcounts != 0
	if o.LazyRefcounts != nil {
		img.lazy = *o.LazyRefcounts
	}
	if img.lazy && h.version < 3 {
		return nil, errors.New("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level")
	}
	if !o.ReadOnly && !o.Repair && h.incompat&incompatDirty != 0 {
		// Refcounts may be stale (lazy refcounts and a crash): rebuild
		// them before anything allocates.
		res, err := img.Check(true)
		if err == nil && res.CheckErrors > 0 {
			err = errors.New("check errors")
		}
		if err != nil {
			return nil, fmt.Errorf("Could not repair dirty image: %w", err)
		}
	}
	return img, nil
}

// validateFeatures refuses what the engine cannot handle (unknown
// incompatible bits were refused while parsing).
func validateFeatures(h *header, o OpenOptions) error {
	if h.incompat&incompatDataFile != 0 {
		return errors.New("qcow2: external data files are not supported")
	}
	if h.incompat&incompatCorrupt != 0 && !o.ReadOnly && !o.Repair {
		return errors.New("qcow2: Image is corrupt; cannot be opened read/write")
	}
	if h.incompat&incompatExtL2 != 0 && h.clusterBits < minClusterBits+5 {
		return fmt.Errorf("Unsupported subcluster size: %d", (1<<h.clusterBits)/subclusters)
	}
	if h.refcountOrder > 6 {
		return errors.New("Reference count entry width too large; may not exceed 64 bits")
	}
	if h.cryptMethod != 0 {
		return fmt.Errorf("qcow2: encrypted images are not supported (encryption method %d)", h.cryptMethod)
	}
	return nil
}

// validateTable is qcow2_validate_table plus a check that the table lies
// inside the file (QEMU would read zeroes past the end; a clear error is
// better than a table of zeroes).
func validateTable(offset, entries, entryLen, maxBytes, fsz, cs int64, name string) error {
	if entries > maxBytes/entryLen {
		return fmt.Errorf("%s too large", name)
	}
	if offset < 0 || math.MaxInt64-entries*entryLen < offset || offset&(cs-1) != 0 {
		return fmt.Errorf("%s offset invalid", name)
	}
	if entries > 0 && offset+entries*entryLen > fsz {
		return fmt.Errorf("%s lies beyond the end of the file (offset %#x, %d bytes, file size %d)",
			name, offset, entries*entryLen, fsz)
	}
	return nil
}

// loadTables validates and reads the L1 table, the refcount table and
// the snapshot table, and fills the overlap set.
func (img *Image) loadTables(fsz int64, repair bool) error {
	h, g := &img.hdr, &img.g
	cs := g.clusterSize
	if h.refcountTableClusters == 0 {
		return errors.New("Image does not contain a reference count table")
	}
	if h.refcountTableOffset > math.MaxInt64 || h.l1TableOffset > math.MaxInt64 ||
		h.snapshotsOffset > math.MaxInt64 {
		return errors.New("Image is not in qcow2 format: table offset out of range")
	}
	if err := validateTable(int64(h.refcountTableOffset), int64(h.refcountTableClusters), cs,
		maxReftableBytes, fsz, cs, "Reference count table"); err != nil {
		return err
	}
	if err := validateTable(int64(h.snapshotsOffset), int64(h.nbSnapshots), snapshotHdrSize,
		snapshotHdrSize*maxSnapshots, math.MaxInt64, cs, "Snapshot table"); err != nil && !repair {
		return err
	}
	if err := validateTable(int64(h.l1TableOffset), int64(h.l1Size), 8, maxL1Bytes, fsz, cs,
		"Active L1 table"); err != nil {
		return err
	}
	if h.size > math.MaxInt64/2 || g.l1EntriesFor(int64(h.size)) > math.MaxInt32 {
		return errors.New("Image is too big")
	}
	if int64(h.l1Size) < g.l1EntriesFor(int64(h.size)) {
		return errors.New("L1 table is too small")
	}
	// The header cluster holds nothing else; a table there is corrupt
	// metadata, not a layout QEMU ever writes.
	if h.refcountTableOffset < uint64(cs) {
		return errors.New("Reference count table offset invalid: overlaps the image header")
	}
	if h.l1Size > 0 && h.l1TableOffset < uint64(cs) {
		return errors.New("Active L1 table offset invalid: overlaps the image header")
	}
	l1, err := readTable(img.file, int64(h.l1TableOffset), int64(h.l1Size))
	if err != nil {
		return fmt.Errorf("Could not read L1 table: %w", err)
	}
	img.event("reftable_load")
	rt, err := readTable(img.file, int64(h.refcountTableOffset), int64(h.refcountTableClusters)*cs/8)
	if err != nil {
		return fmt.Errorf("Could not read refcount table: %w", err)
	}
	img.l1, img.reftable = l1, rt
	img.allocEnd = g.clustersFor(fsz)
	snapEnd := int64(0)
	if h.nbSnapshots > 0 {
		snaps, end, err := readSnapshots(img.file, int64(h.snapshotsOffset), int(h.nbSnapshots), fsz)
		if err != nil && !repair {
			return err
		}
		img.snaps = snaps
		if err == nil {
			snapEnd = end
		}
	}
	img.fillOverlap(fsz, snapEnd)
	return nil
}

// fillOverlap fills the overlap set from the header, the L1 and refcount
// tables and the snapshot list; snapEnd is where the snapshot table ends
// (0: unknown, not protected).
func (img *Image) fillOverlap(fsz, snapEnd int64) {
	h, g := &img.hdr, &img.g
	cs := g.clusterSize
	m := &img.meta
	m.setRange(metaHeader, 0, cs)
	if h.l1Size > 0 {
		m.setRange(metaL1, int64(h.l1TableOffset), int64(h.l1TableOffset)+g.clustersFor(int64(h.l1Size)*8)*cs)
	}
	m.setRange(metaReftable, int64(h.refcountTableOffset),
		int64(h.refcountTableOffset)+int64(h.refcountTableClusters)*cs)
	for _, e := range img.l1 {
		if off := int64(e & l1eOffsetMask); off != 0 && off&(cs-1) == 0 && off < fsz {
			m.clusters[off>>g.clusterBits] = metaL2
		}
	}
	for _, e := range img.reftable {
		if off := int64(e & reftOffsetMask); off != 0 && off&(cs-1) == 0 && off < fsz {
			m.clusters[off>>g.clusterBits] = metaRefblock
		}
	}
	if snapEnd > 0 {
		m.setRange(metaSnapTable, int64(h.snapshotsOffset), roundUp(snapEnd, cs))
	}
	for _, s := range img.snaps {
		if s.l1Size > 0 && s.l1Offset&(cs-1) == 0 {
			m.addRange(metaInactiveL1, s.l1Offset, s.l1Offset+roundUp(s.l1Size*8, cs))
		}
	}
	if b := h.bitmaps; b != nil && h.autoclear&autoclearBitmaps != 0 && b.dirSize > 0 &&
		b.dirOffset&uint64(cs-1) == 0 && b.dirSize < 64<<20 && b.dirOffset < math.MaxInt64/2 {
		m.setRange(metaBitmapDir, int64(b.dirOffset), int64(b.dirOffset)+roundUp(int64(b.dirSize), cs))
	}
}

// readTable reads n big-endian 64-bit entries at off.
func readTable(f blockio.Device, off, n int64) ([]uint64, error) {
	if n == 0 {
		return nil, nil
	}
	// Read straight into the table's memory and convert in place: a
	// second buffer of the same size doubled the allocation (and the page
	// faults filling it) of every open, a cluster per refcount table.
	t := make([]uint64, n)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&t[0])), n*8)
	if err := f.ReadAt(raw, off); err != nil {
		return nil, err
	}
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	return t, nil
}

func roundUp(x, a int64) int64 { return (x + a - 1) / a * a }

// setupCaches sizes the L2 and refcount caches (read_cache_sizes).
func (img *Image) setupCaches(o OpenOptions) error {
	g := &img.g
	cs := g.clusterSize
	minRC := minRefcountCacheEnt * cs
	maxL2Cache := roundUp(g.clustersFor(img.size.Load())*g.l2EntryBytes, cs)
	l2Setting := int64(defaultL2CacheMax)
	if o.L2CacheSize > 0 {
		l2Setting = o.L2CacheSize
	}
	rcSize := o.RefcountCacheSize
	entrySize := cs
	if o.L2CacheEntrySize > 0 {
		entrySize = o.L2CacheEntrySize
	}
	l2Size := min(maxL2Cache, l2Setting)
	if o.CacheSize > 0 {
		switch {
		case o.L2CacheSize > 0 && o.RefcountCacheSize > 0:
			return errors.New("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time")
		case o.L2CacheSize > 0 && l2Setting > o.CacheSize:
			return errors.New("l2-cache-size may not exceed cache-size")
		case rcSize > o.CacheSize:
			return errors.New("refcount-cache-size may not exceed cache-size")
		}
		switch {
		case o.L2CacheSize > 0:
			rcSize = o.CacheSize - l2Size
		case o.RefcountCacheSize > 0:
			l2Size = o.CacheSize - rcSize
		case o.CacheSize >= maxL2Cache+minRC:
			l2Size = maxL2Cache
			rcSize = o.CacheSize - l2Size
		default:
			rcSize = min(o.CacheSize, minRC)
			l2Size = o.CacheSize - rcSize
		}
	}
	if l2Size < maxL2Cache && o.L2CacheEntrySize == 0 {
		entrySize = min(cs, 4096)
	}
	if entrySize < 1<<minClusterBits || entrySize > cs || entrySize&(entrySize-1) != 0 {
		return fmt.Errorf("L2 cache entry size must be a power of two between %d and the cluster size (%d)",
			1<<minClusterBits, cs)
	}
	l2Entries := max(l2Size/entrySize, minL2CacheEnt)
	rcEntries := max(rcSize/cs, minRefcountCacheEnt)
	if l2Entries > math.MaxInt32 || rcEntries > math.MaxInt32 {
		return errors.New("L2 cache size too big")
	}
	img.sliceBytes = entrySize
	img.sliceEntries = entrySize / g.l2EntryBytes
	img.l2c = newMetaCache(int(entrySize), int(l2Entries))
	img.rc = newMetaCache(int(cs), int(rcEntries))
	return nil
}
