package jobs

import (
	"slices"

	"blockd/blockcore"
	"blockd/schema"
)

// jobTxn is a group of jobs that finish together (QEMU's JobTxn): the
// jobs one transaction with completion-mode grouped starts. They go to
// pending only when the last of them has succeeded and are finalized
// together; when one fails or is cancelled, the others are cancelled and
// every one aborts.
type jobTxn struct {
	jobs     []*Job // newest first, as QEMU links them
	aborting bool
}

// jobTxnKey finds a transaction's group (blockcore.TxContext.Shared).
type jobTxnKey struct{}

// registerActions registers the job actions of transaction.
func (m *Manager) registerActions() {
	blockcore.RegisterAction(m.g, "blockdev-backup", blockcore.AcceptGrouped, m.backupAction)
	blockcore.RegisterAction(m.g, "drive-backup", blockcore.AcceptGrouped, m.driveBackupAction)
}

// join puts j in txn (nil: no group).
func (m *Manager) join(j *Job, txn *jobTxn) {
	if txn == nil {
		return
	}
	j.txn = txn
	txn.jobs = slices.Insert(txn.jobs, 0, j)
}

func (m *Manager) leave(j *Job) {
	if j.txn != nil {
		j.txn.jobs = slices.DeleteFunc(j.txn.jobs, func(x *Job) bool { return x == j })
		j.txn = nil
	}
}

// abortCreated ends a job that a failed transaction created and never
// started: aborting, its setup undone, concluded and gone, with no
// BLOCK_JOB_* event (it never ran) and whatever auto-dismiss says, as
// qemu-storage-daemon ends it.
func (m *Manager) abortCreated(j *Job, impl Impl) {
	m.leave(j)
	j.ret = ErrCancelled
	m.transition(j, StatusAborting)
	impl.Abort()
	impl.Clean()
	m.transition(j, StatusConcluded)
	m.dismiss(j)
}

// txnSuccess is job_completed_txn_success for j, which has just gone to
// waiting: when every job of the group has succeeded, all go to pending
// (newest first) and, unless one of them waits for job-finalize, are
// finalized.
func (m *Manager) txnSuccess(j *Job) {
	txn := j.txn
	for _, o := range txn.jobs {
		if !o.completed {
			return
		}
	}
	manual := false
	for _, o := range txn.jobs {
		m.transition(o, StatusPending)
		if !o.autoFinalize {
			manual = true
			m.bus.Publish(schema.BlockJobPending{Type: o.typ, ID: o.id})
		}
	}
	if !manual {
		m.txnFinalize(j)
	}
}

// txnFinalize is job_do_finalize for a group: every job prepares, then
// each is finalized; a failed prepare aborts the group.
func (m *Manager) txnFinalize(j *Job) {
	txn := j.txn
	for _, o := range slices.Clone(txn.jobs) {
		if o.ret != nil {
			continue
		}
		if err := o.impl.Prepare(); err != nil {
			o.ret = err
			m.txnAbort(o)
			return
		}
	}
	for _, o := range slices.Clone(txn.jobs) {
		m.finalizeSingle(o)
	}
}

// txnAbort is job_completed_txn_abort: j failed or was cancelled; every
// other job of its group is cancelled (force), waited for, and each job
// is finalized as failed, newest first.
func (m *Manager) txnAbort(j *Job) {
	txn := j.txn
	if txn.aborting {
		// Cancelled by another job of the group, which ends everything.
		return
	}
	txn.aborting = true
	for _, o := range txn.jobs {
		if o != j && !o.completed {
			o.hardCancel = true
			if o.userPaused {
				o.userPaused, o.ioStatus = false, ""
				m.unpause(o)
			}
			o.ctl.cancel(true)
		} else if o != j {
			o.hardCancel = true
		}
	}
	for len(txn.jobs) > 0 {
		o := txn.jobs[0]
		if !o.completed {
			m.waitWorker(o)
		}
		m.finalizeSingle(o)
	}
}
