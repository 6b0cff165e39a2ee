package jobs

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// The copy-before-write filter and the snapshot-access driver (QEMU 7.2's
// block/copy-before-write.c and block/snapshot-access.c). A cbw node
// passes requests to its file child; before a write changes a cluster
// whose point-in-time data is not on the target yet, it copies that data
// there. A snapshot-access node over it reads the point in time: from
// the target where a write made the filter copy, from the file child
// elsewhere, while writes to the range wait. blockdev-add opens both;
// the backup job opens the same filter above its source and copies the
// clusters no write has copied yet, sharing the filter's copy map.

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "copy-before-write", Filter: true, Open: openCbw})
	blockcore.RegisterDriver(&blockcore.Driver{Name: "snapshot-access", Format: true, Open: openSnapshotAccess})
}

// cbwCluster is the copy granularity: the target's cluster size in the
// reference (64 KiB for qcow2), so a copy never writes part of a target
// cluster.
const cbwCluster = 64 << 10

// cbwState is one copy-before-write filter's state.
type cbwState struct {
	src, dst blockio.Device // the file child's and the target's data paths
	gran     int64
	copyMap  *dirtyMap // clusters whose point-in-time data is not on the target yet
	done     *dirtyMap // clusters a write made the filter copy: the snapshot reads them from the target
	access   *dirtyMap // clusters the snapshot may still be read at
	locks    *rangeLock
	// breakSnapshot is on-cbw-error=break-snapshot: a failed copy lets
	// the guest write through and makes the snapshot unreadable instead.
	breakSnapshot bool
	broken        atomic.Bool
	// timeout is cbw-timeout: how long a write waits for its copy before
	// the copy counts as failed (ETIMEDOUT); 0 waits as long as it takes.
	timeout time.Duration
	// background counts the copies that run beside the writes waiting
	// for them: when a write gives up on its copy, the copy finishes the
	// chunk in flight, keeps the range until then and starts no other
	// chunk, as the reference's timed-out block-copy call. Closing the
	// filter waits for them, as bdrv_close waits for its in_flight.
	background sync.WaitGroup
	// job, when a backup job owns the filter, counts what the filter
	// copies as the job's progress.
	job atomic.Pointer[Job]
	// compress: the owning backup job stores the copies compressed.
	compress atomic.Bool
}

// cbwStates finds the state of a cbw node, for snapshot-access and the
// backup job (the filter's Impl is the graph's generic filter).
var cbwStates sync.Map // *blockcore.Node -> *cbwState

func cbwOf(n *blockcore.Node) *cbwState {
	if s, ok := cbwStates.Load(n); ok {
		return s.(*cbwState)
	}
	return nil
}

// cbwSourcePerms is cbw_child_perm for the file child: what the parents
// need and, once there are parents, consistent read to copy old data
// before their writes and no other writer or resizer behind the
// filter's back.
func cbwSourcePerms(hasParents bool, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) {
	const pass = blockio.PermConsistentRead | blockio.PermWrite | blockio.PermWriteUnchanged | blockio.PermResize
	np, ns := perm&pass, shared&pass|blockio.PermWriteUnchanged
	if !hasParents {
		return np, ns
	}
	if perm&blockio.PermWrite != 0 {
		np |= blockio.PermConsistentRead
	}
	return np, ns &^ (blockio.PermWrite | blockio.PermResize)
}

// cbwTargetPerms: the filter writes the target and lets others do
// anything but resize it (its size was checked once, at open).
func cbwTargetPerms(*blockcore.Child) (blockio.Perm, blockio.Perm) {
	return blockio.PermWrite, blockio.PermAll &^ blockio.PermResize
}

// openCbw is cbw_open.
func openCbw(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Cbw
	tc, err := oc.OpenChild("target", o.Target, blockcore.RoleData)
	if err != nil {
		return nil, err
	}
	var bitmap *blockcore.DirtyBitmap
	if o.Bitmap != nil {
		_, bm, err := oc.Graph.LookupBitmap(o.Bitmap.Node, o.Bitmap.Name)
		if err != nil {
			return nil, err
		}
		bitmap = bm
	}
	src, dst := oc.File.Node.IO(), tc.Node.IO()
	size, err := oc.File.Node.OwnerIO().Size() // on the owner, maybe inside a drained section
	if err != nil {
		return nil, err
	}
	s := &cbwState{src: src, dst: dst, gran: cbwCluster, locks: newRangeLock(),
		copyMap: newDirtyMapGran(size, cbwCluster), done: newDirtyMapGran(size, cbwCluster),
		access:        newDirtyMapGran(size, cbwCluster),
		breakSnapshot: o.OnCbwError != nil && *o.OnCbwError == "break-snapshot"}
	if o.CbwTimeout != nil {
		// Whole seconds, as documented. qemu-storage-daemon 7.2 keeps the
		// nanoseconds in 32 bits, so its timeouts above 4 s wrap: an
		// overflow of the reference, not copied.
		s.timeout = time.Duration(*o.CbwTimeout) * time.Second
	}
	if bitmap != nil {
		// Only the bitmap's clusters are copied, and only they can be
		// read through the snapshot (block_copy_state_new with a bitmap;
		// the access bitmap starts as the copy bitmap).
		bitmap.Bits().Extents(0, size, func(off, n int64) bool {
			s.copyMap.mark(off, n)
			s.access.mark(off, n)
			return true
		})
	} else {
		s.copyMap.mark(0, size)
		s.access.mark(0, size)
	}
	cbwStates.Store(oc.Node, s)
	// The reference's block-copy bitmap sits on the source, the filter's
	// access and done bitmaps on the filter.
	info := func(m *dirtyMap) func() schema.BlockDirtyInfo {
		return func() schema.BlockDirtyInfo {
			return schema.BlockDirtyInfo{Count: m.bytes(), Granularity: uint32(m.gran)}
		}
	}
	// Listed newest first: the done bitmap is created before the access
	// one (cbw_open).
	hideCopy := oc.File.Node.AddBitmapInfo(info(s.copyMap))
	hideDone := oc.Node.AddBitmapInfo(info(s.done))
	hideAccess := oc.Node.AddBitmapInfo(info(s.access))
	return blockcore.NewFilter(oc, blockcore.FilterSpec{Perms: cbwSourcePerms, Hook: s.beforeWrite,
		OtherPerm: cbwTargetPerms, OnClose: func() {
			s.background.Wait() // their last chunk still writes to the target
			hideCopy()
			hideAccess()
			hideDone()
			cbwStates.Delete(oc.Node)
		}}), nil
}

// beforeWrite is cbw_do_copy_before_write: the write waits while the
// point-in-time data of the clusters it touches reaches the target.
func (s *cbwState) beforeWrite(off, n int64, write func() error) error {
	if s.broken.Load() {
		// Nothing left to save, so nothing to wait for: the reference
		// returns at once once the snapshot is broken.
		return write()
	}
	start := off &^ (s.gran - 1)
	end := (off + n + s.gran - 1) &^ (s.gran - 1)
	// No release after a timeout: the copy still holds the range, and a
	// break-snapshot write goes on beside it.
	unlock, err := s.saveOld(start, end-start)
	if unlock != nil {
		defer unlock()
	}
	if err != nil {
		if !s.breakSnapshot {
			return err
		}
		s.broken.Store(true)
	} else {
		s.done.mark(start, end-start)
	}
	return write()
}

// Where a write's copy stands, between the write waiting for it and the
// goroutine running it: the first to move it from copyPending decides
// whether the write gets the result and the range, or the copy was given
// up and releases the range itself.
const (
	copyPending int32 = iota
	copyDelivered
	copyAbandoned
)

// errCopyAbandoned ends a copy whose write timed out, before its next chunk.
var errCopyAbandoned = errors.New("copy abandoned after cbw-timeout")

// saveOld copies the clusters of [off, off+n) still in the copy map to
// the target, holding the range against other writes and snapshot
// reads, and returns the range's release with the copy's outcome. When
// the copy outlasts cbw-timeout it fails with ETIMEDOUT and returns no
// release: the copy goes on in the background as described at
// cbwState.background.
func (s *cbwState) saveOld(off, n int64) (unlock func(), err error) {
	if s.timeout == 0 {
		unlock := s.locks.Lock(off, n)
		return unlock, s.copyOld(off, n, nil)
	}
	type outcome struct {
		unlock func()
		err    error
	}
	var state atomic.Int32
	result := make(chan outcome, 1)
	abandoned := func() bool { return state.Load() == copyAbandoned }
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		unlock := s.locks.Lock(off, n)
		err := s.copyOld(off, n, abandoned)
		if state.CompareAndSwap(copyPending, copyDelivered) {
			result <- outcome{unlock, err}
			return
		}
		unlock()
	}()
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	select {
	case o := <-result:
		return o.unlock, o.err
	case <-timer.C:
	}
	if !state.CompareAndSwap(copyPending, copyAbandoned) {
		o := <-result // it ended as the timer fired
		return o.unlock, o.err
	}
	return nil, syscall.ETIMEDOUT
}

func (s *cbwState) writeFlags() blockio.WriteFlags {
	if s.compress.Load() {
		return blockio.Compressed
	}
	return 0
}

// copyOld copies the clusters of [off, off+n) still in the copy map to
// the target, under the caller's range lock. Once stop (if any) says so,
// it starts no further chunk and leaves the rest in the copy map.
func (s *cbwState) copyOld(off, n int64, stop func() bool) error {
	size, err := s.src.Size()
	if err != nil {
		return err
	}
	cp := newCopier(nil, s.src, s.dst)
	cp.writeFlags = s.writeFlags()
	spans := s.copyMap.takeRange(off, n)
	for i, sp := range spans {
		for o := sp.off; o < min(sp.off+sp.n, size); o += chunkSize {
			l := min(chunkSize, sp.off+sp.n-o, size-o)
			err := errCopyAbandoned
			if stop == nil || !stop() {
				err = cp.copy(o, l)
			}
			if err != nil {
				// Not saved: the next write (or the job) tries again.
				s.copyMap.mark(o, sp.off+sp.n-o)
				for _, rest := range spans[i+1:] {
					s.copyMap.mark(rest.off, rest.n)
				}
				return errCause(err)
			}
			if j := s.job.Load(); j != nil {
				j.Progress(l)
			}
		}
	}
	return nil
}

// snapshotRange runs f over the runs of [off, off+n) that live on the
// same side (target or source), with writes to the range held off, or
// fails with EACCES where the snapshot cannot be read
// (cbw_snapshot_read_lock).
func (s *cbwState) snapshotRange(off, n int64, f func(dev blockio.Device, off, n int64) error) error {
	if s.broken.Load() {
		return syscall.EACCES // without waiting for a copy that holds the range
	}
	start := off &^ (s.gran - 1)
	end := (off + n + s.gran - 1) &^ (s.gran - 1)
	unlock := s.locks.Lock(start, end-start)
	defer unlock()
	if s.broken.Load() || !s.access.allSet(start, end-start) {
		return syscall.EACCES
	}
	for o := off; o < off+n; {
		onTarget := s.done.isSet(o)
		e := min((o&^(s.gran-1))+s.gran, off+n)
		for e < off+n && s.done.isSet(e) == onTarget {
			e = min(e+s.gran, off+n)
		}
		dev := s.src
		if onTarget {
			dev = s.dst
		}
		if err := f(dev, o, e-o); err != nil {
			return err
		}
		o = e
	}
	if s.broken.Load() {
		// Writes after the break do not wait for reads: what was read
		// may be theirs.
		return syscall.EACCES
	}
	return nil
}

// snapshotDiscard is cbw_co_pdiscard_snapshot: the whole clusters of
// the range will not be read again, so they need no copy any more.
func (s *cbwState) snapshotDiscard(off, n int64) error {
	start := (off + s.gran - 1) &^ (s.gran - 1)
	end := (off + n) &^ (s.gran - 1)
	if end <= start {
		return nil
	}
	unlock := s.locks.Lock(start, end-start)
	defer unlock()
	s.access.takeRange(start, end-start)
	s.copyMap.takeRange(start, end-start)
	_ = s.dst.Discard(start, end-start) // best effort: the data is not needed
	return nil
}

// snapshotAccess is the snapshot-access driver's node: the point in time
// of the cbw filter that is its file child, read-only.
type snapshotAccess struct {
	cbw      *cbwState
	file     blockio.Device
	filename string
}

// ExactFilename is the filter's filename (snapshot_access_refresh_filename).
func (a *snapshotAccess) ExactFilename() string { return a.filename }

func openSnapshotAccess(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	return &snapshotAccess{cbw: cbwOf(oc.File.Node), file: oc.File.Node.IO(),
		filename: blockcore.Filename(oc.File.Node)}, nil
}

// snapshotRange is the filter's, or ENOTSUP over anything else: the
// reference opens such a node and fails its reads.
func (a *snapshotAccess) snapshotRange(off, n int64, f func(dev blockio.Device, off, n int64) error) error {
	if a.cbw == nil {
		return syscall.ENOTSUP
	}
	return a.cbw.snapshotRange(off, n, f)
}

func (a *snapshotAccess) ReadAt(p []byte, off int64) error {
	return a.snapshotRange(off, int64(len(p)), func(dev blockio.Device, o, n int64) error {
		return dev.ReadAt(p[o-off:o-off+n], o)
	})
}

func (a *snapshotAccess) WriteAt([]byte, int64, blockio.WriteFlags) error { return syscall.EPERM }
func (a *snapshotAccess) WriteZeroes(int64, int64, blockio.WriteFlags) error {
	return syscall.EPERM
}

func (a *snapshotAccess) Discard(off, n int64) error {
	if a.cbw == nil {
		return syscall.ENOTSUP
	}
	return a.cbw.snapshotDiscard(off, n)
}

func (a *snapshotAccess) Flush() error         { return nil }
func (a *snapshotAccess) Size() (int64, error) { return a.file.Size() }
func (a *snapshotAccess) Truncate(int64) error { return syscall.EPERM }
func (a *snapshotAccess) Close() error         { return nil }

// BlockStatus answers for the side that holds the range's point in time.
func (a *snapshotAccess) BlockStatus(off, n int64) (blockio.Status, error) {
	var st blockio.Status
	err := a.snapshotRange(off, n, func(dev blockio.Device, o, l int64) error {
		if st.Length > 0 {
			return nil // the first run answers
		}
		var err error
		st, err = dev.BlockStatus(o, l)
		return err
	})
	return st, err
}

// ChildPerm: the snapshot needs nothing of the filter, whose own
// requests it does not use (snapshot_access_child_perm).
func (a *snapshotAccess) ChildPerm(*blockcore.Child, blockcore.NodeState, blockio.Perm, blockio.Perm) (blockio.Perm, blockio.Perm) {
	return 0, blockio.PermAll
}
