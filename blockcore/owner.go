package blockcore

import (
	"context"
	"encoding/json"

	"blockd/schema"
)

// ErrStopped is returned for work handed to an owner that has shut down.
var ErrStopped = schema.Errorf("blockd is shutting down")

// Owner is the one goroutine that owns the block graph. Every command and
// every graph change a job needs is a closure sent on one channel and run
// to completion before the next, so graph state needs no locks. Like
// etcd's raft node loop, all state transitions happen in one place (Run).
type Owner struct {
	reg   *schema.Registry
	work  chan func()
	stop  chan struct{}
	ended chan struct{}
}

// NewOwner returns an owner running commands from reg; call Run to start.
func NewOwner(reg *schema.Registry) *Owner {
	return &Owner{
		reg:   reg,
		work:  make(chan func()),
		stop:  make(chan struct{}),
		ended: make(chan struct{}),
	}
}

// Run processes work until Stop. The work in progress when Stop is called
// is finished; nothing starts after it.
func (o *Owner) Run() {
	defer close(o.ended)
	for {
		select {
		case f := <-o.work:
			f()
		case <-o.stop:
			return
		}
	}
}

// Stop ends Run after the work in progress and waits for it.
func (o *Owner) Stop() {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	<-o.ended
}

// Do runs f on the owner goroutine and waits for it to return. Calling Do
// from the owner goroutine itself would deadlock; handlers already run
// there and call graph code directly.
func (o *Owner) Do(f func()) error {
	done := make(chan struct{})
	select {
	case o.work <- func() { defer close(done); f() }:
	case <-o.stop:
		return ErrStopped
	}
	<-done
	return nil
}

// Post runs f on the owner goroutine later, without waiting: job workers
// use it to report progress they must not block on.
func (o *Owner) Post(f func()) {
	go func() { _ = o.Do(f) }()
}

// Lookup reports whether a command exists and whether it allows OOB.
func (o *Owner) Lookup(name string) (allowOOB, ok bool) {
	c, ok := o.reg.Lookup(name)
	if !ok {
		return false, false
	}
	return c.AllowOOB, true
}

// Execute decodes and runs a command on the owner goroutine and hands the
// outcome to deliver there too, before the owner does anything else: a
// reply is thus always queued for its client before any event caused by
// work the owner does later (a job finishing, say). If the owner has
// stopped, deliver gets ErrStopped.
func (o *Owner) Execute(ctx context.Context, name string, args json.RawMessage,
	deliver func(json.RawMessage, error)) {
	if err := o.Do(func() { deliver(o.reg.Call(ctx, name, args)) }); err != nil {
		deliver(nil, err)
	}
}

// Call is Execute for callers that just want the result.
func (o *Owner) Call(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	var ret json.RawMessage
	var err error
	o.Execute(ctx, name, args, func(r json.RawMessage, e error) { ret, err = r, e })
	return ret, err
}
