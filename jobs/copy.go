package jobs

import (
	"errors"
	"sync"
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
	for _, x := range layers {
		size, err := x.Size()
		if err != nil {
			return false, 0, err
		}
		if off >= size {
			// Past the end of a shorter layer: it defines zeroes there.
			return true, n, nil
		}
		st, err := x.BlockStatus(off, min(n, size-off))
		if err != nil {
			return false, 0, err
		}
		if st.Flags&blockio.StatusAllocated != 0 {
			return true, st.Length, nil
		}
		n = min(n, st.Length)
	}
	return false, n, nil
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

// copier copies ranges from src to dst with up to maxInFlight requests at
// once, reporting progress to the job as each finishes.
type copier struct {
	j        *Job
	src, dst blockio.Device
	sem      chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
	bufs     sync.Pool
}

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
		bp := c.bufs.Get().(*[]byte)
		defer c.bufs.Put(bp)
		buf := (*bp)[:n]
		var err error
		if err = c.src.ReadAt(buf, off); err != nil {
			err = &ioError{"read", off, err}
		} else if err = c.dst.WriteAt(buf, off, 0); err != nil {
			err = &ioError{"write", off, err}
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
	switch j.onErrorPolicy {
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
