// Package quorum owns the quorum driver: N children hold the same data;
// a write goes to all of them, a read reads all of them and returns the
// version at least vote-threshold children agree on (read-pattern
// quorum), or the first child that answers (fifo). A child that fails a
// request or is outvoted is reported with QUORUM_REPORT_BAD, and, with
// rewrite-corrupted, rewritten with the winning data; a request no
// version wins fails with EIO and QUORUM_FAILURE. x-blockdev-change adds
// and removes children.
package quorum

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/events"
	"blockd/internal/errtext"
	"blockd/internal/qdict"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "quorum", OwnChildren: true, ChildList: true,
		CheckOptions: checkOptions, Open: open})
}

// checkOptions is the part of quorum_open that runs before the children
// are opened.
func checkOptions(o *schema.BlockdevOptions) error {
	q := o.Quorum
	if len(q.Children) < 1 {
		return schema.Errorf("Number of provided children must be 1 or more")
	}
	if q.VoteThreshold < 1 {
		return schema.Errorf("Parameter 'vote-threshold' expects a value >= 1")
	}
	if q.VoteThreshold > int64(len(q.Children)) {
		return schema.Errorf("threshold may not exceed children count")
	}
	if q.ReadPattern == nil || *q.ReadPattern == "quorum" {
		blkverify := q.Blkverify != nil && *q.Blkverify
		if blkverify && (len(q.Children) != 2 || q.VoteThreshold != 2) {
			return schema.Errorf("blkverify=on can only be set if there are exactly two files and vote-threshold is 2")
		}
		if blkverify && q.RewriteCorrupted != nil && *q.RewriteCorrupted {
			return schema.Errorf("rewrite-corrupted=on cannot be used with blkverify=on")
		}
	}
	return nil
}

// child is one child as the data path sees it.
type child struct {
	edge *blockcore.Child
	name string // the child node's name, for events
	dev  blockio.Device
}

// node is one open quorum node. The children change only while the node
// is drained (x-blockdev-change).
type node struct {
	name      string
	bus       *events.Bus
	threshold int
	fifo      bool
	blkverify bool
	rewrite   bool
	children  []child
	nextIndex int // the number of the next child's name, children.N
	strong    qdict.Dict
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	q := oc.Options.Quorum
	n := &node{name: oc.Node.Name(), bus: oc.Graph.Bus(), threshold: int(q.VoteThreshold),
		fifo: q.ReadPattern != nil && *q.ReadPattern == "fifo", nextIndex: len(oc.Children)}
	if !n.fifo {
		n.blkverify = q.Blkverify != nil && *q.Blkverify
		n.rewrite = q.RewriteCorrupted != nil && *q.RewriteCorrupted
	}
	for _, c := range oc.Children {
		n.children = append(n.children, child{edge: c, name: c.Node.Name(), dev: c.Node.IO()})
	}
	// refresh_total_sectors: the children must agree on the size.
	if _, err := n.Size(); err != nil {
		return nil, schema.Errorf("Could not refresh total sector count: %s", errtext.Strerror(syscall.EIO))
	}
	n.strong = n.strong.Set("vote-threshold", q.VoteThreshold)
	if q.RewriteCorrupted != nil {
		n.strong = n.strong.Set("rewrite-corrupted", *q.RewriteCorrupted)
	}
	if q.ReadPattern != nil {
		n.strong = n.strong.Set("read-pattern", string(*q.ReadPattern))
	}
	return n, nil
}

// sectors is the range of an event in 512-byte sectors.
func sectors(off, length int64) (int64, int64) {
	start, end := off/512, (off+length+511)/512
	return start, end - start
}

func (n *node) reportBad(op schema.QuorumOpType, off, length int64, name string, err error) {
	s, c := sectors(off, length)
	ev := schema.QuorumReportBad{Type: op, NodeName: name, SectorNum: s, SectorsCount: c}
	if err != nil {
		msg := errText(err)
		ev.Error = &msg
	}
	n.bus.Publish(ev)
}

func (n *node) reportFailure(off, length int64) {
	s, c := sectors(off, length)
	n.bus.Publish(schema.QuorumFailure{Reference: n.name, SectorNum: s, SectorsCount: c})
}

// errText is strerror of the error's errno (EIO when it has none).
func errText(err error) string {
	var e syscall.Errno
	if !errors.As(err, &e) {
		e = syscall.EIO
	}
	return errtext.Strerror(e)
}

// voteError is quorum_vote_error: the errno most children failed with.
func voteError(errs []error) error {
	count := map[syscall.Errno]int{}
	var best syscall.Errno
	for _, err := range errs {
		if err == nil {
			continue
		}
		var e syscall.Errno
		if !errors.As(err, &e) {
			e = syscall.EIO
		}
		count[e]++
		if best == 0 || count[e] > count[best] {
			best = e
		}
	}
	if best == 0 {
		best = syscall.EIO
	}
	return best
}

// all runs f on every child at once.
func (n *node) all(f func(c child) error) []error {
	errs := make([]error, len(n.children))
	var wg sync.WaitGroup
	for i, c := range n.children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(c)
		}()
	}
	wg.Wait()
	return errs
}

func (n *node) ReadAt(p []byte, off int64) error {
	if n.fifo {
		return n.readFIFO(p, off)
	}
	bufs := make([][]byte, len(n.children))
	errs := n.all(func(c child) error {
		i := n.index(c)
		bufs[i] = make([]byte, len(p))
		return c.dev.ReadAt(bufs[i], off)
	})
	ok := 0
	for i, err := range errs {
		if err != nil {
			n.reportBad("read", off, int64(len(p)), n.children[i].name, err)
		} else {
			ok++
		}
	}
	if ok < n.threshold {
		n.reportFailure(off, int64(len(p)))
		return voteError(errs)
	}
	// Versions in the order first seen; each lists its children.
	type version struct {
		data    []byte
		members []int
	}
	var versions []*version
	for i, err := range errs {
		if err != nil {
			continue
		}
		var v *version
		for _, x := range versions {
			if bytes.Equal(x.data, bufs[i]) {
				v = x
				break
			}
		}
		if v == nil {
			v = &version{data: bufs[i]}
			versions = append(versions, v)
		}
		v.members = append(v.members, i)
	}
	if len(versions) == 1 {
		copy(p, versions[0].data)
		return nil
	}
	if n.blkverify {
		return fmt.Errorf("blkverify: read contents mismatch at offset %d: %w", off, syscall.EIO)
	}
	// quorum_get_vote_winner: the most voted version; a tie goes to the
	// newest version, which heads the reference's list.
	winner := versions[len(versions)-1]
	for i := len(versions) - 2; i >= 0; i-- {
		if len(versions[i].members) > len(winner.members) {
			winner = versions[i]
		}
	}
	if len(winner.members) < n.threshold {
		n.reportFailure(off, int64(len(p)))
		return syscall.EIO
	}
	copy(p, winner.data)
	for _, v := range versions {
		if v == winner {
			continue
		}
		for _, i := range v.members {
			n.reportBad("read", off, int64(len(p)), n.children[i].name, nil)
			if n.rewrite {
				// quorum_rewrite_bad_versions: best effort, as the
				// reference ignores the result.
				_ = n.children[i].dev.WriteAt(winner.data, off, 0)
			}
		}
	}
	return nil
}

func (n *node) index(c child) int {
	for i, x := range n.children {
		if x.edge == c.edge {
			return i
		}
	}
	return -1
}

func (n *node) readFIFO(p []byte, off int64) error {
	var err error
	for _, c := range n.children {
		if err = c.dev.ReadAt(p, off); err == nil {
			return nil
		}
		n.reportBad("read", off, int64(len(p)), c.name, err)
	}
	return err
}

// write is quorum_co_pwritev: every child, failures reported; the
// request fails when fewer than vote-threshold children succeed.
func (n *node) write(off, length int64, f func(c child) error) error {
	errs := n.all(f)
	ok := 0
	for i, err := range errs {
		if err != nil {
			n.reportBad("write", off, length, n.children[i].name, err)
		} else {
			ok++
		}
	}
	if ok < n.threshold {
		n.reportFailure(off, length)
		return voteError(errs)
	}
	return nil
}

func (n *node) WriteAt(p []byte, off int64, fl blockio.WriteFlags) error {
	return n.write(off, int64(len(p)), func(c child) error { return c.dev.WriteAt(p, off, fl) })
}

func (n *node) WriteZeroes(off, length int64, fl blockio.WriteFlags) error {
	return n.write(off, length, func(c child) error { return c.dev.WriteZeroes(off, length, fl) })
}

// Discard: quorum has no discard, and a discard is only advice.
func (n *node) Discard(off, length int64) error { return nil }

func (n *node) Flush() error {
	errs := n.all(func(c child) error { return c.dev.Flush() })
	ok := 0
	for i, err := range errs {
		if err != nil {
			size, _ := n.children[i].dev.Size()
			n.reportBad("flush", 0, size, n.children[i].name, err)
		} else {
			ok++
		}
	}
	if ok < n.threshold {
		return voteError(errs)
	}
	return nil
}

// BlockStatus: without a block-status method every range is data.
func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: length}, nil
}

// Size is quorum_getlength: the first child's, if all agree.
func (n *node) Size() (int64, error) {
	size, err := n.children[0].dev.Size()
	if err != nil {
		return 0, err
	}
	for _, c := range n.children[1:] {
		if s, err := c.dev.Size(); err != nil || s != size {
			return 0, syscall.EIO
		}
	}
	return size, nil
}

func (n *node) Truncate(int64) error { return blockio.ErrNotSupported }
func (n *node) Close() error         { return nil }

// ChildPerm is quorum_child_perm: write only when the parents write (or
// to rewrite corrupted children); resize and write are never shared, as
// they would make the children differ.
func (n *node) ChildPerm(_ *blockcore.Child, _ blockcore.NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	const pass = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	np := perm & pass
	if n.rewrite {
		np |= blockio.PermWrite
	}
	return np, shared & (blockio.PermConsistentRead | blockio.PermWriteUnchanged)
}

func (n *node) StrongOptionList() qdict.Dict { return n.strong }

// AllocatedSize sums the children's (bdrv_sum_allocated_file_size).
func (n *node) AllocatedSize() (int64, bool) {
	var sum int64
	for _, c := range n.children {
		if as, ok := c.edge.Node.Impl().(blockcore.AllocatedSizer); ok {
			if v, ok := as.AllocatedSize(); ok {
				sum += v
			}
		}
	}
	return sum, true
}

// NewChildName is quorum_add_child's check and naming.
func (n *node) NewChildName() (string, error) {
	if n.blkverify {
		return "", schema.Errorf("Cannot add a child to a quorum in blkverify mode")
	}
	return fmt.Sprintf("children.%d", n.nextIndex), nil
}

func (n *node) ChildAdded(c *blockcore.Child) {
	n.nextIndex++
	n.children = append(n.children, child{edge: c, name: c.Node.Name(), dev: c.Node.IO()})
}

// CheckDelChild is quorum_del_child's check.
func (n *node) CheckDelChild(*blockcore.Child) error {
	if len(n.children) <= n.threshold {
		return schema.Errorf("The number of children cannot be lower than the vote threshold %d", n.threshold)
	}
	return nil
}

func (n *node) ChildRemoved(c *blockcore.Child) {
	if c.Name == fmt.Sprintf("children.%d", n.nextIndex-1) {
		n.nextIndex--
	}
	for i, x := range n.children {
		if x.edge == c {
			n.children = append(n.children[:i:i], n.children[i+1:]...)
			return
		}
	}
}
