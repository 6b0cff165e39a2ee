package jobs

// JobStats is what metrics show of one job.
type JobStats struct {
	ID, UUID, Type, Status string
	// Current and Total are the job's progress; for block jobs both are
	// bytes (Current counts the bytes the job has dealt with: copied, or
	// found to need no copy).
	Current, Total int64
}

// Stats lists the jobs that exist now. Owner goroutine only.
func (m *Manager) Stats() []JobStats {
	out := make([]JobStats, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, JobStats{ID: j.id, UUID: j.uuid, Type: string(j.typ), Status: string(j.status.QAPI()),
			Current: j.ctl.current.Load(), Total: j.ctl.total.Load()})
	}
	return out
}
