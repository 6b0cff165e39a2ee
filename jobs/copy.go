package jobs

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// Copy parameters. QEMU's commit copies 512 KiB at a time, one request
// after the other; blockd keeps several larger requests in flight, which
// is where it wins on throughput, while progress still moves in chunks.
const (
	chunkSize   = 1 << 20
	maxInFlight = 4
)

// isAllocatedAbove is bdrv_is_allocated_above(top, base, include_base=false)
// over the job's snapshot of the chain (layers, top first, base
// excluded): whether [off, off+n) is defined by one of the layers, and
// for how many bytes that answer holds.
func isAllocatedAbove(layers []blockio.Device, off, n int64) (bool, int64, error) {
	return blockio.AllocatedAbove(layers, off, n)
}

// ioError remembers whether a failed copy was reading or writing, for
// BLOCK_JOB_ERROR.
type ioError struct {
	op  schema.IoOperationType
	off int64 // where the failed request started
	err error
}

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// copier is the copy engine every job uses: it copies ranges from src to
// dst with up to maxInFlight requests at once, reporting progress to the
// job as each finishes. A range that reads as zeroes is written as a
// zero write, which keeps sparse targets sparse (qcow2 records a zero
// cluster, a file gets a hole or fallocated zeroes).
type copier struct {
	j        *Job
	src, dst blockio.Device
	sem      chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
	bufs     sync.Pool
	// locks, when set, is held over each range for its read and write,
	// excluding guest writes through the job's filter meanwhile.
	locks *rangeLock
	// writeFlags go with every data write to dst (Compressed for a
	// compressing backup).
	writeFlags blockio.WriteFlags
	// onlyUnallocated copies just the parts dst does not define itself,
	// decided under the range lock (copy-on-read into the same node).
	onlyUnallocated bool
	// claim, when set, picks under the range lock the parts of a range
	// still to copy (a backup's copy map, shared with its filter).
	claim   func(off, n int64) []span
	unclaim func(off, n int64)
	// unsynced counts the data bytes written since dst was last asked to
	// start writing back; kicking is set while it is being asked.
	unsynced atomic.Int64
	kicking  atomic.Bool
}

// writebackEvery is how much data a job's copier writes between asking
// the target to start writing it back (blockio.StartWriteback): the
// disk then works while the copy goes on, and the flush that ends the
// job waits for the last stretch instead of the whole copy.
const writebackEvery = 32 << 20

func newCopier(j *Job, src, dst blockio.Device) *copier {
	return &copier{j: j, src: src, dst: dst, sem: make(chan struct{}, maxInFlight),
		bufs: sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}}
}

// start copies [off, off+n) (n <= chunkSize) in the background.
func (c *copier) start(off, n int64) {
	c.sem <- struct{}{}
	c.wg.Add(1)
	go func() {
		defer func() { <-c.sem; c.wg.Done() }()
		if c.locks != nil {
			defer c.locks.Lock(off, n)()
		}
		var err error
		switch {
		case c.claim != nil:
			// Only what is claimed counts: the rest was copied already
			// (and counted) by whoever claimed it.
			var done int64
			spans := c.claim(off, n)
			for i, sp := range spans {
				l := min(sp.n, off+n-sp.off)
				if err = c.copy(sp.off, l); err != nil {
					for _, rest := range spans[i:] {
						c.unclaim(rest.off, rest.n) // not copied: still to do
					}
					break
				}
				done += l
			}
			if err == nil {
				c.j.Progress(done)
				return
			}
		case c.onlyUnallocated:
			err = c.copyUnallocated(off, n)
		default:
			err = c.copy(off, n)
		}
		if err != nil {
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.mu.Unlock()
			return
		}
		c.j.Progress(n)
	}()
}

// copyUnallocated copies the parts of [off, off+n) dst does not define.
func (c *copier) copyUnallocated(off, n int64) error {
	for end := off + n; off < end; {
		st, err := c.dst.BlockStatus(off, end-off)
		if err != nil {
			return &ioError{"read", off, err}
		}
		l := min(st.Length, end-off)
		if st.Flags&blockio.StatusAllocated == 0 {
			if err := c.copy(off, l); err != nil {
				return err
			}
		}
		off += l
	}
	return nil
}

// zeroGranule is the size of the pieces a copied range is checked for
// zeroes in: a qcow2 cluster, so a zero cluster inside a chunk of data
// stays a zero cluster on the target.
const zeroGranule = 64 << 10

// copy reads [off, off+n) from src and writes it to dst, the runs of
// zero granules as zero writes.
func (c *copier) copy(off, n int64) error {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := (*bp)[:n]
	if err := c.src.ReadAt(buf, off); err != nil {
		return &ioError{"read", off, err}
	}
	for i := int64(0); i < n; {
		zero := blockio.AllZero(buf[i:min(n, i+zeroGranule)])
		j := min(n, i+zeroGranule)
		for j < n && blockio.AllZero(buf[j:min(n, j+zeroGranule)]) == zero {
			j = min(n, j+zeroGranule)
		}
		if err := c.write(buf[i:j], off+i, zero); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// write puts one run of a copied range on dst.
func (c *copier) write(p []byte, off int64, zero bool) error {
	n := int64(len(p))
	var err error
	if zero {
		// Already reading as zeroes: keep it sparse. Not for a stream,
		// whose target loses the backing file it may read them from.
		if !c.onlyUnallocated {
			if st, serr := c.dst.BlockStatus(off, n); serr == nil && st.Flags&blockio.StatusZero != 0 && st.Length >= n {
				return nil
			}
		}
		err = c.dst.WriteZeroes(off, n, 0)
	} else {
		err = c.dst.WriteAt(p, off, c.writeFlags)
	}
	if err != nil {
		return &ioError{"write", off, err}
	}
	if !zero {
		c.wrote(n)
	}
	return nil
}

// wrote starts the target's write-back, in the background and one at a
// time, every writebackEvery bytes of a job's copy; wait waits for it.
// The copy-before-write filter's copier (no job) copies a few clusters
// before a guest write and leaves that to the backup job.
func (c *copier) wrote(n int64) {
	if c.j == nil || c.unsynced.Add(n) < writebackEvery || !c.kicking.CompareAndSwap(false, true) {
		return
	}
	c.unsynced.Store(0)
	c.wg.Add(1) // inside a request wait counts: the group is not empty
	go func() {
		defer c.wg.Done()
		defer c.kicking.Store(false)
		_ = blockio.StartWriteback(c.dst) // a hint; the flush reports errors
	}()
}

// errOffset and errCause take a copy failure apart.
func errOffset(err error, def int64) int64 {
	var ie *ioError
	if errors.As(err, &ie) {
		return ie.off
	}
	return def
}

func errCause(err error) error {
	var ie *ioError
	if errors.As(err, &ie) {
		return ie.err
	}
	return err
}

// failed returns the first error so far.
func (c *copier) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// wait waits for every request in flight and returns the first error.
func (c *copier) wait() error {
	c.wg.Wait()
	return c.failed()
}

// jobError is the detail of an error report: what failed and what the
// on-error policy made the worker do about it.
type jobError struct {
	op     schema.IoOperationType
	action schema.BlockErrorAction
	err    error
}

func (e *jobError) Error() string { return e.err.Error() }
func (e *jobError) Unwrap() error { return e.err }

// onError applies the job's on-error policy to a failed copy (QEMU's
// block_job_error_action) and reports BLOCK_JOB_ERROR through the owner.
// It returns whether the job goes on, and from where: ignore skips the
// failed range; stop, and enospc for ENOSPC alone, pause the job (the
// user resumes it, and the range is tried again); report, and enospc for
// any other error, end the job with the error.
func (j *Job) onError(err error, next int64) (goOn bool, from int64) {
	var ie *ioError
	op, failedAt := schema.IoOperationType("read"), next
	if errors.As(err, &ie) {
		op, failedAt = ie.op, ie.off
	}
	action := schema.BlockErrorAction("report")
	policy := j.onErrorPolicy
	if op == "write" && j.onTargetError != "" {
		policy = j.onTargetError
	}
	switch policy {
	case "ignore":
		action = "ignore"
	case "stop":
		action = "stop"
	case "enospc":
		if errors.Is(err, syscall.ENOSPC) {
			action = "stop"
		}
	}
	if action == "stop" {
		// Paused here, so the worker parks at its next checkpoint; the
		// owner shows the pause when it handles the report.
		j.ctl.mu.Lock()
		j.ctl.paused = true
		j.ctl.mu.Unlock()
	}
	j.report(blockcore.ReportError, &jobError{op: op, action: action, err: err})
	switch action {
	case "ignore":
		return true, next
	case "stop":
		return true, failedAt
	}
	return false, next
}

// errorText is how QEMU words a job's error: strerror for system errors
// ("No space left on device"), the message otherwise.
func errorText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		if msg != "" && msg[0] >= 'a' && msg[0] <= 'z' {
			msg = string(msg[0]-'a'+'A') + msg[1:]
		}
		return msg
	}
	return err.Error()
}
