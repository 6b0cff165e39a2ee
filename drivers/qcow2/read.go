package qcow2

import (
	"errors"

	"blockd/blockio"
)

// Reads and block status. A read is split at L2 slice boundaries; within
// a slice each extent (run of bytes with one state and contiguous host
// offsets) is looked up under mu and then read with mu released, with the
// slice's guest clusters locked shared so that the mapping cannot change
// under the copy. Contiguous allocated clusters become one file read.

// ReadAt reads guest bytes.
func (img *Image) ReadAt(p []byte, off int64) error {
	if err := blockio.CheckRange(off, int64(len(p)), img.size.Load()); err != nil {
		return err
	}
	if err := img.usable(false); err != nil {
		return err
	}
	for len(p) > 0 {
		n := img.chunkLen(off, int64(len(p)))
		if err := img.readChunk(p[:n], off); err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

// chunkLen limits a request to the guest range of one L2 slice.
func (img *Image) chunkLen(off, n int64) int64 {
	span := img.sliceEntries << img.g.clusterBits
	if rest := span - off&(span-1); n > rest {
		return rest
	}
	return n
}

func (img *Image) stripes(off, n int64) stripeSet {
	return stripesFor(off>>img.g.clusterBits, (off+n-1)>>img.g.clusterBits)
}

func (img *Image) readChunk(p []byte, off int64) error {
	set := img.stripes(off, int64(len(p)))
	img.locks.lock(set, false)
	defer img.locks.unlock(set, false)
	for len(p) > 0 {
		ext, err := img.lookupExtent(off, int64(len(p)))
		if err != nil {
			return err
		}
		q := p[:ext.n]
		switch ext.k {
		case kNormal:
			err = img.file.ReadAt(q, ext.host)
			if errors.Is(err, blockio.ErrOutOfRange) {
				// QEMU leaves some clusters short at the end of the file
				// (subcluster writes): the rest reads as zeroes.
				err = img.readFileClamped(q, ext.host)
			}
		case kZero, kZeroAlloc:
			clear(q)
		case kUnalloc, kUnallocAlloc:
			err = img.readBacking(q, off)
		case kCompressed:
			img.event("read_compressed")
			err = img.readCompressed(q, ext.entry, img.g.inCluster(off))
		}
		if err != nil {
			return err
		}
		p = p[ext.n:]
		off += ext.n
	}
	return nil
}

// StartWriteback starts the file's write-back: guest data is written
// through to the file as it comes, metadata only at Flush.
func (img *Image) StartWriteback() error { return blockio.StartWriteback(img.file) }

// lookupExtent maps the extent at off (at most n bytes) under mu; the
// caller holds the range's stripes so the mapping stays while it uses it.
func (img *Image) lookupExtent(off, n int64) (extent, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(false); err != nil {
		return extent{}, err
	}
	return img.mapExtent(off, n)
}

// SendRange lends sink the file range of guest bytes that lie in
// contiguous allocated clusters of this layer, with the clusters locked
// shared as a read holds them, so that no write can move them meanwhile.
// Anything else (zero, compressed, unallocated, across an L2 slice or a
// discontiguity) is ErrNotSupported: the caller reads instead.
func (img *Image) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	if err := blockio.CheckRange(off, n, img.size.Load()); err != nil {
		return err
	}
	if n == 0 || img.chunkLen(off, n) < n {
		return blockio.ErrNotSupported
	}
	set := img.stripes(off, n)
	img.locks.lock(set, false)
	defer img.locks.unlock(set, false)
	ext, err := img.lookupExtent(off, n)
	if err != nil {
		return err
	}
	if ext.k != kNormal || ext.n < n {
		return blockio.ErrNotSupported
	}
	return blockio.SendRange(img.file, ext.host, n, sink)
}

// BlockStatus reports the state of guest bytes from off in this layer
// only: allocated data (Data|Allocated|OffsetValid), zero clusters
// (Zero|Allocated, plus OffsetValid when preallocated, like QEMU),
// compressed clusters (Data|Allocated) and unallocated ranges (no flags:
// the caller asks the backing file). Runs with the same status are
// coalesced up to length.
func (img *Image) BlockStatus(off, length int64) (blockio.Status, error) {
	size := img.size.Load()
	if off < 0 || off >= size || length <= 0 {
		return blockio.Status{}, blockio.ErrOutOfRange
	}
	if length > size-off {
		length = size - off
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.usable(false); err != nil {
		return blockio.Status{}, err
	}
	var st blockio.Status
	pos := off
	for pos < off+length {
		ext, err := img.mapExtent(pos, off+length-pos)
		if err != nil {
			if st.Length > 0 {
				return st, nil
			}
			return blockio.Status{}, err
		}
		fl := statusFlags(ext.k)
		if st.Length == 0 {
			st = blockio.Status{Flags: fl, Length: ext.n}
			if fl&blockio.StatusOffsetValid != 0 {
				st.HostOffset = ext.host
			}
		} else if fl != st.Flags ||
			(fl&blockio.StatusOffsetValid != 0 && ext.host != st.HostOffset+st.Length) {
			break
		} else {
			st.Length += ext.n
		}
		pos += ext.n
	}
	return st, nil
}

func statusFlags(k kind) blockio.StatusFlags {
	switch k {
	case kNormal:
		return blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid
	case kZero:
		return blockio.StatusZero | blockio.StatusAllocated
	case kZeroAlloc:
		return blockio.StatusZero | blockio.StatusAllocated | blockio.StatusOffsetValid
	case kCompressed:
		return blockio.StatusData | blockio.StatusAllocated
	case kUnallocAlloc:
		// The cluster has a host offset although this subcluster reads
		// from below: QEMU reports the offset (and no allocation).
		return blockio.StatusOffsetValid
	}
	return 0
}
