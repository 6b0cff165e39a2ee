// Package jobs owns block jobs: QEMU's job state machine and verbs, job
// events, and the commit job. Jobs do their I/O in their own goroutines;
// every state transition and graph change happens on the graph owner.
package jobs

import (
	"slices"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/events"
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
	return &Manager{g: g, owner: owner, bus: bus, log: log}
}

func (m *Manager) find(id string) *Job {
	for _, j := range m.jobs {
		if j.id == id {
			return j
		}
	}
	return nil
}

// validJobID is QEMU's id_wellformed, as job ids must be.
func validJobID(id string) bool {
	if id == "" || !(id[0] >= 'a' && id[0] <= 'z' || id[0] >= 'A' && id[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// create registers a job in status created (job_create).
func (m *Manager) create(id string, typ schema.JobType, speed int64, autoFinalize, autoDismiss bool) (*Job, error) {
	if !validJobID(id) {
		return nil, schema.Errorf("Invalid job ID '%s'", id)
	}
	if m.find(id) != nil {
		return nil, schema.Errorf("Job ID '%s' already in use", id)
	}
	j := &Job{m: m, id: id, typ: typ, status: "undefined", autoFinalize: autoFinalize,
		autoDismiss: autoDismiss, ctl: newControl(0), workerDone: make(chan struct{})}
	m.jobs = append(m.jobs, j)
	m.transition(j, "created")
	if speed < 0 {
		// block_job_create fails after creating the job: it is gone again.
		m.transition(j, "null")
		m.remove(j)
		return nil, schema.Errorf("Parameter 'speed' expects a non-negative value")
	}
	j.ctl.speed = speed
	return j, nil
}

// discard drops a created job whose setup failed.
func (m *Manager) discard(j *Job) {
	m.transition(j, "null")
	m.remove(j)
}

func (m *Manager) remove(j *Job) {
	m.jobs = slices.DeleteFunc(m.jobs, func(x *Job) bool { return x == j })
}

// transition moves a job to a new status and announces it.
func (m *Manager) transition(j *Job, to schema.JobStatus) {
	if !transitions[statusIndex(j.status)][statusIndex(to)] {
		m.log.Error("illegal job transition", zap.String("job", j.id),
			zap.String("from", string(j.status)), zap.String("to", string(to)))
	}
	j.status = to
	m.bus.Publish(schema.JobStatusChange{ID: j.id, Status: to})
}

// start runs the job's worker (job_start).
func (m *Manager) start(j *Job, impl Impl) {
	j.impl = impl
	m.transition(j, "running")
	go func() {
		err := impl.Run(j)
		j.ctl.busy.Store(false)
		j.workerErr = err
		close(j.workerDone)
		m.owner.Post(func() { m.advance(j) })
	}()
}

func (j *Job) workerFinished() bool {
	select {
	case <-j.workerDone:
		return true
	default:
		return false
	}
}

// advance applies what the worker reported: readiness, then completion.
// It is idempotent, so reports may arrive in any order and more than once.
func (m *Manager) advance(j *Job) {
	if j.completed {
		return
	}
	if j.readyWanted && !j.readySent && !j.workerFinished() {
		j.readySent = true
		if j.status == "paused" {
			// Paused before the announcement: it becomes standby.
			j.status = "running"
		}
		m.transition(j, "ready")
		if j.userPaused {
			m.transition(j, "standby")
		}
		l, o, s := j.progressData()
		m.bus.Publish(schema.BlockJobReady{Type: j.typ, Device: j.id, Len: l, Offset: o, Speed: s})
	}
	if j.workerFinished() {
		m.completedRun(j)
	}
}

// completedRun is job_completed: success goes to waiting and pending,
// failure or cancellation to aborting; then finalize unless the user
// finalizes by hand.
func (m *Manager) completedRun(j *Job) {
	j.completed = true
	j.ret = j.workerErr
	if j.hardCancel && j.ret == nil {
		j.ret = ErrCancelled
	}
	if j.ret != nil {
		m.transition(j, "aborting")
		m.finalize(j)
		return
	}
	if j.status == "paused" || j.status == "standby" {
		j.status = "running" // the worker finished while a pause was pending
	}
	m.transition(j, "waiting")
	m.transition(j, "pending")
	if !j.autoFinalize {
		m.bus.Publish(schema.BlockJobPending{Type: j.typ, ID: j.id})
		return
	}
	m.finalize(j)
}

// finalize is job_finalize_single: prepare, then commit or abort, clean,
// the completion event, concluded, and null when auto-dismissed.
func (m *Manager) finalize(j *Job) {
	if j.ret == nil {
		if err := j.impl.Prepare(); err != nil {
			j.ret = err
			m.transition(j, "aborting")
		}
	}
	if j.ret != nil {
		j.impl.Abort()
	}
	j.impl.Clean()
	l, o, s := j.progressData()
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
	m.transition(j, "concluded")
	if j.autoDismiss {
		m.dismiss(j)
	}
}

func (m *Manager) dismiss(j *Job) {
	m.transition(j, "null")
	m.remove(j)
}

// cancel is job_cancel: the worker is told to stop, and the job ends when
// it has (see below for when that is before the reply).
func (m *Manager) cancel(j *Job, force bool) {
	soft := !force && j.readySent && j.impl.SoftCancelAfterReady()
	if !soft {
		j.hardCancel = true
	}
	// A paused job is resumed to be cancelled (job_cancel_async).
	if j.userPaused {
		j.userPaused, j.ioStatus = false, ""
		switch j.status {
		case "paused":
			m.transition(j, "running")
		case "standby":
			m.transition(j, "ready")
		}
	}
	j.ctl.mu.Lock()
	j.ctl.cancelled = true
	j.ctl.hard = !soft
	j.ctl.paused = false
	j.ctl.mu.Unlock()
	j.ctl.nudge()
	if j.status == "pending" {
		// Cancelling a job waiting for job-finalize fails it.
		j.ret = ErrCancelled
		m.transition(j, "aborting")
		m.finalize(j)
		return
	}
	// A worker asleep on the speed limit or parked by a pause stops at
	// once, and QEMU's job coroutine ends before the command returns; one
	// that is copying or idle in sync ends after the reply, when its
	// report arrives.
	if j.ctl.sleeping.Load() || j.ctl.parked.Load() {
		<-j.workerDone
		m.advance(j)
	}
}

// CancelAll cancels every job and waits for them (shutdown).
func (m *Manager) CancelAll() {
	for _, j := range slices.Clone(m.jobs) {
		if !j.completed {
			m.cancel(j, true)
			<-j.workerDone
			m.advance(j)
		}
		if j.status == "pending" {
			m.finalize(j)
		}
	}
}

// info for query-jobs.
func (j *Job) info() schema.JobInfo {
	in := schema.JobInfo{ID: j.id, Type: j.typ, Status: j.status,
		CurrentProgress: j.ctl.current.Load(), TotalProgress: j.ctl.total.Load()}
	if j.status == "concluded" && j.ret != nil {
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
		Ready:  j.readySent && (j.status == "ready" || j.status == "standby"),
		Status: j.status, AutoFinalize: j.autoFinalize, AutoDismiss: j.autoDismiss}
	if j.status == "concluded" && j.ret != nil {
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
