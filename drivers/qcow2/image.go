package qcow2

import (
	"errors"
	"sync"
	"sync/atomic"

	"blockd/blockio"
)

// Image is an open qcow2 image. It implements blockio.Device for the guest
// view and is safe for concurrent use (see the package comment for the
// locking model).
type Image struct {
	file      blockio.Device
	debug     func(event string) // the file's debug events (blkdebug); nil: none
	readOnly  bool
	onCorrupt CorruptFunc
	g         geometry
	// version and compression mirror the header for the request paths,
	// which read them before taking any lock; only a compat amend
	// (compat.go) changes them, with every request stopped.
	version     atomic.Uint32
	compression atomic.Uint32

	locks clusterLocks

	mu       sync.Mutex // guards everything below
	hdr      header     // mirrors the on-disk header
	l1       []uint64
	reftable []uint64
	l2c      *metaCache
	rc       *metaCache
	meta     overlapSet
	snaps    []snapshot
	freeHint int64
	allocEnd int64 // clusters from here on are free (alloc.go)
	// freeBytes is where the next compressed stream may go (compwrite.go):
	// inside a host cluster already holding compressed data, or 0.
	freeBytes int64
	lazy      bool

	sliceBytes   int64 // L2 cache entry size
	sliceEntries int64

	l2DependsRef  bool
	refDependsL2  bool
	needDataFlush bool

	prepared bool // autoclear bits cleared before the first write
	// bitmapDir is the bitmap directory once read (bitmaps.go);
	// keepBitmaps: LoadBitmaps flagged them in use, so writes keep the
	// extension valid and StoreBitmaps writes them back.
	bitmapDir        []bitmapEntry
	keepBitmaps      bool
	signaledFatal    bool
	signaledNonFatal bool

	// Read without mu by the request paths (only ever set under mu).
	corrupt atomic.Bool // corrupt bit set: no writes
	broken  atomic.Bool // fatal corruption: no access at all
	closed  atomic.Bool

	size     atomic.Int64 // virtual size
	backing  atomic.Pointer[backingRef]
	bufPool  sync.Pool // *[]byte of cluster size
	comp     compCache
	zeroOnce sync.Once
	zeroBuf  []byte // read-only cluster of zeroes
}

type backingRef struct{ dev blockio.Device }

var (
	errClosed  = errors.New("qcow2: image is closed")
	errNoSpace = errors.New("qcow2: host offset out of range (No space left on device)")
)

// maxHostOffset: L2 entries hold host offsets in bits 9-55.
const maxHostOffset = int64(1) << 56

var _ blockio.Device = (*Image)(nil)

// event raises a debug event on the file, where a blkdebug node may arm
// errors on it (QEMU's BLKDBG_EVENT(bs->file, ...)); without one it is a
// nil check.
func (img *Image) event(name string) {
	if img.debug != nil {
		img.debug(name)
	}
}

// SetBacking sets the device unallocated clusters read from; nil means
// none (they read as zeroes). The backing device may be shorter than the
// image: the part past its end reads as zeroes.
func (img *Image) SetBacking(b blockio.Device) {
	if b == nil {
		img.backing.Store(nil)
		return
	}
	img.backing.Store(&backingRef{b})
}

// BackingFile returns the backing file name and format recorded in the
// header, as stored.
func (img *Image) BackingFile() (name, format string) {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.hdr.backingFile, img.hdr.backingFormat
}

// SetOnCorrupt replaces the corruption callback.
func (img *Image) SetOnCorrupt(f CorruptFunc) {
	img.mu.Lock()
	img.onCorrupt = f
	img.mu.Unlock()
}

// Size returns the virtual disk size.
func (img *Image) Size() (int64, error) { return img.size.Load(), nil }

// Info describes the image like qemu-img info's format-specific part.
type Info struct {
	Version              int
	ClusterSize          int64
	VirtualSize          int64
	BackingFile          string
	BackingFormat        string
	Dirty                bool
	Corrupt              bool
	LazyRefcounts        bool // the header's compatible feature bit
	RefcountBits         int
	ExtendedL2           bool
	CompressionType      string // "zlib" or "zstd"
	IncompatibleFeatures uint64
	CompatibleFeatures   uint64
	AutoclearFeatures    uint64
	Snapshots            int
	ReadOnly             bool
}

// Info returns the image's current properties.
func (img *Image) Info() Info {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := &img.hdr
	ct := "zlib"
	if h.compressionType == compressionZstd {
		ct = "zstd"
	}
	return Info{
		Version:              int(h.version),
		ClusterSize:          img.g.clusterSize,
		VirtualSize:          img.size.Load(),
		BackingFile:          h.backingFile,
		BackingFormat:        h.backingFormat,
		Dirty:                h.incompat&incompatDirty != 0,
		Corrupt:              img.corrupt.Load() || h.incompat&incompatCorrupt != 0,
		LazyRefcounts:        h.compat&compatLazyRefcounts != 0,
		RefcountBits:         int(img.g.refcountBits),
		ExtendedL2:           img.g.extL2,
		CompressionType:      ct,
		IncompatibleFeatures: h.incompat,
		CompatibleFeatures:   h.compat,
		AutoclearFeatures:    h.autoclear,
		Snapshots:            int(h.nbSnapshots),
		ReadOnly:             img.readOnly,
	}
}

// usable reports why a request cannot run (under mu or not: the flags
// only ever go from false to true).
func (img *Image) usable(write bool) error {
	switch {
	case img.closed.Load():
		return errClosed
	case img.broken.Load():
		return errBroken
	case write && img.readOnly:
		return blockio.ErrReadOnly
	case write && img.corrupt.Load():
		return &CorruptError{Msg: "image is marked corrupt; cannot be written (use Check to repair)",
			Offset: -1, Size: -1}
	}
	return nil
}

// prepareWrite runs once before the first modification: autoclear
// features this engine does not maintain get their bits cleared first, as
// the spec requires (QEMU does it at open). Bitmaps are maintained only
// once LoadBitmaps has flagged them in use; otherwise they go stale and
// their bit is cleared too.
func (img *Image) prepareWrite() error {
	if img.prepared {
		return nil
	}
	keep := uint64(0)
	if img.keepBitmaps {
		keep = autoclearBitmaps
	}
	if img.version.Load() >= 3 && img.hdr.autoclear&^keep != 0 {
		h := img.hdr
		h.autoclear &= keep
		if err := img.writeHeader(&h); err != nil {
			return err
		}
	}
	img.prepared = true
	return nil
}

// writeHeader rewrites the first cluster from h and, on success, makes h
// the current header. Everything else is flushed first so the header
// never describes state that is not yet on disk.
func (img *Image) writeHeader(h *header) error {
	nh := *h
	buf, err := nh.serialize()
	if err != nil {
		return err
	}
	if err := img.flushCaches(); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	if err := img.file.WriteAt(buf, 0, 0); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.hdr = nh
	return nil
}

// getBuf returns a cluster-sized scratch buffer.
func (img *Image) getBuf() *[]byte {
	if b, ok := img.bufPool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, img.g.clusterSize)
	return &b
}

func (img *Image) putBuf(b *[]byte) { img.bufPool.Put(b) }

// readFileClamped reads from the image file; the part of the range past
// the end of the file reads as zeroes.
func (img *Image) readFileClamped(p []byte, off int64) error {
	err := img.file.ReadAt(p, off)
	if err == nil || !errors.Is(err, blockio.ErrOutOfRange) {
		return err
	}
	fsz, serr := img.file.Size()
	if serr != nil {
		return serr
	}
	n := int64(0)
	if off < fsz {
		n = fsz - off
		if n > int64(len(p)) {
			n = int64(len(p))
		}
		if err := img.file.ReadAt(p[:n], off); err != nil {
			return err
		}
	}
	clear(p[n:])
	return nil
}

// readBacking reads guest bytes from the backing device, zeroes past its
// end or without one.
func (img *Image) readBacking(p []byte, off int64) error {
	br := img.backing.Load()
	if br == nil {
		clear(p)
		return nil
	}
	// Raised on the file although the read goes to the backing file, as
	// in QEMU.
	img.event("read_backing_aio")
	bsz, err := br.dev.Size()
	if err != nil {
		return err
	}
	n := int64(0)
	if off < bsz {
		n = bsz - off
		if n > int64(len(p)) {
			n = int64(len(p))
		}
		if err := br.dev.ReadAt(p[:n], off); err != nil {
			return err
		}
	}
	clear(p[n:])
	return nil
}

// hasBacking reports whether unallocated clusters may read as non-zero.
func (img *Image) hasBacking() bool {
	return img.backing.Load() != nil || img.hdr.backingFile != ""
}

// Backing returns the device set by SetBacking, or nil (blockio.Backed).
func (img *Image) Backing() blockio.Device {
	if br := img.backing.Load(); br != nil {
		return br.dev
	}
	return nil
}
