package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"blockd/blockio"
	"blockd/dirtybitmap"
)

// Persistent dirty bitmaps: the bitmaps extension of qcow2.txt. The
// header extension points at the bitmap directory (one entry per bitmap:
// its table, flags, granularity, name); each table entry points at one
// cluster of bitmap data (bit j of byte i is granule 8i+j) or is 0 (all
// clean; 1 with no offset: all dirty). Autoclear bit 0 says the
// extension is valid: a writer that does not maintain bitmaps clears it.
//
// The engine keeps the directory in memory (img.bitmapDir) once
// LoadBitmaps has read it. While the image is open read-write the
// bitmaps it loaded are flagged in-use on disk, so a crash leaves them
// marked as not to be trusted; StoreBitmaps writes them back clean. Every
// directory change writes a new directory and new tables in fresh
// clusters, points the header at them, and only then frees the old ones,
// so the image is consistent at every instant (leaked clusters at most).

const (
	bmeInUse         = 1 << 0
	bmeAuto          = 1 << 1
	bmeExtraCompat   = 1 << 2
	bmeReservedFlags = ^uint32(bmeInUse | bmeAuto | bmeExtraCompat)
	bmeTypeDirty     = 1

	bmeMinGranBits = 9
	bmeMaxGranBits = 31
	bmeMaxNameSize = 1023
	bmeMaxTable    = 0x8000000  // entries
	bmeMaxPhys     = 0x20000000 // bytes of bitmap data
	maxBitmaps     = 65535
	maxBitmapDir   = 1024 * maxBitmaps

	bmeTableReserved = 0xff000000000001fe
	bmeTableAllOnes  = 1
)

// bitmapEntry is one bitmap directory entry.
type bitmapEntry struct {
	tableOffset int64
	tableSize   uint32
	flags       uint32
	typ         uint8
	granBits    uint8
	name        string
	extra       []byte
}

func (e *bitmapEntry) dirBytes() int64 {
	return roundUp(bitmapEntryBytes+int64(len(e.extra))+int64(len(e.name)), 8)
}

// StoredBitmap is a persistent bitmap as the image holds it.
type StoredBitmap struct {
	Name        string
	Granularity uint64
	// Enabled is the auto flag: the bitmap records writes.
	Enabled bool
	// InUse: found in use at load, so its bits cannot be trusted (QEMU's
	// inconsistent); Bits is then clean. StoreBitmaps leaves such a
	// bitmap on disk as it is.
	InUse bool
	Bits  *dirtybitmap.Bitmap
}

// BitmapInfo is what qemu-img info lists of a stored bitmap.
type BitmapInfo struct {
	Name        string
	Granularity uint64
	InUse, Auto bool
}

// Bitmaps lists the bitmap directory as it is on disk (flags included),
// or nil when the image has no valid bitmaps extension.
func (img *Image) Bitmaps() ([]BitmapInfo, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	dir, err := img.loadedDir()
	if err != nil {
		return nil, err
	}
	var out []BitmapInfo
	for _, e := range dir {
		out = append(out, BitmapInfo{Name: e.name, Granularity: 1 << e.granBits,
			InUse: e.flags&bmeInUse != 0, Auto: e.flags&bmeAuto != 0})
	}
	return out, nil
}

// bitmapsValid reports whether the header carries a bitmaps extension
// the autoclear bit vouches for.
func (img *Image) bitmapsValid() bool {
	b := img.hdr.bitmaps
	return img.version.Load() >= 3 && b != nil && img.hdr.autoclear&autoclearBitmaps != 0 && b.nbBitmaps > 0
}

// loadedDir reads the directory once (under mu).
func (img *Image) loadedDir() ([]bitmapEntry, error) {
	if img.bitmapDir != nil || !img.bitmapsValid() {
		return img.bitmapDir, nil
	}
	dir, err := img.readBitmapDir()
	if err != nil {
		return nil, err
	}
	img.bitmapDir = dir
	return dir, nil
}

// readBitmapDir parses and checks the directory (bitmap_list_load).
func (img *Image) readBitmapDir() ([]bitmapEntry, error) {
	b := img.hdr.bitmaps
	g := &img.g
	if b.dirSize == 0 || b.dirSize > maxBitmapDir || b.dirOffset&uint64(g.clusterSize-1) != 0 {
		return nil, errors.New("Bitmap directory is invalid")
	}
	if b.nbBitmaps > maxBitmaps {
		return nil, errors.New("Bitmap directory is invalid")
	}
	buf := make([]byte, b.dirSize)
	if err := img.file.ReadAt(buf, int64(b.dirOffset)); err != nil {
		return nil, fmt.Errorf("Failed to read bitmap directory: %w", err)
	}
	be := binary.BigEndian
	var dir []bitmapEntry
	p := buf
	for i := uint32(0); i < b.nbBitmaps; i++ {
		if len(p) < bitmapEntryBytes {
			return nil, errors.New("Broken bitmap directory")
		}
		e := bitmapEntry{
			tableOffset: int64(be.Uint64(p[0:])),
			tableSize:   be.Uint32(p[8:]),
			flags:       be.Uint32(p[12:]),
			typ:         p[16],
			granBits:    p[17],
		}
		nameLen, extraLen := int64(be.Uint16(p[18:])), int64(be.Uint32(p[20:]))
		n := roundUp(bitmapEntryBytes+extraLen+nameLen, 8)
		if extraLen > int64(len(p)) || n > int64(len(p)) {
			return nil, errors.New("Broken bitmap directory")
		}
		e.extra = append([]byte(nil), p[bitmapEntryBytes:bitmapEntryBytes+extraLen]...)
		e.name = string(p[bitmapEntryBytes+extraLen : bitmapEntryBytes+extraLen+nameLen])
		if err := img.checkBitmapEntry(&e); err != nil {
			return nil, err
		}
		for _, o := range dir {
			if o.name == e.name {
				return nil, errors.New("Broken bitmap directory")
			}
		}
		dir = append(dir, e)
		p = p[n:]
	}
	if len(p) != 0 {
		return nil, errors.New("Broken bitmap directory")
	}
	return dir, nil
}

// bitmapTableSize is the number of table entries for a bitmap over size
// bytes: its data serialized as 64-bit words, in clusters.
func (img *Image) bitmapTableSize(size int64, granBits uint) int64 {
	granules := (size + (1 << granBits) - 1) >> granBits
	return img.g.clustersFor((granules + 63) / 64 * 8)
}

// checkBitmapEntry is check_dir_entry.
func (img *Image) checkBitmapEntry(e *bitmapEntry) error {
	g := &img.g
	fail := e.tableSize == 0 || e.tableOffset == 0 || e.tableOffset&(g.clusterSize-1) != 0 ||
		e.tableSize > bmeMaxTable || int64(e.tableSize)*g.clusterSize > bmeMaxPhys ||
		e.flags&bmeReservedFlags != 0 || e.granBits > bmeMaxGranBits || e.granBits < bmeMinGranBits ||
		e.typ != bmeTypeDirty || len(e.name) == 0 || len(e.name) > bmeMaxNameSize ||
		(len(e.extra) != 0 && e.flags&bmeExtraCompat == 0)
	// A bitmap in use may have any size (one not stored after a resize);
	// a clean one must cover the image.
	if !fail && e.flags&bmeInUse == 0 &&
		uint64(img.size.Load()) > (uint64(e.tableSize)*uint64(img.g.clusterSize)*8)<<e.granBits {
		fail = true
	}
	if fail {
		return fmt.Errorf("Bitmap '%s' doesn't satisfy the constraints", e.name)
	}
	return nil
}

// LoadBitmaps reads every stored bitmap (qcow2_load_dirty_bitmaps). On a
// read-write image the bitmaps not already in use are then flagged in
// use on disk, and from then on the engine keeps the extension valid
// across writes: the caller must give them back with StoreBitmaps before
// Close. Without a call to LoadBitmaps a write drops the extension's
// autoclear bit instead, as any writer that does not maintain bitmaps
// must.
func (img *Image) LoadBitmaps() ([]StoredBitmap, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	dir, err := img.loadedDir()
	if err != nil {
		return nil, err
	}
	size := img.size.Load()
	var out []StoredBitmap
	for _, e := range dir {
		sb := StoredBitmap{Name: e.name, Granularity: 1 << e.granBits, Enabled: e.flags&bmeAuto != 0,
			InUse: e.flags&bmeInUse != 0, Bits: dirtybitmap.New(size, 1<<e.granBits)}
		if !sb.InUse {
			if err := img.readBitmapData(&e, sb.Bits); err != nil {
				return nil, err
			}
		}
		out = append(out, sb)
	}
	if img.readOnly || len(dir) == 0 {
		return out, nil
	}
	if err := img.markBitmapsInUse(); err != nil {
		return nil, err
	}
	return out, nil
}

// markBitmapsInUse flags every stored bitmap in use on disk and keeps
// the extension valid across writes from then on (under mu).
func (img *Image) markBitmapsInUse() error {
	img.keepBitmaps = true
	nd := make([]bitmapEntry, len(img.bitmapDir))
	changed := false
	for i, e := range img.bitmapDir {
		if e.flags&bmeInUse == 0 {
			e.flags |= bmeInUse
			changed = true
		}
		nd[i] = e
	}
	if !changed {
		return nil
	}
	return img.writeBitmapDir(nd, nil)
}

// ReopenBitmapsRW follows a reopen from read-only to read-write
// (qcow2_reopen_bitmaps_rw): the loaded bitmaps are flagged in use.
func (img *Image) ReopenBitmapsRW() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.readOnly {
		return nil
	}
	if _, err := img.loadedDir(); err != nil {
		return err
	}
	return img.markBitmapsInUse()
}

func (img *Image) readBitmapData(e *bitmapEntry, bm *dirtybitmap.Bitmap) error {
	g := &img.g
	table, err := readTable(img.file, e.tableOffset, int64(e.tableSize))
	if err != nil {
		return fmt.Errorf("Could not read bitmap '%s': %w", e.name, err)
	}
	buf := make([]byte, g.clusterSize)
	ones := bytes.Repeat([]byte{0xff}, int(g.clusterSize))
	for i, t := range table {
		off := int64(t & l2eOffsetMask)
		if t&bmeTableReserved != 0 || off&(g.clusterSize-1) != 0 || (off != 0 && t&bmeTableAllOnes != 0) {
			return fmt.Errorf("Bitmap '%s' table entry %d is invalid", e.name, i)
		}
		switch {
		case off == 0 && t&bmeTableAllOnes != 0:
			bm.SetBytes(int64(i)*g.clusterSize, ones)
		case off != 0:
			if err := img.file.ReadAt(buf, off); err != nil {
				return fmt.Errorf("Could not read bitmap '%s': %w", e.name, err)
			}
			bm.SetBytes(int64(i)*g.clusterSize, buf)
		}
	}
	return nil
}

// StoreBitmaps writes the given bitmaps into the image, clean (not in
// use), each replacing the stored one of the same name
// (qcow2_store_persistent_dirty_bitmaps). Bitmaps found in use at load
// (InUse) and stored bitmaps not given stay on disk as they are.
func (img *Image) StoreBitmaps(list []StoredBitmap) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	// A v2 image holds no bitmaps: those loaded before a downgrade were
	// dropped with it (compat.go).
	if img.readOnly || img.version.Load() < 3 {
		return nil
	}
	dir, err := img.loadedDir()
	if err != nil {
		return err
	}
	if len(list) == 0 && !img.keepBitmaps {
		return nil
	}
	nd := append([]bitmapEntry(nil), dir...)
	var freed []bitmapEntry
	var written []bitmapEntry
	undo := func() {
		for _, e := range written {
			_ = img.freeBitmapClusters(&e)
		}
	}
	for _, sb := range list {
		if sb.InUse {
			continue
		}
		e, err := img.writeBitmapData(sb)
		if err != nil {
			undo()
			return err
		}
		written = append(written, e)
		i := indexOfBitmap(nd, sb.Name)
		if i < 0 {
			nd = append(nd, e)
			continue
		}
		freed = append(freed, nd[i])
		nd[i] = e
	}
	if err := img.writeBitmapDir(nd, freed); err != nil {
		undo()
		return err
	}
	return nil
}

func indexOfBitmap(dir []bitmapEntry, name string) int {
	for i, e := range dir {
		if e.name == name {
			return i
		}
	}
	return -1
}

// writeBitmapData writes a bitmap's data clusters and table into fresh
// clusters and returns its directory entry.
func (img *Image) writeBitmapData(sb StoredBitmap) (bitmapEntry, error) {
	g := &img.g
	granBits := uint(bits.TrailingZeros64(sb.Granularity))
	e := bitmapEntry{typ: bmeTypeDirty, granBits: uint8(granBits), name: sb.Name}
	if sb.Enabled {
		e.flags = bmeAuto
	}
	n := img.bitmapTableSize(img.size.Load(), granBits)
	e.tableSize = uint32(n)
	data := sb.Bits.Bytes()
	table := make([]byte, n*8)
	var clusters []int64
	fail := func(err error) (bitmapEntry, error) {
		for _, c := range clusters {
			_ = img.freeClusters(c, 1, false)
		}
		return bitmapEntry{}, err
	}
	for i := int64(0); i < n; i++ {
		lo := min(i*g.clusterSize, int64(len(data)))
		chunk := data[lo:min(lo+g.clusterSize, int64(len(data)))]
		if blockio.AllZero(chunk) {
			continue
		}
		c, err := img.allocRun(1)
		if err != nil {
			return fail(err)
		}
		clusters = append(clusters, c)
		buf := make([]byte, g.clusterSize)
		copy(buf, chunk)
		if err := img.writeMetaCluster(buf, c<<g.clusterBits); err != nil {
			return fail(err)
		}
		binary.BigEndian.PutUint64(table[i*8:], uint64(c<<g.clusterBits))
	}
	tc := g.clustersFor(int64(len(table)))
	c, err := img.allocRun(tc)
	if err != nil {
		return fail(err)
	}
	clusters = append(clusters, c)
	for k := int64(1); k < tc; k++ {
		clusters = append(clusters, c+k)
	}
	e.tableOffset = c << g.clusterBits
	if err := img.writeMetaCluster(table, e.tableOffset); err != nil {
		return fail(err)
	}
	return e, nil
}

// writeMetaCluster writes freshly allocated metadata, refusing to
// overwrite existing metadata.
func (img *Image) writeMetaCluster(buf []byte, off int64) error {
	if k := img.meta.check(&img.g, off, int64(len(buf)), metaNone); k != metaNone {
		return img.corruptf(true, off, int64(len(buf)), "%s", overlapMessage(k))
	}
	return img.file.WriteAt(buf, off, 0)
}

// freeBitmapClusters drops a stored bitmap's table and data clusters.
func (img *Image) freeBitmapClusters(e *bitmapEntry) error {
	g := &img.g
	table, err := readTable(img.file, e.tableOffset, int64(e.tableSize))
	if err != nil {
		return err
	}
	for _, t := range table {
		if off := int64(t & l2eOffsetMask); off != 0 {
			if err := img.freeClusters(off>>g.clusterBits, 1, false); err != nil {
				return err
			}
		}
	}
	return img.freeClusters(e.tableOffset>>g.clusterBits, g.clustersFor(int64(e.tableSize)*8), false)
}

// writeBitmapDir makes dir the image's bitmap directory: written to fresh
// clusters, the refcounts flushed, the header pointed at it (extension
// and autoclear bit in one write), then the old directory and the
// bitmaps in freed released.
func (img *Image) writeBitmapDir(dir []bitmapEntry, freed []bitmapEntry) error {
	g := &img.g
	var buf []byte
	be := binary.BigEndian
	for _, e := range dir {
		var h [bitmapEntryBytes]byte
		be.PutUint64(h[0:], uint64(e.tableOffset))
		be.PutUint32(h[8:], e.tableSize)
		be.PutUint32(h[12:], e.flags)
		h[16], h[17] = e.typ, e.granBits
		be.PutUint16(h[18:], uint16(len(e.name)))
		be.PutUint32(h[20:], uint32(len(e.extra)))
		buf = append(buf, h[:]...)
		buf = append(buf, e.extra...)
		buf = append(buf, e.name...)
		for len(buf)%8 != 0 {
			buf = append(buf, 0)
		}
	}
	if len(buf) > maxBitmapDir {
		return errors.New("Bitmap directory is too large")
	}
	var off int64
	if len(buf) > 0 {
		c, err := img.allocRun(g.clustersFor(int64(len(buf))))
		if err != nil {
			return err
		}
		off = c << g.clusterBits
		if err := img.writeMetaCluster(buf, off); err != nil {
			_ = img.freeClusters(c, g.clustersFor(int64(len(buf))), false)
			return err
		}
	}
	old := img.hdr.bitmaps
	oldValid := img.bitmapsValid()
	h := img.hdr
	h.exts = nil
	for _, x := range img.hdr.exts {
		if x.magic != extBitmaps {
			h.exts = append(h.exts, x)
		}
	}
	h.bitmaps = nil
	if len(dir) > 0 {
		var d [24]byte
		be.PutUint32(d[0:], uint32(len(dir)))
		be.PutUint64(d[8:], uint64(len(buf)))
		be.PutUint64(d[16:], uint64(off))
		// The bitmaps extension goes first, where QEMU writes it.
		h.exts = append([]headerExt{{extBitmaps, d[:]}}, h.exts...)
		h.bitmaps = &bitmapsExt{nbBitmaps: uint32(len(dir)), dirSize: uint64(len(buf)), dirOffset: uint64(off)}
		h.autoclear |= autoclearBitmaps
	} else {
		h.autoclear &^= autoclearBitmaps
	}
	if err := img.writeHeader(&h); err != nil {
		if off != 0 {
			_ = img.freeClusters(off>>g.clusterBits, g.clustersFor(int64(len(buf))), false)
		}
		return err
	}
	img.bitmapDir = dir
	img.meta.removeRanges(metaBitmapDir)
	if off != 0 {
		img.meta.setRange(metaBitmapDir, off, off+roundUp(int64(len(buf)), g.clusterSize))
	}
	var err error
	if old != nil && oldValid && old.dirOffset != 0 {
		err = img.freeClusters(int64(old.dirOffset)>>g.clusterBits, g.clustersFor(int64(old.dirSize)), false)
	}
	for _, e := range freed {
		if ferr := img.freeBitmapClusters(&e); err == nil {
			err = ferr
		}
	}
	return err
}

// RemoveBitmap deletes a stored bitmap, if there is one of that name
// (qcow2_co_remove_persistent_dirty_bitmap).
func (img *Image) RemoveBitmap(name string) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	dir, err := img.loadedDir()
	if err != nil {
		return err
	}
	i := indexOfBitmap(dir, name)
	if i < 0 {
		return nil
	}
	nd := append(append([]bitmapEntry(nil), dir[:i]...), dir[i+1:]...)
	return img.writeBitmapDir(nd, []bitmapEntry{dir[i]})
}

// CanStoreBitmap is qcow2_co_can_store_new_dirty_bitmap: whether a new
// persistent bitmap fits the image, with QEMU's texts (without the
// "Can't make bitmap ... persistent" prefix the caller adds).
func (img *Image) CanStoreBitmap(name string, granularity uint64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.version.Load() < 3 {
		return errors.New("Cannot store dirty bitmaps in qcow2 v2 files")
	}
	granBits := bits.TrailingZeros64(granularity)
	if granBits > bmeMaxGranBits {
		return fmt.Errorf("Granularity exceeds maximum (%d bytes)", uint64(1)<<bmeMaxGranBits)
	}
	if granBits < bmeMinGranBits {
		return fmt.Errorf("Granularity is under minimum (%d bytes)", 1<<bmeMinGranBits)
	}
	size := img.size.Load()
	bytes := ((size+int64(granularity)-1)/int64(granularity) + 7) / 8
	if bytes > bmeMaxPhys || bytes > bmeMaxTable*img.g.clusterSize {
		return errors.New("Too much space will be occupied by the bitmap. Use larger granularity")
	}
	if len(name) > bmeMaxNameSize {
		return fmt.Errorf("Name length exceeds maximum (%d characters)", bmeMaxNameSize)
	}
	dir, err := img.loadedDir()
	if err != nil {
		return err
	}
	if len(dir) == 0 {
		return nil
	}
	if len(dir) >= maxBitmaps {
		return errors.New("Maximum number of persistent bitmaps is already reached")
	}
	var dirSize int64
	for _, e := range dir {
		dirSize += e.dirBytes()
	}
	if dirSize+roundUp(bitmapEntryBytes+int64(len(name)), 8) > maxBitmapDir {
		return errors.New("Not enough space in the bitmap directory")
	}
	if indexOfBitmap(dir, name) >= 0 {
		return errors.New("Bitmap with the same name is already stored")
	}
	return nil
}
