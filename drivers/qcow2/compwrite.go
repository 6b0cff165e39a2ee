package qcow2

import (
	"fmt"
	"syscall"
)

// Compressed writes (QEMU's qcow2_co_pwritev_compressed_part). Only
// whole guest clusters are written compressed, each on its own, the last
// one of the image possibly cut short (compressed padded with zeroes),
// and only into a cluster without a host cluster: compression never
// overwrites data. A cluster that does not compress to less than a
// cluster is written as a normal cluster instead.
//
// Compressed streams are packed byte by byte (allocBytes): the host
// cluster being filled is remembered in freeBytes and each stream takes
// one reference on every host cluster it touches, which is what freeEntry
// and the checker count.
//
// Ordering, as for normal allocations: refcounts are taken under mu, the
// stream is written with mu released, then the L2 entry is set after
// beforeLink (refcounts and data stable before the L2 slice is written
// back). A crash in between leaks bytes of a host cluster at worst.

// compressAlignError: a compressed write that is not whole clusters
// (EINVAL, as QEMU's check).
type compressAlignError struct{ off, n int64 }

func (e *compressAlignError) Error() string {
	return fmt.Sprintf("qcow2: compressed write of %d bytes at %d is not whole clusters (Invalid argument)", e.n, e.off)
}

func (e *compressAlignError) Unwrap() error { return syscall.EINVAL }

// errCompressAllocated: compression never overwrites a cluster. QEMU
// fails such a write with a bare -EIO, and so does the text.
var errCompressAllocated error = compressAllocatedError{}

type compressAllocatedError struct{}

func (compressAllocatedError) Error() string { return "Input/output error" }
func (compressAllocatedError) Unwrap() error { return syscall.EIO }

// ClusterSize is the unit of compressed writes.
func (img *Image) ClusterSize() int64 { return img.g.clusterSize }

// writeCompressed writes p, whole guest clusters from cluster-aligned
// off, compressed. Called by WriteAt for the Compressed flag.
func (img *Image) writeCompressed(p []byte, off int64) error {
	g := &img.g
	n := int64(len(p))
	if g.inCluster(off) != 0 || (g.inCluster(n) != 0 && off+n != img.size.Load()) {
		return &compressAlignError{off: off, n: n}
	}
	// Every cluster is tried and the first error returned: QEMU's
	// clusters are independent tasks, so one refused (allocated) cluster
	// does not keep the others from being written.
	var first error
	for len(p) > 0 {
		k := min(int64(len(p)), g.clusterSize)
		if err := img.writeCompressedCluster(p[:k], off); err != nil && first == nil {
			first = err
		}
		p, off = p[k:], off+k
	}
	return first
}

// writeCompressedCluster writes p, one guest cluster, compressed.
func (img *Image) writeCompressedCluster(p []byte, off int64) error {
	g := &img.g
	n := int64(len(p))
	src := p
	if n < g.clusterSize {
		b := img.getBuf()
		defer img.putBuf(b)
		src = *b
		copy(src, p)
		clear(src[n:])
	}
	ob := img.getBuf()
	defer img.putBuf(ob)
	// At most a cluster minus one byte: anything longer saves nothing.
	clen, err := img.compressCluster((*ob)[:g.clusterSize-1], src)
	if err != nil {
		return err
	}
	if clen == 0 {
		return img.writeChunk(p, off)
	}
	data := (*ob)[:clen]

	set := img.stripes(off, n)
	img.locks.lock(set, true)
	defer img.locks.unlock(set, true)

	img.mu.Lock()
	host, err := img.reserveCompressed(off, int64(clen))
	img.mu.Unlock()
	if err != nil {
		return err
	}
	img.event("write_compressed")
	werr := img.file.WriteAt(data, host, 0)

	img.mu.Lock()
	defer img.mu.Unlock()
	if werr != nil {
		_ = img.unrefBytes(host, int64(clen))
		return werr
	}
	slot, buf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return err
	}
	if err := img.beforeLink(); err != nil {
		return err
	}
	sectors := uint64((host+int64(clen)-1)>>9 - host>>9)
	img.setEntry(buf, idx, uint64(host)|oflagCompressed|sectors<<g.csizeShift, 0)
	img.l2c.markDirty(slot)
	return nil
}

// reserveCompressed checks that guest cluster off has no host cluster
// and reserves n bytes for its compressed stream (under mu).
func (img *Image) reserveCompressed(off, n int64) (int64, error) {
	if err := img.usable(true); err != nil {
		return 0, err
	}
	if err := img.prepareWrite(); err != nil {
		return 0, err
	}
	// The L2 table is made writable now so that the link step after the
	// data write only changes an entry.
	_, buf, idx, err := img.l2ForWrite(off)
	if err != nil {
		return 0, err
	}
	if e, _ := img.entryAt(buf, idx); e&l2eOffsetMask != 0 {
		return 0, errCompressAllocated
	}
	host, err := img.allocBytes(n)
	if err != nil {
		return 0, err
	}
	if err := img.checkOverlap(host, n); err != nil {
		_ = img.unrefBytes(host, n)
		return 0, err
	}
	return host, nil
}

// allocBytes reserves n (< cluster size) bytes of host space for a
// compressed stream, after the previous stream when it fits in the same
// host cluster or runs on into the next one (qcow2_alloc_bytes).
func (img *Image) allocBytes(n int64) (int64, error) {
	img.event("cluster_alloc_bytes")
	g := &img.g
	off := img.freeBytes
	if off != 0 {
		rc, err := img.refcount(off >> g.clusterBits)
		if err != nil {
			return 0, err
		}
		if rc == 0 || rc == g.refcountMax {
			off = 0
		}
	}
	if off == 0 || g.clusterSize-g.inCluster(off) < n {
		c, err := img.allocRun(1)
		if err != nil {
			return 0, err
		}
		switch {
		case off != 0 && c<<g.clusterBits == roundUp(off, g.clusterSize):
			// The stream continues into the fresh cluster: it also
			// references the partly used one.
			if _, err := img.addRefcount(off>>g.clusterBits, 1); err != nil {
				_ = img.freeClusters(c, 1, false)
				return 0, err
			}
		default:
			off = c << g.clusterBits
		}
	} else if _, err := img.addRefcount(off>>g.clusterBits, 1); err != nil {
		return 0, err
	}
	img.freeBytes = off + n
	if g.inCluster(img.freeBytes) == 0 {
		img.freeBytes = 0
	}
	return off, nil
}

// unrefBytes drops the references a reserved stream took.
func (img *Image) unrefBytes(off, n int64) error {
	g := &img.g
	for c := off >> g.clusterBits; c <= (off+n-1)>>g.clusterBits; c++ {
		if _, err := img.addRefcount(c, -1); err != nil {
			return err
		}
	}
	return nil
}
