package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"blockd/blockio"
)

// CreateOptions are qemu-img create's qcow2 options that the engine
// supports.
type CreateOptions struct {
	Size          int64  // virtual size, a multiple of 512
	ClusterSize   int64  // default 65536
	BackingFile   string // recorded in the header only
	BackingFormat string
	LazyRefcounts bool
	Compat        string // "0.10" or "1.1" (default)
	RefcountBits  int    // default 16
	ExtendedL2    bool
	// CompressionType is "zlib" (default) or "zstd" (version 3 only).
	CompressionType string
}

// Create writes a fresh image onto file, which is truncated to 0 first.
// Like QEMU's qcow2_co_create it writes a minimal valid image (header,
// one-cluster refcount table, one refcount block) and then opens it and
// uses the normal machinery to size the L1 table and record the backing
// file, so the result is laid out like QEMU's: header, refcount table,
// refcount block, L1 table.
func Create(file blockio.Device, o CreateOptions) error {
	h, err := newHeader(o)
	if err != nil {
		return err
	}
	cs := int64(1) << h.clusterBits
	order := uint(h.refcountOrder)
	hdr, err := h.serialize()
	if err != nil {
		return err
	}
	if err := file.Truncate(0); err != nil {
		return err
	}
	// Cluster 0: header; 1: refcount table -> 2; 2: refcount block with
	// clusters 0-2 in use.
	img := make([]byte, 3*cs)
	copy(img, hdr)
	binary.BigEndian.PutUint64(img[cs:], uint64(2*cs))
	for c := int64(0); c < 3; c++ {
		setRefcount(img[2*cs:], c, order, 1)
	}
	if err := file.WriteAt(img, 0, 0); err != nil {
		return err
	}
	if err := file.Flush(); err != nil {
		return err
	}
	lazy := false
	q, err := Open(file, OpenOptions{LazyRefcounts: &lazy})
	if err != nil {
		return err
	}
	if err := q.Truncate(o.Size); err != nil {
		q.Close()
		return err
	}
	if o.BackingFile != "" {
		if err := q.SetBackingFile(o.BackingFile, o.BackingFormat); err != nil {
			q.Close()
			return err
		}
	}
	return q.Close()
}

// CheckCreateOptions refuses the options Create would refuse, with the
// same texts, without touching any file.
func CheckCreateOptions(o CreateOptions) error {
	_, err := newHeader(o)
	return err
}

// newHeader validates the options and returns the header of the fresh
// image (refcount table in cluster 1, L1 table not yet allocated).
func newHeader(o CreateOptions) (header, error) {
	cs := o.ClusterSize
	if cs == 0 {
		cs = 65536
	}
	version := uint32(3)
	switch o.Compat {
	case "", "1.1", "v3":
	case "0.10", "v2":
		version = 2
	default:
		return header{}, fmt.Errorf("Invalid compatibility level: '%s'", o.Compat)
	}
	bits := 0
	for int64(1)<<bits < cs {
		bits++
	}
	if bits < minClusterBits || bits > maxClusterBits || int64(1)<<bits != cs {
		return header{}, fmt.Errorf("Cluster size must be a power of two between %d and %dk",
			1<<minClusterBits, 1<<(maxClusterBits-10))
	}
	if o.Size < 0 || o.Size%512 != 0 {
		return header{}, errors.New("Image size must be a multiple of 512 bytes")
	}
	if o.ExtendedL2 {
		if version < 3 {
			return header{}, errors.New("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		if cs < 512*subclusters {
			return header{}, fmt.Errorf("Extended L2 entries are only supported with cluster sizes of at least %d bytes", 512*subclusters)
		}
	}
	if o.LazyRefcounts && version < 3 {
		return header{}, errors.New("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	rbits := o.RefcountBits
	if rbits == 0 {
		rbits = 16
	}
	order := 0
	for 1<<order < rbits {
		order++
	}
	if rbits > 64 || 1<<order != rbits {
		return header{}, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if version < 3 && rbits != 16 {
		return header{}, errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	var ctype uint8
	switch o.CompressionType {
	case "", "zlib":
	case "zstd":
		if version < 3 {
			return header{}, errors.New("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
		}
		ctype = compressionZstd
	default:
		return header{}, fmt.Errorf("Unknown compression type '%s'", o.CompressionType)
	}
	if o.BackingFormat != "" && o.BackingFile == "" {
		return header{}, errors.New("Backing format cannot be used without backing file")
	}
	if len(o.BackingFile) > maxBackingName || len(o.BackingFormat) > maxBackingFmt {
		return header{}, errors.New("Backing file name too long")
	}

	h := header{
		version:               version,
		clusterBits:           uint32(bits),
		refcountTableOffset:   uint64(cs),
		refcountTableClusters: 1,
		refcountOrder:         uint32(order),
		headerLength:          v2HeaderLength,
	}
	if version >= 3 {
		h.headerLength = qemuHeaderLength
		h.tail = make([]byte, qemuHeaderLength-v3HeaderLength)
		if o.LazyRefcounts {
			h.compat |= compatLazyRefcounts
		}
		if o.ExtendedL2 {
			h.incompat |= incompatExtL2
		}
		if ctype != 0 {
			h.incompat |= incompatCompression
			h.compressionType = ctype
		}
		if cs > 4096 {
			// QEMU omits the table for small clusters to leave room for
			// the backing file name.
			h.exts = append(h.exts, featureTableExt())
		}
	}
	return h, nil
}
