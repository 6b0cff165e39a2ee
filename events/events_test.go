package events

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"blockd/schema"
)

// Throttled events (QUORUM_REPORT_BAD per node, QUORUM_FAILURE) go out at
// once, then at most once a second: of a burst, the first at once and the
// latest when the period ends; other keys and other events are not held.
func TestThrottledEvents(t *testing.T) {
	b := NewBus()
	var mu sync.Mutex
	var got []Event
	arrived := make(chan struct{}, 100)
	b.Subscribe(func(e Event) {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		arrived <- struct{}{}
	})
	bad := func(node string, sector int64) schema.QuorumReportBad {
		return schema.QuorumReportBad{Type: "read", NodeName: node, SectorNum: sector, SectorsCount: 1}
	}
	start := time.Now()
	for i := int64(1); i <= 3; i++ {
		b.Publish(bad("a", i))
	}
	b.Publish(bad("b", 7))
	b.Publish(schema.QuorumFailure{Reference: "q", SectorNum: 9, SectorsCount: 1})
	b.Publish(schema.QuorumFailure{Reference: "q", SectorNum: 10, SectorsCount: 1})
	b.Publish(schema.BlockExportDeleted{ID: "e"}) // not throttled
	b.Publish(schema.BlockExportDeleted{ID: "e"})
	// Immediately: a/1, b/7, failure 9 and both exports' events.
	for range 5 {
		<-arrived
	}
	// When the period ends: a/3 (not a/2) and failure 10.
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the held events never went out")
		}
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("held events went out after %v, before the period ended", waited)
	}
	select {
	case <-arrived:
		t.Fatal("more events than the first and the latest of each burst")
	case <-time.After(1500 * time.Millisecond): // a further period: nothing held, nothing sent
	}
	mu.Lock()
	defer mu.Unlock()
	var seen []string
	for _, e := range got {
		var d map[string]any
		_ = json.Unmarshal(e.Data, &d)
		switch e.Name {
		case "QUORUM_REPORT_BAD":
			seen = append(seen, fmt.Sprint(d["node-name"], "/", d["sector-num"]))
		case "QUORUM_FAILURE":
			seen = append(seen, fmt.Sprint("failure/", d["sector-num"]))
		default:
			seen = append(seen, e.Name)
		}
	}
	want := []string{"a/1", "b/7", "failure/9", "BLOCK_EXPORT_DELETED", "BLOCK_EXPORT_DELETED", "a/3", "failure/10"}
	if len(seen) != len(want) {
		t.Fatalf("events %v, want %v", seen, want)
	}
	for i := range want[:5] {
		if seen[i] != want[i] {
			t.Fatalf("events %v, want %v", seen, want)
		}
	}
	// The two held events go out from two timers, in either order.
	if !(seen[5] == "a/3" && seen[6] == "failure/10" || seen[5] == "failure/10" && seen[6] == "a/3") {
		t.Fatalf("held events %v, want a/3 and failure/10", seen[5:])
	}
}
