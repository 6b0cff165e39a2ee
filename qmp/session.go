package qmp

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/wire"
	"blockd/schema"
)

// Session is one monitor connection. Its negotiation state is written only
// by the command handler that runs while the session's reader waits for
// the reply, so the channel hand-off orders every access.
type Session struct {
	ID         uint64
	UUID       string // correlates the connection's log lines
	negotiated bool
	oob        bool

	srv *Server
	rw  io.ReadWriteCloser
	log *zap.Logger
	out *wire.Queue
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

// enqueue hands a message to the writer without ever blocking, so neither
// the graph owner nor the event bus can be stalled by a slow client.
func (s *Session) enqueue(msg []byte) { s.out.Push(msg) }

// frame is a message's wire form: QEMU's spacing and a newline.
func frame(msg []byte) []byte { return append(qemuSpacing(msg), '\n') }

// finishTimeout bounds the flush of queued output after the client closed
// its side.
const finishTimeout = 5 * time.Second

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
	// Waiting for room before each message throttles a client that
	// pipelines commands faster than it reads the replies.
	for s.out.WaitRoom() {
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
