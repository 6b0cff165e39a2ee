// Package jobs owns block jobs: QEMU's job state machine and verbs, job
// events, the copy engine and the jobs on it (commit, stream, mirror,
// backup, and their drive-* forms), and the copy-before-write and
// snapshot-access drivers the backup job shares its copying with. Jobs do
// their I/O in their own goroutines; every state transition and graph
// change happens on the graph owner.
package jobs

import (
	"errors"
	"slices"
	"syscall"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/events"
	"blockd/internal/corr"
	"blockd/internal/qemu"
	"blockd/schema"
)

// Manager holds the jobs of one daemon. Owner goroutine only.
type Manager struct {
	g     *blockcore.Graph
	owner *blockcore.Owner
	bus   *events.Bus
	log   *zap.Logger
	jobs  []*Job
}

// NewManager returns a manager creating jobs on g.
func NewManager(g *blockcore.Graph, owner *blockcore.Owner, bus *events.Bus, log *zap.Logger) *Manager {
	m := &Manager{g: g, owner: owner, bus: bus, log: log}
	m.registerActions()
	return m
}

func (m *Manager) find(id string) *Job {
	for _, j := range m.jobs {
		if j.id == id {
			return j
		}
	}
	return nil
}

// The lifecycle below is the one way a job is made and moved; a new kind
// of job uses it as commit does:
//
//	j, err := m.create(id, typ, speed, autoFinalize, autoDismiss) // created
//	... attach edges, freeze links; on failure: m.discard(j)      // null
//	m.start(j, impl)                                              // running
//
// after which the worker reports (Job.Ready, Job.onError, its return)
// drive the job through ready, waiting, pending, aborting and concluded on
// the owner goroutine, and the user verbs (commands.go) do the rest.
// Every status change goes through transition.

// create registers a job in status created (job_create).
func (m *Manager) create(id string, typ schema.JobType, speed int64, autoFinalize, autoDismiss bool) (*Job, error) {
	if !qemu.IDWellFormed(id) {
		return nil, schema.Errorf("Invalid job ID '%s'", id)
	}
	if m.find(id) != nil {
		return nil, schema.Errorf("Job ID '%s' already in use", id)
	}
	j := &Job{m: m, id: id, uuid: uuid.NewString(), typ: typ, status: StatusUndefined, autoFinalize: autoFinalize,
		autoDismiss: autoDismiss, ctl: newControl(0), workerDone: make(chan struct{})}
	m.jobs = append(m.jobs, j)
	cmd, ctx := m.owner.Command()
	m.log.Info("job created", zap.String("job", id), zap.String("job_uuid", j.uuid),
		zap.String("type", string(typ)), zap.String("command", cmd), zap.String("conn", corr.Conn(ctx)))
	m.transition(j, StatusCreated)
	if speed < 0 {
		// block_job_create fails after creating the job: it is gone again.
		m.discard(j)
		return nil, schema.Errorf("Parameter 'speed' expects a non-negative value")
	}
	j.ctl.speed = speed
	return j, nil
}

// discard drops a created job whose setup failed.
func (m *Manager) discard(j *Job) {
	m.transition(j, StatusNull)
	m.remove(j)
}

func (m *Manager) remove(j *Job) {
	m.jobs = slices.DeleteFunc(m.jobs, func(x *Job) bool { return x == j })
}

// transition moves a job to a new status through QEMU's table and
// announces it. An illegal transition is a bug in blockd: it is logged at
// error level and refused, leaving the status as it was.
func (m *Manager) transition(j *Job, to Status) bool {
	if !allowed(j.status, to) {
		m.log.Error("illegal job transition refused", zap.String("job", j.id), zap.String("job_uuid", j.uuid),
			zap.Stringer("from", j.status), zap.Stringer("to", to))
		return false
	}
	from := j.status
	j.status = to
	fields := []zap.Field{zap.String("job", j.id), zap.String("job_uuid", j.uuid),
		zap.Stringer("from", from), zap.Stringer("to", to)}
	// A transition a command caused (pause, cancel, dismiss) names the
	// connection that sent it.
	if cmd, ctx := m.owner.Command(); cmd != "" {
		fields = append(fields, zap.String("command", cmd), zap.String("conn", corr.Conn(ctx)))
	}
	m.log.Info("job status changed", fields...)
	m.bus.Publish(schema.JobStatusChange{ID: j.id, Status: to.QAPI()})
	return true
}

// drainBegin pauses a running job for a drained section of its nodes;
// sections nest, and a job the user paused stays as it is.
func (m *Manager) drainBegin(j *Job) {
	j.drained++
	if j.drained == 1 && !j.userPaused {
		m.pause(j)
	}
}

// drainEnd resumes the job when the last section ends.
func (m *Manager) drainEnd(j *Job) {
	j.drained--
	if j.drained == 0 && !j.userPaused {
		m.unpause(j)
	}
}

// unpause takes a paused job back to where it was (paused to running,
// standby to ready).
func (m *Manager) unpause(j *Job) {
	switch j.status {
	case StatusPaused:
		m.transition(j, StatusRunning)
	case StatusStandby:
		m.transition(j, StatusReady)
	}
}

// pause is the other direction (running to paused, ready to standby).
func (m *Manager) pause(j *Job) {
	switch j.status {
	case StatusRunning:
		m.transition(j, StatusPaused)
	case StatusReady:
		m.transition(j, StatusStandby)
	}
}

// start runs the job's worker (job_start). The worker's last act is its
// completion report, queued before workerDone closes, so whoever waits
// for workerDone on the owner finds it with Owner.DeliverReports.
func (m *Manager) start(j *Job, impl Impl) {
	j.impl = impl
	m.transition(j, StatusRunning)
	go func() {
		err := impl.Run(j)
		j.workerErr = err
		j.ctl.busy.Store(false)
		j.report(blockcore.ReportCompleted, err)
		close(j.workerDone)
	}()
}

// ready handles the worker's ready report: READY is announced once, unless
// the job was cancelled (hard) or ended before the report was handled.
// A job the user paused meanwhile shows ready, then standby.
func (m *Manager) ready(j *Job) {
	if j.completed || j.readySent || j.hardCancel {
		return
	}
	paused := j.status == StatusPaused
	if paused {
		m.transition(j, StatusRunning)
	}
	if !m.transition(j, StatusReady) {
		return
	}
	j.readySent = true
	if paused {
		m.transition(j, StatusStandby)
	}
	l, o, s := j.progressData()
	m.bus.Publish(schema.BlockJobReady{Type: j.typ, Device: j.id, Len: l, Offset: o, Speed: s})
}

// ioError handles an I/O error report: BLOCK_JOB_ERROR with the action
// the worker took, and for stop a pause with the io-status to show.
func (m *Manager) ioError(j *Job, err error) {
	var je *jobError
	if !errors.As(err, &je) {
		m.log.Error("job error report without details", zap.String("job", j.id), zap.String("job_uuid", j.uuid), zap.Error(err))
		return
	}
	m.bus.Publish(schema.BlockJobError{Device: j.id, Operation: je.op, Action: je.action})
	if je.action != "stop" || j.completed {
		return
	}
	if !j.userPaused && (j.status == StatusRunning || j.status == StatusReady) {
		j.userPaused = true
		j.ioStatus = "failed"
		if errors.Is(err, syscall.ENOSPC) {
			j.ioStatus = "nospace"
		}
		m.pause(j)
	}
}

// completedRun is job_completed, on the worker's completion report:
// success goes to waiting and pending, failure or cancellation to
// aborting; then finalize unless the user finalizes by hand.
func (m *Manager) completedRun(j *Job, err error) {
	if j.completed {
		m.log.Error("second completion report ignored", zap.String("job", j.id), zap.String("job_uuid", j.uuid))
		return
	}
	j.completed = true
	j.ret = err
	if j.hardCancel && j.ret == nil {
		j.ret = ErrCancelled
	}
	// The worker finished while a pause was pending: the pause is over.
	m.unpause(j)
	if j.ret != nil {
		m.transition(j, StatusAborting)
		if j.txn != nil {
			m.txnAbort(j)
			return
		}
		m.finalize(j)
		return
	}
	m.transition(j, StatusWaiting)
	if j.txn != nil {
		m.txnSuccess(j)
		return
	}
	m.transition(j, StatusPending)
	if !j.autoFinalize {
		m.bus.Publish(schema.BlockJobPending{Type: j.typ, ID: j.id})
		return
	}
	m.finalize(j)
}

// finalize is job_do_finalize: prepare, then job_finalize_single; a job
// of a group finalizes with its group.
func (m *Manager) finalize(j *Job) {
	if j.txn != nil {
		if j.ret != nil {
			m.txnAbort(j)
		} else {
			m.txnFinalize(j)
		}
		return
	}
	if j.ret == nil {
		if err := j.impl.Prepare(); err != nil {
			j.ret = err
			m.transition(j, StatusAborting)
		}
	}
	m.finalizeSingle(j)
}

// finalizeSingle is job_finalize_single: commit or abort, clean, the
// completion event, concluded, and null when auto-dismissed. A job its
// group cancelled after it succeeded fails here (job_update_rc).
func (m *Manager) finalizeSingle(j *Job) {
	m.leave(j)
	if j.ret == nil && j.hardCancel {
		j.ret = ErrCancelled
		m.transition(j, StatusAborting)
	}
	if j.ret != nil {
		j.impl.Abort()
	}
	j.impl.Clean()
	l, o, s := j.progressData()
	m.log.Info("job finished", zap.String("job", j.id), zap.String("job_uuid", j.uuid),
		zap.Bool("cancelled", j.hardCancel), zap.Int64("offset", o), zap.Int64("len", l), zap.NamedError("result", j.ret))
	if !j.isBlockJob() {
		// No BLOCK_JOB_* event.
	} else if j.hardCancel {
		m.bus.Publish(schema.BlockJobCancelled{Type: j.typ, Device: j.id, Len: l, Offset: o, Speed: s})
	} else {
		ev := schema.BlockJobCompleted{Type: j.typ, Device: j.id, Len: l, Offset: o, Speed: s}
		if j.ret != nil {
			msg := errorText(j.ret)
			ev.Error = &msg
		}
		m.bus.Publish(ev)
	}
	m.transition(j, StatusConcluded)
	if j.autoDismiss {
		m.dismiss(j)
	}
}

func (m *Manager) dismiss(j *Job) {
	m.transition(j, StatusNull)
	m.remove(j)
	m.log.Info("job dismissed", zap.String("job", j.id), zap.String("job_uuid", j.uuid))
}

// cancel is job_cancel: the worker is told to stop, and the job ends when
// its completion report is handled. A worker asleep on its speed limit or
// parked by a pause ends at once without starting I/O (control.cancel
// decides that under the lock the worker sleeps with, so it is not a
// guess), and QEMU's job coroutine ends before the command returns: the
// owner waits for it. A worker that is copying or idle in sync ends after
// the reply.
func (m *Manager) cancel(j *Job, force bool) {
	soft := !force && j.readySent && j.impl.SoftCancelAfterReady()
	if !soft {
		j.hardCancel = true
	}
	// A paused job is resumed to be cancelled (job_cancel_async).
	if j.userPaused {
		j.userPaused, j.ioStatus = false, ""
		m.unpause(j)
	}
	idle := j.ctl.cancel(!soft)
	if j.status == StatusWaiting && j.txn != nil {
		// Done, waiting for its group: the group is cancelled now.
		m.txnAbort(j)
		return
	}
	if j.status == StatusPending {
		// Cancelling a job waiting for job-finalize fails it.
		j.ret = ErrCancelled
		m.transition(j, StatusAborting)
		m.finalize(j)
		return
	}
	if _, replyFirst := j.impl.(cancelRepliesFirst); idle && !j.completed && !replyFirst {
		m.waitWorker(j)
	}
}

// cancelRepliesFirst marks jobs whose cancel the reference answers before
// the job ends even when it sleeps on its speed limit (mirror: its exit
// waits for in-flight operations outside the command).
type cancelRepliesFirst interface{ cancelRepliesFirst() }

// waitWorker waits on the owner for a worker that is about to return and
// handles its last reports. When its completion report is not among
// them (it was taken by a delivery further up the stack, which is
// handling another report of the same batch), the completion is handled
// from the worker's result and the report, when it comes, is ignored.
func (m *Manager) waitWorker(j *Job) {
	<-j.workerDone
	m.owner.DeliverReports()
	if !j.completed {
		j.earlyDone = true
		m.completedRun(j, j.workerErr)
	}
}

// Shutdown ends every job as qemu-storage-daemon does on quit: draining
// pauses the running ones (paused, standby), the cancel resumes them and
// they abort (BLOCK_JOB_CANCELLED, concluded, null), all before quit's
// reply. Owner goroutine only.
func (m *Manager) Shutdown() {
	for _, j := range slices.Clone(m.jobs) {
		if !j.userPaused {
			m.pause(j)
		}
	}
	m.CancelAll()
}

// CancelAll cancels every job and waits for them.
func (m *Manager) CancelAll() {
	for _, j := range slices.Clone(m.jobs) {
		if j.status == StatusPaused || j.status == StatusStandby {
			// Resumed to be cancelled, also when paused by Shutdown.
			j.userPaused = true
		}
		if !j.completed && j.status != StatusConcluded && j.status != StatusNull {
			if verbTable[verbCancel][j.status] {
				m.cancel(j, true)
			}
			if !j.completed {
				m.waitWorker(j)
			}
		}
		if j.status == StatusPending {
			m.cancel(j, true)
		}
	}
}

// info for query-jobs.
func (j *Job) info() schema.JobInfo {
	in := schema.JobInfo{ID: j.id, Type: j.typ, Status: j.status.QAPI(),
		CurrentProgress: j.ctl.current.Load(), TotalProgress: j.ctl.total.Load()}
	if j.status == StatusConcluded && j.ret != nil {
		msg := errorText(j.ret)
		in.Error = &msg
	}
	return in
}

// blockInfo for query-block-jobs.
func (j *Job) blockInfo() schema.BlockJobInfo {
	l, o, s := j.progressData()
	in := schema.BlockJobInfo{Type: string(j.typ), Device: j.id, Len: l, Offset: o,
		Busy: j.ctl.busy.Load(), Paused: j.userPaused, Speed: s, IoStatus: j.ioStatusOrOK(),
		Ready:  j.readySent && (j.status == StatusReady || j.status == StatusStandby),
		Status: j.status.QAPI(), AutoFinalize: j.autoFinalize, AutoDismiss: j.autoDismiss}
	if j.status == StatusConcluded && j.ret != nil {
		msg := errorText(j.ret)
		in.Error = &msg
	}
	return in
}

func (j *Job) ioStatusOrOK() schema.BlockDeviceIoStatus {
	if j.ioStatus == "" {
		return "ok"
	}
	return j.ioStatus
}
