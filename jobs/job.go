package jobs

import (
	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/schema"
)

// Impl is what a kind of job adds to the generic lifecycle. Run executes
// in the job's own goroutine and does I/O only; every other method runs on
// the graph owner.
type Impl interface {
	// Run copies data until done, cancelled (ErrCancelled) or failed.
	// Active jobs call ready() once in sync and then wait for
	// shouldComplete or cancellation.
	Run(j *Job) error
	// Prepare makes the graph changes of a successful job; an error turns
	// the job into a failed one.
	Prepare() error
	// Abort undoes the job's setup after failure or cancellation.
	Abort()
	// Clean releases what the job held, after Prepare or Abort.
	Clean()
	// CanComplete reports whether block-job-complete applies (active jobs).
	CanComplete() bool
	// SoftCancelAfterReady: cancel of a ready job ends it successfully
	// without its final switch (mirror semantics).
	SoftCancelAfterReady() bool
}

// Job is one block job. Fields other than ctl are owned by the owner
// goroutine.
type Job struct {
	m            *Manager
	id           string
	uuid         string // correlates the job's log lines across reuse of its id
	typ          schema.JobType
	status       Status // changed only by Manager.transition
	autoFinalize bool
	autoDismiss  bool
	impl         Impl
	ctl          *control

	userPaused    bool
	drained       int                        // drained sections of its nodes in progress (owner)
	onErrorPolicy string                     // report, ignore, stop, enospc
	onTargetError string                     // for write failures, when it differs (mirror, backup)
	ioStatus      schema.BlockDeviceIoStatus // set when on-error=stop paused the job
	hardCancel    bool                       // cancelled, and to be reported as cancelled
	workerDone    chan struct{}              // closed after the worker's last report is queued
	readySent     bool                       // BLOCK_JOB_READY announced
	completed     bool                       // the worker's completion report was handled
	ret           error
	txn           *jobTxn // the group it finishes with (completion-mode grouped), or nil
	workerErr     error   // the worker's result, set before workerDone closes
	earlyDone     bool    // completion handled from workerErr; its report is stale
}

// ID returns the job id.
func (j *Job) ID() string { return j.id }

// Worker-side helpers, safe from the worker goroutine.

// Checkpoint blocks while paused; it returns ErrCancelled once cancelled.
func (j *Job) Checkpoint() error { return j.ctl.checkpoint() }

// Limit applies the speed limit to n bytes just processed.
func (j *Job) Limit(n int64) error { return j.ctl.limit(n) }

// Progress adds n bytes of work done.
func (j *Job) Progress(n int64) { j.ctl.current.Add(n) }

// AddTotal grows the amount of work to do.
func (j *Job) AddTotal(n int64) { j.ctl.total.Add(n) }

// SetTotal sets the amount of work to do.
func (j *Job) SetTotal(n int64) { j.ctl.total.Store(n) }

// Current is the work done so far.
func (j *Job) Current() int64 { return j.ctl.current.Load() }

// Ready tells the owner the job is in sync (active jobs).
func (j *Job) Ready() { j.report(blockcore.ReportReady, nil) }

// report queues a typed report for the owner; it never blocks.
func (j *Job) report(kind blockcore.ReportKind, err error) {
	j.m.owner.Report(blockcore.Report{To: j, Kind: kind, Err: err})
}

// HandleReport applies a worker's report on the owner goroutine. Reports
// of one worker arrive in the order it sent them: ready (if ever) and
// errors before completion.
func (j *Job) HandleReport(r blockcore.Report) {
	m := j.m
	switch r.Kind {
	case blockcore.ReportReady:
		m.ready(j)
	case blockcore.ReportError:
		m.ioError(j, r.Err)
	case blockcore.ReportCompleted:
		if j.earlyDone {
			return
		}
		m.completedRun(j, r.Err)
	case blockcore.ReportProgress:
		// Progress is counted in ctl; nothing to change on the owner.
	default:
		m.log.Error("unknown job report", zap.String("job", j.id), zap.String("job_uuid", j.uuid), zap.Stringer("kind", r.Kind))
	}
}

// ShouldComplete reports whether completion was requested.
func (j *Job) ShouldComplete() bool { return j.ctl.shouldComplete() }

// Cancelled reports whether the job was cancelled.
func (j *Job) Cancelled() bool { return j.ctl.isCancelled() }

// Wait blocks until something changes (complete, cancel, pause, resume,
// speed) or wake is signalled by the job itself.
func (j *Job) Wait(wake <-chan struct{}) {
	j.ctl.busy.Store(false)
	select {
	case <-j.ctl.wake:
	case <-wake:
	}
	j.ctl.busy.Store(true)
}

// progressData is the common data of BLOCK_JOB_* events.
func (j *Job) progressData() (length, offset, speed int64) {
	j.ctl.mu.Lock()
	speed = j.ctl.speed
	j.ctl.mu.Unlock()
	return j.ctl.total.Load(), j.ctl.current.Load(), speed
}
