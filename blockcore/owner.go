package blockcore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"

	"blockd/schema"
)

// ErrStopped is returned for work handed to an owner that has shut down.
var ErrStopped = schema.Errorf("blockd is shutting down")

// Owner is the one goroutine that owns the block graph. Like etcd's raft
// node loop, Run selects over its inputs and handles one at a time, to
// completion, so graph state needs no locks:
//
//   - commands: closures sent by Do (every QMP command, from any client,
//     goes through Execute and Do);
//   - reports: typed messages from job workers (Report), kept in one FIFO
//     mailbox and handled in the order they were sent.
//
// A worker never blocks on the owner: Report appends to the mailbox and
// returns, so the owner may in turn wait for a worker (a cancel that ends
// the worker before its reply) without deadlock.
type Owner struct {
	reg   *schema.Registry
	log   *zap.Logger
	work  chan func()
	stop  chan struct{}
	ended chan struct{}

	mu      sync.Mutex
	mailbox []Report
	mail    chan struct{} // one token: the mailbox is not empty

	onPanic []func()
}

// ReportKind says what a job worker tells the owner.
type ReportKind uint8

const (
	// ReportProgress: the worker moved on; the handler may publish
	// what changed.
	ReportProgress ReportKind = iota + 1
	// ReportReady: an active job is in sync for the first time.
	ReportReady
	// ReportError: an I/O request failed under an on-error policy that
	// keeps the job alive (stop, enospc); Err says what failed.
	ReportError
	// ReportCompleted: the worker returned; Err is its result.
	ReportCompleted
)

func (k ReportKind) String() string {
	switch k {
	case ReportProgress:
		return "progress"
	case ReportReady:
		return "ready"
	case ReportError:
		return "error"
	case ReportCompleted:
		return "completed"
	}
	return fmt.Sprintf("report(%d)", uint8(k))
}

// ReportHandler receives reports on the owner goroutine (a job).
type ReportHandler interface {
	HandleReport(r Report)
}

// Report is one typed input from a job worker to the owner.
type Report struct {
	To   ReportHandler
	Kind ReportKind
	Err  error
}

// NewOwner returns an owner running commands from reg; call Run to start.
func NewOwner(reg *schema.Registry) *Owner {
	return &Owner{
		reg:   reg,
		log:   zap.NewNop(),
		work:  make(chan func()),
		stop:  make(chan struct{}),
		ended: make(chan struct{}),
		mail:  make(chan struct{}, 1),
	}
}

// SetLogger sets where a panic on the owner goroutine is logged. Call it
// before Run.
func (o *Owner) SetLogger(log *zap.Logger) { o.log = log }

// OnPanic registers a recovery step, run on the owner goroutine after a
// panic in a command or report handler has been caught: the graph aborts
// its open transactions and resumes drained nodes there. Call before Run.
func (o *Owner) OnPanic(f func()) { o.onPanic = append(o.onPanic, f) }

// Run processes commands and reports until Stop. The input in progress
// when Stop is called is finished; nothing starts after it.
func (o *Owner) Run() {
	defer close(o.ended)
	for {
		select {
		case f := <-o.work:
			f()
		case <-o.mail:
			o.deliverReports()
		case <-o.stop:
			return
		}
	}
}

// Stop ends Run after the input in progress and waits for it.
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
// there and call graph code directly. A panic in f is caught, logged and
// recovered from (see Guard); Do then returns its error.
func (o *Owner) Do(f func()) error {
	done := make(chan error, 1)
	if err := o.submit(context.Background(), func() { done <- o.Guard(func() error { f(); return nil }) }); err != nil {
		return err
	}
	return <-done
}

// Report hands r to the owner without waiting. Reports are handled in the
// order Report was called, after the input in progress.
func (o *Owner) Report(r Report) {
	o.mu.Lock()
	o.mailbox = append(o.mailbox, r)
	o.mu.Unlock()
	select {
	case o.mail <- struct{}{}:
	default:
	}
}

// DeliverReports handles, on the owner goroutine, every report sent so
// far. The owner calls it from Run; code running on the owner that has
// just waited for a worker calls it to see the worker's last reports
// before it goes on.
func (o *Owner) DeliverReports() { o.deliverReports() }

func (o *Owner) deliverReports() {
	for {
		o.mu.Lock()
		batch := o.mailbox
		o.mailbox = nil
		o.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for i, r := range batch {
			if err := o.Guard(func() error { r.To.HandleReport(r); return nil }); err != nil {
				o.log.Error("job report dropped after a panic", zap.Stringer("kind", r.Kind))
			}
			batch[i] = Report{}
		}
	}
}

// Guard runs f on the owner goroutine, turning a panic into an error: the
// panic and its stack are logged at error level, the recovery steps
// (OnPanic) abort whatever graph transaction f left open and resume the
// nodes it left drained, and the command that panicked answers with a
// GenericError. blockd keeps serving, unlike QEMU, which aborts: the
// graph is back in the state before the command, and the other clients
// and jobs are not taken down with it.
func (o *Owner) Guard(f func() error) (err error) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		o.log.Error("panic on the owner goroutine", zap.Any("panic", p),
			zap.String("stack", string(debug.Stack())))
		for _, h := range o.onPanic {
			h()
		}
		err = &panicError{p}
	}()
	return f()
}

// panicError is a recovered panic, before Execute words it for the client.
type panicError struct{ p any }

func (e *panicError) Error() string { return fmt.Sprintf("internal error: %v", e.p) }

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
// stopped, or ctx is done before the command runs, deliver gets an error
// and the command does not run.
func (o *Owner) Execute(ctx context.Context, name string, args json.RawMessage,
	deliver func(json.RawMessage, error)) {
	done := make(chan struct{})
	err := o.submit(ctx, func() {
		defer close(done)
		if err := ctx.Err(); err != nil {
			deliver(nil, schema.Errorf("Command '%s' not run: %v", name, err))
			return
		}
		var ret json.RawMessage
		err := o.Guard(func() error {
			var err error
			ret, err = o.reg.Call(ctx, name, args)
			return err
		})
		if pe, ok := err.(*panicError); ok {
			ret, err = nil, schema.Errorf("internal error: command %s failed: %v", name, pe.p)
		}
		deliver(ret, err)
	})
	if err != nil {
		if err != ErrStopped {
			err = schema.Errorf("Command '%s' not run: %v", name, err)
		}
		deliver(nil, err)
		return
	}
	<-done
}

// submit hands f to the owner unless it stops or ctx ends first.
func (o *Owner) submit(ctx context.Context, f func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case o.work <- f:
		return nil
	case <-o.stop:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Call is Execute for callers that just want the result.
func (o *Owner) Call(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	var ret json.RawMessage
	var err error
	o.Execute(ctx, name, args, func(r json.RawMessage, e error) { ret, err = r, e })
	return ret, err
}
