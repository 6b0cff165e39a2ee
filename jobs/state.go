package jobs

import (
	"blockd/schema"
)

// Status is a job's state (QEMU's JobStatus, in its order, which indexes
// the tables below). It changes only through Manager.transition.
type Status uint8

const (
	StatusUndefined Status = iota
	StatusCreated
	StatusRunning
	StatusPaused
	StatusReady
	StatusStandby
	StatusWaiting
	StatusPending
	StatusAborting
	StatusConcluded
	StatusNull
	numStatuses
)

var statusNames = [numStatuses]schema.JobStatus{"undefined", "created", "running", "paused", "ready",
	"standby", "waiting", "pending", "aborting", "concluded", "null"}

// QAPI is the status's name on the wire.
func (s Status) QAPI() schema.JobStatus {
	if s < numStatuses {
		return statusNames[s]
	}
	return "undefined"
}

func (s Status) String() string { return string(s.QAPI()) }

// transitions is QEMU's JobSTT: transitions[from][to].
var transitions = [numStatuses][numStatuses]bool{
	/* U */ {false, true, false, false, false, false, false, false, false, false, false},
	/* C */ {false, false, true, false, false, false, false, false, true, false, true},
	/* R */ {false, false, false, true, true, false, true, false, true, false, false},
	/* P */ {false, false, true, false, false, false, false, false, false, false, false},
	/* Y */ {false, false, false, false, false, true, true, false, true, false, false},
	/* S */ {false, false, false, false, true, false, false, false, false, false, false},
	/* W */ {false, false, false, false, false, false, false, true, true, false, false},
	/* D */ {false, false, false, false, false, false, false, false, true, true, false},
	/* X */ {false, false, false, false, false, false, false, false, true, true, false},
	/* E */ {false, false, false, false, false, false, false, false, false, false, true},
	/* N */ {false, false, false, false, false, false, false, false, false, false, false},
}

// allowed reports whether the table permits from -> to.
func allowed(from, to Status) bool {
	return from < numStatuses && to < numStatuses && transitions[from][to]
}

// Verbs a user can apply, and the statuses that accept each (JobVerbTable).
type verb string

const (
	verbCancel   verb = "cancel"
	verbPause    verb = "pause"
	verbResume   verb = "resume"
	verbSetSpeed verb = "set-speed"
	verbComplete verb = "complete"
	verbFinalize verb = "finalize"
	verbDismiss  verb = "dismiss"
)

var verbTable = map[verb][numStatuses]bool{
	verbCancel:   {false, true, true, true, true, true, true, true, false, false, false},
	verbPause:    {false, true, true, true, true, true, false, false, false, false, false},
	verbResume:   {false, true, true, true, true, true, false, false, false, false, false},
	verbSetSpeed: {false, true, true, true, true, true, false, false, false, false, false},
	verbComplete: {false, false, false, false, true, true, false, false, false, false, false},
	verbFinalize: {false, false, false, false, false, false, false, true, false, false, false},
	verbDismiss:  {false, false, false, false, false, false, false, false, false, true, false},
}

// applyVerb refuses a verb the job's status does not accept, with QEMU's text.
func (j *Job) applyVerb(v verb) error {
	if verbTable[v][j.status] {
		return nil
	}
	return schema.Errorf("Job '%s' in state '%s' cannot accept command verb '%s'", j.id, j.status, v)
}
