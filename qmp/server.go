// Package qmp owns the QEMU Machine Protocol on the wire: the greeting,
// capabilities negotiation, message framing and validation, ids, error
// replies, and events out, with one reader and one writer goroutine per
// connection. Commands themselves are run by a Dispatcher.
package qmp

import (
	"encoding/json"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/google/uuid"

	"blockd/events"
	"blockd/internal/accept"
	"blockd/internal/wire"
)

// Greeting is what the server announces: the QEMU command level blockd
// follows and blockd's own package string.
type Greeting struct {
	Major, Minor, Micro int
	Package             string
}

// Options tune a Server; zero values pick QEMU-compatible defaults.
type Options struct {
	MaxMessage int // largest accepted message in bytes
	Greeting   Greeting
}

// Server accepts monitor connections.
type Server struct {
	d    Dispatcher
	bus  *events.Bus
	log  *zap.Logger
	opts Options

	nextID    atomic.Uint64
	listeners accept.Listeners
	mu        sync.Mutex
	sessions  map[*Session]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// NewServer returns a server dispatching to d and forwarding bus events to
// every negotiated session.
func NewServer(d Dispatcher, bus *events.Bus, log *zap.Logger, opts Options) *Server {
	if opts.MaxMessage <= 0 {
		opts.MaxMessage = DefaultMaxMessage
	}
	return &Server{d: d, bus: bus, log: log, opts: opts, sessions: map[*Session]struct{}{}}
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	return s.listeners.Serve(l, func(c net.Conn) { s.ServeConn(c) }, s.log)
}

// ServeConn runs a monitor on an established stream (a socket or stdio)
// in the background.
func (s *Server) ServeConn(rw io.ReadWriteCloser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		_ = rw.Close()
		return
	}
	sess := &Session{
		ID:   s.nextID.Add(1),
		UUID: uuid.NewString(),
		srv:  s,
		rw:   rw,
	}
	sess.log = s.log.With(zap.String("conn", sess.UUID))
	sess.out = wire.NewQueue(rw, frame, func(queued int) {
		sess.log.Warn("monitor client lets its events pile up without reading; disconnecting",
			zap.Int("queued", queued))
		_ = rw.Close()
	})
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sess.log.Debug("monitor connected")
		sess.enqueue(s.greeting())
		sess.readLoop()
		// Send what is queued (the reply to a last command before EOF),
		// then close: a client that half-closed still gets every reply.
		sess.out.Finish(finishTimeout)
		<-sess.out.Done()
		_ = rw.Close()
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		sess.log.Debug("monitor disconnected")
	}()
}

func (s *Server) greeting() []byte {
	g := s.opts.Greeting
	type qemuVersion struct {
		Micro int `json:"micro"`
		Minor int `json:"minor"`
		Major int `json:"major"`
	}
	type version struct {
		Qemu    qemuVersion `json:"qemu"`
		Package string      `json:"package"`
	}
	type qmp struct {
		Version      version  `json:"version"`
		Capabilities []string `json:"capabilities"`
	}
	b, _ := json.Marshal(struct {
		QMP qmp `json:"QMP"`
	}{qmp{version{qemuVersion{g.Micro, g.Minor, g.Major}, g.Package}, []string{"oob"}}})
	return b
}

// Close stops accepting and ends every session after it has sent what is
// queued for it (quit's own reply among them). Sockets stop reading first;
// a stdio session, whose reader may sit in read(2) forever, is told
// directly that no more input will be handled. Close waits a bounded time
// for the writers, not for readers blocked on input.
func (s *Server) Close() {
	s.listeners.Close()
	s.mu.Lock()
	s.closing = true
	sessions := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
		if cr, ok := sess.rw.(interface{ CloseRead() error }); ok {
			_ = cr.CloseRead()
		} else {
			sess.out.Finish(closeTimeout)
		}
	}
	s.mu.Unlock()
	deadline := time.After(closeTimeout)
	for _, sess := range sessions {
		select {
		case <-sess.out.Done():
		case <-deadline:
			s.log.Warn("a monitor did not take its last replies in time")
		}
		sess.out.Close()
		_ = sess.rw.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(100 * time.Millisecond):
		// Readers blocked on stdin end with the process.
	}
}

// closeTimeout bounds how long shutdown waits for sessions to flush.
const closeTimeout = 10 * time.Second
