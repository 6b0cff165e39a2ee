// Package wire owns what QMP and JSON-RPC connections share on the wire:
// the outgoing message queue with its writer goroutine and flow control,
// and the strict JSON checks (duplicate keys, UTF-8, number range) that
// both protocols apply to their input before anything runs.
package wire

import (
	"io"
	"sync"
	"time"
)

// Flow-control bounds of one connection, in bytes of queued output.
// While PauseBytes are queued the connection's reader stops reading, so a
// client that pipelines commands and reads later is slowed, never dropped
// (its replies are at most one command's worth above the bound). Only
// events can push the queue to DropBytes: a client that lets them pile up
// that far is disconnected.
const (
	PauseBytes = 8 << 20
	DropBytes  = 64 << 20
)

// Queue is the one outgoing path of a connection: producers (the reader,
// the graph owner delivering replies, the event bus) push without
// blocking; one writer goroutine writes in order, several messages per
// write when they queued up.
type Queue struct {
	w      io.Writer
	frame  func(msg []byte) []byte // wire form of one message (with its newline)
	onDrop func(queued int)
	pause  int // PauseBytes and DropBytes; smaller in tests
	drop   int

	mu        sync.Mutex
	cond      *sync.Cond
	msgs      [][]byte
	bytes     int
	finishing bool
	closed    bool
	done      chan struct{}
}

// NewQueue starts the writer for w. frame turns a message into its bytes
// on the wire; it runs on the writer goroutine, off the producers' path.
// onDrop (optional) is called once when the queue overflows, before the
// connection is closed.
func NewQueue(w io.Writer, frame func([]byte) []byte, onDrop func(queued int)) *Queue {
	q := &Queue{w: w, frame: frame, onDrop: onDrop, pause: PauseBytes, drop: DropBytes, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.writeLoop()
	return q
}

// Push queues msg and never blocks. It returns false when the queue is
// closed or the message would pass DropBytes (then the queue closes).
func (q *Queue) Push(msg []byte) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	if q.bytes+len(msg) > q.drop {
		queued := len(q.msgs)
		q.closeLocked()
		q.mu.Unlock()
		if q.onDrop != nil {
			q.onDrop(queued)
		}
		return false
	}
	q.msgs = append(q.msgs, msg)
	q.bytes += len(msg)
	q.mu.Unlock()
	q.cond.Broadcast()
	return true
}

// WaitRoom blocks while PauseBytes or more are queued: the reader calls
// it before taking the next request. It returns false once the queue is
// closed.
func (q *Queue) WaitRoom() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.bytes >= q.pause && !q.closed {
		q.cond.Wait()
	}
	return !q.closed
}

// Finish says no more input will be handled: the writer sends what is
// queued (and whatever is still pushed meanwhile) within timeout, then
// exits. A peer that half-closed still gets every reply.
func (q *Queue) Finish(timeout time.Duration) {
	q.mu.Lock()
	if !q.finishing {
		q.finishing = true
		if d, ok := q.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
			_ = d.SetWriteDeadline(time.Now().Add(timeout))
		}
	}
	q.mu.Unlock()
	q.cond.Broadcast()
}

// Close drops what is queued and stops the writer.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closeLocked()
	q.mu.Unlock()
}

func (q *Queue) closeLocked() {
	if q.closed {
		return
	}
	q.closed = true
	q.msgs, q.bytes = nil, 0
	q.cond.Broadcast()
	// A writer blocked in write(2) on a peer that does not read must
	// return now, not at the next message.
	if d, ok := q.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Unix(1, 0))
	}
}

// Done is closed when the writer has exited: everything was written
// after Finish, or the queue was closed, or a write failed.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Closed reports whether the queue was closed (overflow, write error or
// Close), as opposed to still running or finished.
func (q *Queue) Closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

func (q *Queue) writeLoop() {
	defer close(q.done)
	var buf []byte
	for {
		q.mu.Lock()
		for len(q.msgs) == 0 && !q.closed && !q.finishing {
			q.cond.Wait()
		}
		if q.closed || (q.finishing && len(q.msgs) == 0) {
			q.mu.Unlock()
			return
		}
		batch := q.msgs
		q.msgs = nil
		q.mu.Unlock()
		buf = buf[:0]
		n := 0
		for _, m := range batch {
			buf = append(buf, q.frame(m)...)
			n += len(m)
		}
		if _, err := q.w.Write(buf); err != nil {
			q.Close()
			return
		}
		// Written bytes leave the bound only now, so that a peer that does
		// not read holds the reader back even while a batch is in flight.
		q.mu.Lock()
		if !q.closed {
			q.bytes -= n
		}
		q.mu.Unlock()
		q.cond.Broadcast()
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}
