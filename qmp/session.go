package qmp

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/schema"
)

// Session is one monitor connection. Its negotiation state is written only
// by the command handler that runs while the session's reader waits for
// the reply, so the channel hand-off orders every access.
type Session struct {
	ID         uint64
	negotiated bool
	oob        bool

	srv        *Server
	rw         io.ReadWriteCloser
	log        *zap.Logger
	out        chan []byte
	done       chan struct{} // closed when the session is torn down
	finish     chan struct{} // closed when the reader has ended, or at shutdown
	finishOnce sync.Once
	writerDone chan struct{} // closed when the writer has exited
	closer     sync.Once
	closed     atomic.Bool
}

type sessionKey struct{}

// SessionFrom returns the monitor session a command came from, or nil when
// the command did not come from a QMP monitor.
func SessionFrom(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// Negotiate ends capabilities negotiation (called by qmp_capabilities).
func (s *Session) Negotiate(oob bool) { s.negotiated, s.oob = true, oob }

// Negotiated reports whether qmp_capabilities has run on this session.
func (s *Session) Negotiated() bool { return s.negotiated }

// enqueue hands a message to the writer without ever blocking: a client
// whose queue is full is too far behind and is disconnected, so neither the
// graph owner nor the event bus can be stalled by it.
func (s *Session) enqueue(msg []byte) {
	if s.closed.Load() {
		return
	}
	select {
	case s.out <- msg:
	default:
		s.log.Warn("monitor client is not reading its replies and events; disconnecting",
			zap.Uint64("session", s.ID), zap.Int("queued", len(s.out)))
		s.close()
	}
}

func (s *Session) close() {
	s.closer.Do(func() {
		s.closed.Store(true)
		close(s.done)
		_ = s.rw.Close()
	})
}

// endInput tells the writer that no more replies will be queued: it sends
// what is queued, then exits.
func (s *Session) endInput() { s.finishOnce.Do(func() { close(s.finish) }) }

func (s *Session) writeLoop() {
	defer close(s.writerDone)
	for {
		select {
		case msg := <-s.out:
			if !s.write(msg) {
				return
			}
		case <-s.done:
			return
		case <-s.finish:
			// No more input; flush what is queued, but do not wait long on
			// a peer that no longer reads.
			if d, ok := s.rw.(interface{ SetWriteDeadline(time.Time) error }); ok {
				_ = d.SetWriteDeadline(time.Now().Add(finishTimeout))
			}
			for {
				select {
				case msg := <-s.out:
					if !s.write(msg) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// finishTimeout bounds the flush of queued output after the client closed
// its side.
const finishTimeout = 5 * time.Second

func (s *Session) write(msg []byte) bool {
	if _, err := s.rw.Write(append(qemuSpacing(msg), '\n')); err != nil {
		s.close()
		return false
	}
	return true
}

// readLoop handles messages one at a time, in order, as QEMU does for a
// monitor without out-of-band execution.
func (s *Session) readLoop() {
	sp := newSplitter(s.rw, s.srv.opts.MaxMessage)
	var unsubscribe func()
	defer func() {
		if unsubscribe != nil {
			unsubscribe()
		}
	}()
	for {
		msg, limitErr, err := sp.next()
		if err != nil {
			return
		}
		if limitErr != "" {
			s.enqueue(reply(nil, schema.Errorf("%s", limitErr), nil))
			continue
		}
		if msg == nil {
			continue
		}
		wasNegotiated := s.negotiated
		s.handle(msg)
		if !wasNegotiated && s.negotiated {
			unsubscribe = s.srv.bus.Subscribe(func(e events.Event) { s.enqueue(e.MarshalQMP()) })
		}
		if s.closed.Load() {
			return
		}
	}
}

// handle runs one message and queues its reply.
func (s *Session) handle(msg []byte) {
	req, qerr := parseRequest(msg, s.oob)
	if qerr != nil {
		s.enqueue(reply(nil, qerr, req.id))
		return
	}
	if !s.negotiated && req.name != "qmp_capabilities" {
		s.enqueue(reply(nil, schema.ClassErrorf(schema.ClassCommandNotFound,
			"Expecting capabilities negotiation with 'qmp_capabilities'"), req.id))
		return
	}
	allowOOB, ok := s.srv.d.Lookup(req.name)
	if !ok {
		s.enqueue(reply(nil, schema.ClassErrorf(schema.ClassCommandNotFound,
			"The command %s has not been found", req.name), req.id))
		return
	}
	if req.oob && !allowOOB {
		s.enqueue(reply(nil, schema.Errorf("The command %s does not support OOB", req.name), req.id))
		return
	}
	ctx := context.WithValue(context.Background(), sessionKey{}, s)
	s.srv.d.Execute(ctx, req.name, req.args, func(ret json.RawMessage, err error) {
		if err != nil {
			s.enqueue(reply(nil, schema.AsError(err), req.id))
			return
		}
		s.enqueue(reply(ret, nil, req.id))
	})
}

// Dispatcher runs commands; in blockd it is the graph owner.
type Dispatcher interface {
	// Lookup reports whether a command exists and whether it allows OOB.
	Lookup(name string) (allowOOB, ok bool)
	// Execute runs a command and calls deliver with its encoded return
	// value or error before the dispatcher does anything else, then
	// returns.
	Execute(ctx context.Context, name string, args json.RawMessage, deliver func(json.RawMessage, error))
}
