// Package events owns blockd's asynchronous notifications: typed event
// payloads, their timestamps, and the ordered fan-out to subscribers (QMP
// monitors, JSON-RPC clients, tests). Publishing never blocks on a slow
// subscriber: each subscriber's deliver function must be non-blocking,
// which is what keeps one stalled client from stalling the graph owner.
package events

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"blockd/schema"
)

// Payload is the data of one kind of event; EventName is its QMP name.
type Payload interface {
	EventName() string
}

// Event is one published notification, encoded once for every subscriber.
type Event struct {
	Name string
	Data json.RawMessage // the "data" member, already encoded
	Time time.Time
}

// Timestamp is QMP's {"seconds", "microseconds"} pair.
type Timestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// Stamp returns the event time in QMP's form.
func (e Event) Stamp() Timestamp {
	return Timestamp{Seconds: e.Time.Unix(), Microseconds: int64(e.Time.Nanosecond() / 1000)}
}

// MarshalQMP encodes the event as QMP sends it, with the reference's
// member order (timestamp, event, data): clients and tests that compare
// raw text see the same bytes from both daemons.
func (e Event) MarshalQMP() []byte {
	b, _ := json.Marshal(struct {
		Timestamp Timestamp       `json:"timestamp"`
		Event     string          `json:"event"`
		Data      json.RawMessage `json:"data"`
	}{e.Stamp(), e.Name, e.Data})
	return b
}

// Bus fans events out to subscribers in publication order. Publish holds
// the bus lock while delivering so that two publishers cannot interleave
// their events differently for different subscribers.
type Bus struct {
	mu     sync.Mutex
	nextID int
	subs   map[int]func(Event)
	now    func() time.Time
	// held is the throttled events' state by throttle key: present while
	// a period runs, with the latest event held back in it, if any.
	held map[string]*Event
}

// throttlePeriods is QEMU's monitor_qapi_event_conf: events that I/O can
// trigger at will go out at most once a period per throttle key; the
// latest one held back goes out when the period ends, and starts another.
var throttlePeriods = map[string]time.Duration{
	"QUORUM_REPORT_BAD": time.Second,
	"QUORUM_FAILURE":    time.Second,
}

// ThrottleKeyer is implemented by payloads throttled apart per instance
// (QEMU's qapi_event_throttle_hash: QUORUM_REPORT_BAD per node-name).
type ThrottleKeyer interface {
	ThrottleKey() string
}

// NewBus returns an empty bus.
func NewBus() *Bus {
	return &Bus{subs: map[int]func(Event){}, now: time.Now, held: map[string]*Event{}}
}

// Subscribe registers deliver, which is called synchronously for every
// event and must not block. The returned function unsubscribes.
func (b *Bus) Subscribe(deliver func(Event)) (unsubscribe func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.nextID
	b.nextID++
	b.subs[id] = deliver
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, id)
	}
}

// Publish encodes p and delivers it to every subscriber in subscription
// order. Events caused by a command are published from its handler, so
// they reach each subscriber's queue before the command's reply does.
func (b *Bus) Publish(p Payload) {
	data, err := schema.Marshal(p)
	if err != nil {
		// A payload that cannot be encoded is a programming error; sending
		// an empty object keeps the event visible rather than losing it.
		data = []byte("{}")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := Event{Name: p.EventName(), Data: data, Time: b.now()}
	if period := throttlePeriods[ev.Name]; period > 0 {
		key := ev.Name
		if k, ok := p.(ThrottleKeyer); ok {
			key += "\x00" + k.ThrottleKey()
		}
		if _, running := b.held[key]; running {
			b.held[key] = &ev // replaces any held before: the latest goes out
			return
		}
		b.held[key] = nil
		time.AfterFunc(period, func() { b.endPeriod(key, period) })
	}
	b.deliver(ev)
}

// endPeriod sends the event held back during a throttle period, which
// starts another period, or ends the throttling of key.
func (b *Bus) endPeriod(key string, period time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ev := b.held[key]
	if ev == nil {
		delete(b.held, key)
		return
	}
	b.held[key] = nil
	time.AfterFunc(period, func() { b.endPeriod(key, period) })
	b.deliver(*ev)
}

// deliver hands ev to every subscriber, in subscription order, under mu.
func (b *Bus) deliver(ev Event) {
	ids := make([]int, 0, len(b.subs))
	for id := range b.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.subs[id](ev)
	}
}
