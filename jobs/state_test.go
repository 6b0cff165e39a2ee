package jobs

import (
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"blockd/events"
	"blockd/schema"
)

// Every status change goes through QEMU's table: a legal one is applied
// and announced, an illegal one is a bug that is logged at error level
// and refused, leaving the status and the events as they were.
func TestTransitionsFollowTheTable(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	bus := events.NewBus()
	var seen []schema.JobStatus
	bus.Subscribe(func(e events.Event) {
		var c struct{ Status schema.JobStatus }
		if e.Name == "JOB_STATUS_CHANGE" && json.Unmarshal(e.Data, &c) == nil {
			seen = append(seen, c.Status)
		}
	})
	m := &Manager{bus: bus, log: zap.New(core)}
	for from := StatusUndefined; from < numStatuses; from++ {
		for to := StatusUndefined; to < numStatuses; to++ {
			j := &Job{m: m, id: "j", status: from}
			seen = nil
			_ = logs.TakeAll()
			ok := m.transition(j, to)
			if ok != transitions[from][to] {
				t.Fatalf("%s -> %s: applied %v, table says %v", from, to, ok, transitions[from][to])
			}
			if ok {
				if j.status != to || len(seen) != 1 || seen[0] != to.QAPI() {
					t.Fatalf("%s -> %s: status %s, events %v", from, to, j.status, seen)
				}
				if logs.Len() != 0 {
					t.Fatalf("%s -> %s: legal transition logged", from, to)
				}
				continue
			}
			if j.status != from || len(seen) != 0 {
				t.Fatalf("%s -> %s refused, yet status %s, events %v", from, to, j.status, seen)
			}
			if got := logs.FilterMessage("illegal job transition refused").Len(); got != 1 {
				t.Fatalf("%s -> %s: illegal transition not logged at error level", from, to)
			}
		}
	}
}
