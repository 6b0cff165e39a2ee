// Package null owns the null-co driver: a device of a given size that
// discards writes and, with read-zeroes, reads zeroes. Used for tests and
// benchmarks of everything above the data.
package null

import (
	"time"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "null-co", Protocol: true, Open: open})
}

const defaultSize = 1 << 30

type node struct {
	size       int64
	readZeroes bool
	latency    time.Duration
	sizeSet    bool
	zeroesSet  bool // read-zeroes was given, even as false
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Null
	n := &node{size: defaultSize}
	if o != nil {
		if o.Size != nil {
			// qemu-storage-daemon 7.2 aborts on a negative size; blockd
			// answers with the text QEMU's option parser prepares.
			if *o.Size < 0 {
				return nil, schema.Errorf("Parameter 'size' expects a non-negative number below 2^64")
			}
			n.size, n.sizeSet = *o.Size, true
		}
		n.readZeroes = o.ReadZeroes != nil && *o.ReadZeroes
		n.zeroesSet = o.ReadZeroes != nil
		if o.LatencyNs != nil {
			n.latency = time.Duration(*o.LatencyNs)
		}
	}
	return n, nil
}

func (n *node) delay() {
	if n.latency > 0 {
		time.Sleep(n.latency)
	}
}

func (n *node) ReadAt(p []byte, off int64) error {
	if err := blockio.CheckRange(off, int64(len(p)), n.size); err != nil {
		return err
	}
	n.delay()
	if n.readZeroes {
		clear(p)
	}
	return nil
}

func (n *node) WriteAt(p []byte, off int64, _ blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, int64(len(p)), n.size); err != nil {
		return err
	}
	n.delay()
	return nil
}

func (n *node) WriteZeroes(off, length int64, _ blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, length, n.size); err != nil {
		return err
	}
	n.delay()
	return nil
}

func (n *node) Discard(off, length int64) error {
	return blockio.CheckRange(off, length, n.size)
}

func (n *node) Flush() error { return nil }

func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	if err := blockio.CheckRange(off, length, n.size); err != nil {
		return blockio.Status{}, err
	}
	st := blockio.Status{Flags: blockio.StatusAllocated | blockio.StatusOffsetValid, Length: length, HostOffset: off}
	if n.readZeroes {
		st.Flags |= blockio.StatusZero
	}
	return st, nil
}

func (n *node) Size() (int64, error)         { return n.size, nil }
func (n *node) Truncate(int64) error         { return blockio.ErrNotSupported }
func (n *node) Close() error                 { return nil }
func (n *node) AllocatedSize() (int64, bool) { return 0, true }

// ExactFilename is "null-co://" unless options that change the data are
// given (even with their default values, as QEMU counts them), in which
// case the graph describes the node as json:{...}.
func (n *node) ExactFilename() string {
	if n.sizeSet || n.zeroesSet {
		return ""
	}
	return "null-co://"
}

// StrongOptions are the options null_refresh_filename does not ignore.
func (n *node) StrongOptions() map[string]any {
	m := map[string]any{}
	if n.sizeSet {
		m["size"] = n.size
	}
	if n.zeroesSet {
		m["read-zeroes"] = n.readZeroes
	}
	return m
}
