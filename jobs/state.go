package jobs

import (
	"blockd/schema"
)

// Statuses in QEMU's order (JobStatus), which indexes the tables below.
var statuses = []schema.JobStatus{"undefined", "created", "running", "paused", "ready",
	"standby", "waiting", "pending", "aborting", "concluded", "null"}

func statusIndex(s schema.JobStatus) int {
	for i, x := range statuses {
		if x == s {
			return i
		}
	}
	return 0
}

// transitions is QEMU's JobSTT: transitions[from][to].
var transitions = [11][11]bool{
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

var verbTable = map[verb][11]bool{
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
	if verbTable[v][statusIndex(j.status)] {
		return nil
	}
	return schema.Errorf("Job '%s' in state '%s' cannot accept command verb '%s'", j.id, j.status, v)
}
