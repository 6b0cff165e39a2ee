// Package compress owns the compress filter driver (QEMU 7.2's
// block/filter-compress.c): reads and everything but data writes pass to
// its file child unchanged; data writes are stored compressed, which the
// file child (a qcow2 node) must support. The filter's request unit is
// the child's cluster: a write that covers clusters only in part is
// completed with the clusters' current content (read-modify-write), as
// QEMU's block layer pads requests to the filter's alignment.
package compress

import (
	"fmt"
	"sync"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "compress", Filter: true, Open: open})
}

type node struct {
	file    blockio.Device
	cluster int64
	// rmw serializes padded writes, so that two of them sharing a
	// cluster do not each write back the other's old data.
	rmw sync.Mutex
}

// open is compress_open.
func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	fn := oc.File.Node
	c, ok := fn.Impl().(blockio.Compressor)
	if !ok {
		return nil, schema.Errorf("Compression is not supported for underlying format: %s", fn.Driver().Name)
	}
	return &node{file: fn.IO(), cluster: c.ClusterSize()}, nil
}

func (n *node) ReadAt(p []byte, off int64) error { return n.file.ReadAt(p, off) }

// WriteAt writes whole clusters compressed; partly covered clusters are
// read first and written whole.
func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	size, err := n.file.Size()
	if err != nil {
		return err
	}
	if err := blockio.CheckRange(off, int64(len(p)), size); err != nil {
		return err
	}
	f |= blockio.Compressed
	end := off + int64(len(p))
	if off%n.cluster == 0 && (end%n.cluster == 0 || end == size) {
		return n.file.WriteAt(p, off, f)
	}
	start := off - off%n.cluster
	pend := min((end+n.cluster-1)/n.cluster*n.cluster, size)
	buf := make([]byte, pend-start)
	n.rmw.Lock()
	defer n.rmw.Unlock()
	if err := n.file.ReadAt(buf, start); err != nil {
		return fmt.Errorf("compress: reading around a partial write: %w", err)
	}
	copy(buf[off-start:], p)
	return n.file.WriteAt(buf, start, f)
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	return n.file.WriteZeroes(off, length, f)
}

func (n *node) Discard(off, length int64) error { return n.file.Discard(off, length) }
func (n *node) Flush() error                    { return n.file.Flush() }
func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	return n.file.BlockStatus(off, length)
}

// Backing is the child's: see blockio.BackingOf.
func (n *node) Backing() blockio.Device { return blockio.BackingOf(n.file) }

func (n *node) Size() (int64, error)      { return n.file.Size() }
func (n *node) Truncate(size int64) error { return n.file.Truncate(size) }
func (n *node) Close() error              { return nil }

// ForwardsInfo: a filter's bdrv_get_info answers for its child, so
// queries show the qcow2 cluster size.
func (n *node) ForwardsInfo() {}
