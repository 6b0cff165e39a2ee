package nbd

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"blockd/blockio"
)

// Bitmap is the hook for a qemu:dirty-bitmap:NAME meta context: Status
// reports whether the range starting at off is dirty and for how many
// bytes (at most length).
type Bitmap struct {
	Name   string
	Status func(off, length int64) (dirty bool, n int64, err error)
}

// Export is what the server serves under one name. The fields are set
// before AddExport and not changed afterwards.
type Export struct {
	Name        string
	Description string
	// Dev is the data path; it may change underneath (it follows node
	// replacement), the server only calls it.
	Dev      blockio.Device
	Size     int64
	ReadOnly bool
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: every connection goes
	// through the same data path, so a flush on one covers writes
	// completed on all.
	MultiConn       bool
	AllocationDepth bool
	Bitmaps         []Bitmap
	// MinBlock is the request alignment (1 unless the node needs more).
	MinBlock uint32

	mu      sync.Mutex
	conns   map[*conn]struct{}
	left    chan struct{} // closed (and replaced) when a connection leaves
	closing bool
	gone    func() // called once when closing and no connection is left
}

// Connections is the number of clients using the export.
func (e *Export) Connections() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// ConnectionsStaying is the number of clients using the export once
// those that have hung up are gone. A client that sent NBD_CMD_DISC and
// closed its socket has left as far as it knows, but its goroutine may
// not have run yet: a manager that deletes the export right after its
// client exited must not be told the export is still in use. So when
// every remaining client has hung up, this waits (up to limit) for their
// goroutines to finish; a client still connected counts at once.
func (e *Export) ConnectionsStaying(limit time.Duration) int {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		e.mu.Lock()
		n, left := len(e.conns), e.leftLocked()
		staying := 0
		for c := range e.conns {
			if !c.peerHungUp() {
				staying++
			}
		}
		e.mu.Unlock()
		if n == 0 || staying > 0 {
			return staying
		}
		select {
		case <-left:
		case <-deadline.C:
			return n // hung up but stuck in requests: still in use
		}
	}
}

func (e *Export) leftLocked() chan struct{} {
	if e.left == nil {
		e.left = make(chan struct{})
	}
	return e.left
}

// flags are the transmission flags, each only where the export supports
// the command (QEMU's nbd_export_create).
func (e *Export) flags() uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache
	if e.ReadOnly {
		f |= FlagReadOnly
	} else {
		f |= FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if e.MultiConn || e.ReadOnly {
		f |= FlagCanMultiConn
	}
	return f
}

// acquire registers a connection; false when the export is going away.
func (e *Export) acquire(c *conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing {
		return false
	}
	if e.conns == nil {
		e.conns = map[*conn]struct{}{}
	}
	e.conns[c] = struct{}{}
	return true
}

func (e *Export) release(c *conn) {
	e.mu.Lock()
	delete(e.conns, c)
	if e.left != nil {
		close(e.left)
		e.left = nil
	}
	gone := e.idleLocked()
	e.mu.Unlock()
	if gone != nil {
		gone()
	}
}

func (e *Export) idleLocked() func() {
	if !e.closing || len(e.conns) > 0 || e.gone == nil {
		return nil
	}
	g := e.gone
	e.gone = nil
	return g
}

// TLSServer starts TLS on a client's connection after NBD_OPT_STARTTLS:
// it runs the server handshake (and any authorization of the peer) and
// returns the encrypted connection. The credentials and the TLS stack
// are the caller's (objects.Registry.TLSServer).
type TLSServer interface {
	Handshake(nc net.Conn) (net.Conn, error)
}

// Options configure a server.
type Options struct {
	// TLS, when set, makes TLS mandatory: every option but STARTTLS and
	// ABORT is refused with NBD_REP_ERR_TLS_REQD before it.
	TLS TLSServer
	// MaxConnections bounds simultaneous clients (0: unbounded).
	MaxConnections int
	// MaxInFlight bounds concurrent requests per connection (default
	// DefaultMaxInFlight).
	MaxInFlight int
	// HandshakeTimeout bounds negotiation (default 10s), so a client that
	// connects and says nothing does not hold a connection for ever.
	HandshakeTimeout time.Duration
	Log              *zap.Logger
}

// DefaultMaxInFlight is the requests a connection runs at once unless
// Options say otherwise. 12, not the 16 of qemu-storage-daemon: against
// an rbd image a deeper queue adds daemon CPU and no throughput, since
// the OSD likely serves the writes of one object in order (nbdcopy
// writing 256 MiB, sets of 8 runs: 8-15% faster with 12 than with 16
// in three sets, 8 and 10 slower than 12 in a fourth); file exports
// are no slower with 12 (docs/benchmarks.md).
const DefaultMaxInFlight = 12

// Server serves exports to NBD clients.
type Server struct {
	opts Options
	log  *zap.Logger

	mu        sync.Mutex
	exports   map[string]*Export
	order     []*Export // for NBD_OPT_LIST, in the order added
	listeners []net.Listener
	conns     map[*conn]struct{}
	closed    bool
	slots     chan struct{} // MaxConnections
	wg        sync.WaitGroup
	pipesOpen atomic.Int32 // for reads sent from files (splice.go)
}

// NewServer returns a server with no exports and no listeners.
func NewServer(o Options) *Server {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	s := &Server{opts: o, log: o.Log, exports: map[string]*Export{}, conns: map[*conn]struct{}{}}
	if o.MaxConnections > 0 {
		s.slots = make(chan struct{}, o.MaxConnections)
	}
	return s
}

// ErrNameInUse is returned by AddExport for a name already served.
var ErrNameInUse = errors.New("nbd: export name in use")

// AddExport starts serving e under e.Name.
func (s *Server) AddExport(e *Export) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.exports[e.Name]; dup {
		return ErrNameInUse
	}
	if e.MinBlock == 0 {
		e.MinBlock = 1
	}
	s.exports[e.Name] = e
	s.order = append(s.order, e)
	return nil
}

// Lookup returns the export served under name, or nil.
func (s *Server) Lookup(name string) *Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exports[name]
}

// RemoveExport stops offering e to new clients. With hard, its clients
// are disconnected; otherwise they keep it until they leave. gone is
// called once no client uses it any more: before RemoveExport returns
// when there is none, or later from the last client's goroutine.
func (s *Server) RemoveExport(e *Export, hard bool, gone func()) {
	s.mu.Lock()
	if s.exports[e.Name] == e {
		delete(s.exports, e.Name)
		for i, x := range s.order {
			if x == e {
				s.order = append(s.order[:i:i], s.order[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
	e.mu.Lock()
	e.closing = true
	e.gone = gone
	var kill []*conn
	if hard {
		for c := range e.conns {
			kill = append(kill, c)
		}
	}
	g := e.idleLocked()
	e.mu.Unlock()
	for _, c := range kill {
		c.abort()
	}
	if g != nil {
		g()
	}
}

func (s *Server) list() []*Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Export(nil), s.order...)
}

// Serve accepts clients on l until l or the server is closed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return net.ErrClosed
	}
	s.listeners = append(s.listeners, l)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		if s.slots != nil {
			s.slots <- struct{}{}
		}
		nc, err := l.Accept()
		if err != nil {
			if s.slots != nil {
				<-s.slots
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off rather than spin.
			s.log.Warn("nbd accept failed", zap.Error(err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !s.startConn(nc) {
			return nil
		}
	}
}

// startConn serves one client in its own goroutine.
func (s *Server) startConn(nc net.Conn) bool {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if s.slots != nil {
			<-s.slots
		}
	}()
	return true
}

// Close stops listening, disconnects every client and waits for their
// goroutines; requests in flight finish first.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = nil
	var cs []*conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	for _, c := range cs {
		c.abort()
	}
	s.wg.Wait()
}
