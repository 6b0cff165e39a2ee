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
}

// NewBus returns an empty bus.
func NewBus() *Bus {
	return &Bus{subs: map[int]func(Event){}, now: time.Now}
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
	ids := make([]int, 0, len(b.subs))
	for id := range b.subs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.subs[id](ev)
	}
}
