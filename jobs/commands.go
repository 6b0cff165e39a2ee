package jobs

import (
	"context"
	"reflect"

	"blockd/schema"
)

// RegisterCommands declares the job commands and events.
func (m *Manager) RegisterCommands(r *schema.Registry) {
	schema.Define(r, "block-commit", func(_ context.Context, a *schema.BlockCommitArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockCommit(a)
	})
	schema.Define(r, "block-stream", func(_ context.Context, a *schema.BlockStreamArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockStream(a)
	})
	schema.Define(r, "blockdev-mirror", func(_ context.Context, a *schema.BlockdevMirrorArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockdevMirror(a)
	})
	schema.Define(r, "blockdev-backup", func(_ context.Context, a *schema.BlockdevBackupArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockdevBackup(a)
	})
	schema.Define(r, "drive-mirror", func(_ context.Context, a *schema.DriveMirrorArgs) (schema.Empty, error) {
		return schema.Empty{}, m.driveMirror(a)
	})
	schema.Define(r, "drive-backup", func(_ context.Context, a *schema.DriveBackupArgs) (schema.Empty, error) {
		return schema.Empty{}, m.driveBackup(a)
	}, schema.Features("deprecated"))
	m.registerLifecycle(r)
	schema.Define(r, "query-jobs", func(context.Context, *schema.NoArgs) ([]schema.JobInfo, error) {
		out := []schema.JobInfo{}
		// Newest first: QEMU links new jobs at the head of its list.
		for i := len(m.jobs) - 1; i >= 0; i-- {
			out = append(out, m.jobs[i].info())
		}
		return out, nil
	})
	schema.Define(r, "query-block-jobs", func(context.Context, *schema.NoArgs) ([]schema.BlockJobInfo, error) {
		out := []schema.BlockJobInfo{}
		for _, j := range m.jobs {
			if j.isBlockJob() {
				out = append(out, j.blockInfo())
			}
		}
		return out, nil
	})

	byID := func(f func(*Job) error) func(context.Context, *schema.JobIDArgs) (schema.Empty, error) {
		return func(_ context.Context, a *schema.JobIDArgs) (schema.Empty, error) {
			j := m.find(a.ID)
			if j == nil {
				return schema.Empty{}, schema.Errorf("Job not found")
			}
			return schema.Empty{}, f(j)
		}
	}
	byDevice := func(f func(*Job) error) func(context.Context, *schema.BlockJobDeviceArgs) (schema.Empty, error) {
		return func(_ context.Context, a *schema.BlockJobDeviceArgs) (schema.Empty, error) {
			j, err := m.findBlockJob(a.Device)
			if err != nil {
				return schema.Empty{}, err
			}
			return schema.Empty{}, f(j)
		}
	}
	schema.Define(r, "job-pause", byID(m.userPause))
	schema.Define(r, "job-resume", byID(m.userResume))
	schema.Define(r, "job-cancel", byID(func(j *Job) error { return m.userCancel(j, true) }))
	schema.Define(r, "job-complete", byID(m.userComplete))
	schema.Define(r, "job-finalize", byID(m.userFinalize))
	schema.Define(r, "job-dismiss", byID(m.userDismiss))
	schema.Define(r, "block-job-pause", byDevice(m.userPause))
	schema.Define(r, "block-job-resume", byDevice(m.userResume))
	schema.Define(r, "block-job-complete", byDevice(m.userComplete))
	schema.Define(r, "block-job-finalize", func(_ context.Context, a *schema.JobIDArgs) (schema.Empty, error) {
		j, err := m.findBlockJob(a.ID)
		if err != nil {
			return schema.Empty{}, err
		}
		return schema.Empty{}, m.userFinalize(j)
	})
	schema.Define(r, "block-job-dismiss", func(_ context.Context, a *schema.JobIDArgs) (schema.Empty, error) {
		j, err := m.findBlockJob(a.ID)
		if err != nil {
			return schema.Empty{}, err
		}
		return schema.Empty{}, m.userDismiss(j)
	})
	schema.Define(r, "block-job-cancel", func(_ context.Context, a *schema.BlockJobCancelArgs) (schema.Empty, error) {
		j, err := m.findBlockJob(a.Device)
		if err != nil {
			return schema.Empty{}, err
		}
		force := a.Force != nil && *a.Force
		if j.userPaused && !force {
			return schema.Empty{}, schema.Errorf("The block job for device '%s' is currently paused", a.Device)
		}
		return schema.Empty{}, m.userCancel(j, force)
	})
	schema.Define(r, "block-job-set-speed", func(_ context.Context, a *schema.BlockJobSetSpeedArgs) (schema.Empty, error) {
		j, err := m.findBlockJob(a.Device)
		if err != nil {
			return schema.Empty{}, err
		}
		return schema.Empty{}, m.setSpeed(j, a.Speed)
	})

	r.AddEvent("JOB_STATUS_CHANGE", reflect.TypeFor[schema.JobStatusChange]())
	r.AddEvent("BLOCK_JOB_COMPLETED", reflect.TypeFor[schema.BlockJobCompleted]())
	r.AddEvent("BLOCK_JOB_CANCELLED", reflect.TypeFor[schema.BlockJobCancelled]())
	r.AddEvent("BLOCK_JOB_READY", reflect.TypeFor[schema.BlockJobReady]())
	r.AddEvent("BLOCK_JOB_PENDING", reflect.TypeFor[schema.BlockJobPending]())
	r.AddEvent("BLOCK_JOB_ERROR", reflect.TypeFor[schema.BlockJobError]())
}

// findBlockJob is find_block_job: block-job-* name jobs by device.
func (m *Manager) findBlockJob(device string) (*Job, error) {
	if j := m.find(device); j != nil && j.isBlockJob() {
		return j, nil
	}
	return nil, schema.ClassErrorf(schema.ClassDeviceNotActive, "Block job '%s' not found", device)
}

func (m *Manager) userPause(j *Job) error {
	if err := j.applyVerb(verbPause); err != nil {
		return err
	}
	if j.userPaused {
		return schema.Errorf("Job is already paused")
	}
	j.userPaused = true
	j.ctl.mu.Lock()
	j.ctl.paused = true
	j.ctl.mu.Unlock()
	m.pause(j)
	return nil
}

func (m *Manager) userResume(j *Job) error {
	if err := j.applyVerb(verbResume); err != nil {
		return err
	}
	if !j.userPaused {
		return schema.Errorf("Can't resume a job that was not paused")
	}
	j.userPaused, j.ioStatus = false, ""
	j.ctl.mu.Lock()
	j.ctl.paused = false
	j.ctl.mu.Unlock()
	j.ctl.nudge()
	m.unpause(j)
	return nil
}

func (m *Manager) userCancel(j *Job, force bool) error {
	if err := j.applyVerb(verbCancel); err != nil {
		return err
	}
	m.cancel(j, force)
	return nil
}

func (m *Manager) userComplete(j *Job) error {
	if err := j.applyVerb(verbComplete); err != nil {
		return err
	}
	if !j.impl.CanComplete() {
		return schema.Errorf("The active block job '%s' cannot be completed", j.id)
	}
	j.ctl.mu.Lock()
	j.ctl.completeRequested = true
	j.ctl.mu.Unlock()
	j.ctl.nudge()
	return nil
}

func (m *Manager) userFinalize(j *Job) error {
	if err := j.applyVerb(verbFinalize); err != nil {
		return err
	}
	m.finalize(j)
	return nil
}

func (m *Manager) userDismiss(j *Job) error {
	if err := j.applyVerb(verbDismiss); err != nil {
		return err
	}
	m.dismiss(j)
	return nil
}

func (m *Manager) setSpeed(j *Job, speed int64) error {
	if err := j.applyVerb(verbSetSpeed); err != nil {
		return err
	}
	if speed < 0 {
		return schema.Errorf("Parameter 'speed' expects a non-negative value")
	}
	j.ctl.mu.Lock()
	j.ctl.speed = speed
	j.ctl.mu.Unlock()
	j.ctl.nudge()
	return nil
}
