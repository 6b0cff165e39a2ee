package nbd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"blockd/internal/errtext"
	"blockd/internal/rawsock"
	"blockd/nbd"
)

// Address is where the server listens: a Unix socket path or a TCP
// host and port.
type Address struct {
	Unix string
	Host string // for vsock, the CID
	Port string
	// Network is "tcp", "tcp4" or "tcp6" for TCP, "vsock" for AF_VSOCK.
	Network string
	// CID and VsockPort are the parsed vsock address.
	CID, VsockPort uint32
}

// String is the address as QEMU's connect errors show it.
func (a Address) String() string {
	if a.Unix != "" {
		return a.Unix
	}
	return a.Host + ":" + a.Port
}

// Config is a client's connection recipe, used again on every reconnect.
type Config struct {
	Addr   Address
	Export string
	TLS    *tls.Config // nil: no TLS
	// TLSHandshake replaces crypto/tls for TLS-PSK credentials.
	TLSHandshake func(nc net.Conn) (net.Conn, error)
	// Context is the meta context block status reports: base:allocation,
	// or x-dirty-bitmap's context.
	Context string
	// ReconnectDelay is how long requests wait for a lost connection to
	// come back before they fail (0: they fail at once).
	ReconnectDelay time.Duration
	// HandshakeTimeout bounds one connection attempt's negotiation, so a
	// server that accepts and says nothing cannot hold blockdev-add.
	HandshakeTimeout time.Duration
}

// state is the client's connection state (QEMU's NBDClientState).
type state int

const (
	connected state = iota
	waiting         // lost; requests wait until deadline
	failing         // lost for longer than the delay; requests fail at once
	quit            // protocol error or closed: no more connections
)

// maxInFlight is QEMU's MAX_NBD_REQUESTS.
const maxInFlight = 16

// Client is one nbd node's link to its server: a connection that is
// replaced on loss, and the requests in flight on it.
type Client struct {
	cfg   Config
	Info  nbd.ExportInfo // from the first connection; reconnects must match
	slots chan struct{}

	mu       sync.Mutex
	cur      *conn
	st       state
	deadline time.Time
	changed  chan struct{} // closed and replaced at every state change
	drained  int           // drained sections of the node in progress
	stop     chan struct{} // closed by Close
	loops    sync.WaitGroup
}

// dial makes one connection attempt: connect, then negotiate.
func dial(cfg Config) (*conn, error) {
	var nc net.Conn
	var err error
	switch {
	case cfg.Addr.Unix != "":
		nc, err = net.Dial("unix", cfg.Addr.Unix)
	case cfg.Addr.Network == "vsock":
		nc, err = rawsock.DialVsock(cfg.Addr.CID, cfg.Addr.VsockPort)
	default:
		nc, err = net.Dial(cfg.Addr.Network, net.JoinHostPort(cfg.Addr.Host, cfg.Addr.Port))
	}
	if err != nil {
		return nil, fmt.Errorf("Failed to connect to '%s': %s", cfg.Addr, errtext.Strerror(errtext.Errno(err)))
	}
	if cfg.HandshakeTimeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	}
	hc := nbd.HandshakeConfig{Export: cfg.Export, TLS: cfg.TLS, TLSHandshake: cfg.TLSHandshake, Structured: true}
	if cfg.Context != "" {
		hc.MetaContexts = []string{cfg.Context}
	}
	tc, info, err := nbd.ClientHandshake(nc, hc)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return newConn(tc, info), nil
}

// Connect opens the first connection, trying again until openTimeout has
// passed (0: once), as QEMU's open-timeout does.
func Connect(cfg Config, openTimeout time.Duration) (*Client, error) {
	end := time.Now().Add(openTimeout)
	wait := 100 * time.Millisecond
	for {
		c, err := dial(cfg)
		if err == nil {
			cl := &Client{cfg: cfg, Info: *c.info, cur: c, slots: make(chan struct{}, maxInFlight),
				changed: make(chan struct{}), stop: make(chan struct{})}
			cl.watch(c)
			return cl, nil
		}
		var oe *nbd.OptionError
		if errors.As(err, &oe) || time.Now().Add(wait).After(end) {
			return nil, err
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// setState changes the state and wakes everyone waiting on it; mu held.
func (cl *Client) setState(s state) {
	cl.st = s
	close(cl.changed)
	cl.changed = make(chan struct{})
}

// watch starts the goroutine that notices when c ends and reconnects.
func (cl *Client) watch(c *conn) {
	cl.loops.Add(1)
	go func() {
		defer cl.loops.Done()
		select {
		case <-c.done:
		case <-cl.stop:
			return
		}
		cl.lost(c)
	}()
}

// lost handles the end of connection c: a protocol error ends the client
// for good; a lost connection makes requests wait up to the reconnect
// delay while a reconnect loop runs.
func (cl *Client) lost(c *conn) {
	cl.mu.Lock()
	if cl.cur != c || cl.st == quit {
		cl.mu.Unlock()
		return
	}
	cl.cur = nil
	var pe *protocolError
	if errors.As(c.broken(), &pe) {
		cl.setState(quit)
		cl.mu.Unlock()
		return
	}
	if cl.cfg.ReconnectDelay > 0 {
		cl.deadline = time.Now().Add(cl.cfg.ReconnectDelay)
		cl.setState(waiting)
	} else {
		cl.setState(failing)
	}
	cl.loops.Add(1)
	cl.mu.Unlock()
	go cl.reconnect()
}

// reconnect tries again with a backoff from 100 ms to 2 s until it
// succeeds or the client closes.
func (cl *Client) reconnect() {
	defer cl.loops.Done()
	wait := 100 * time.Millisecond
	for {
		c, err := dial(cl.cfg)
		if err == nil {
			if err = cl.compatible(c.info); err != nil {
				c.close()
			}
		}
		if err == nil {
			cl.mu.Lock()
			if cl.st == quit {
				cl.mu.Unlock()
				c.close()
				return
			}
			cl.cur = c
			cl.setState(connected)
			cl.mu.Unlock()
			cl.watch(c)
			return
		}
		select {
		case <-cl.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// compatible: a reconnect must find the export as it was.
func (cl *Client) compatible(in *nbd.ExportInfo) error {
	if in.Size != cl.Info.Size {
		return fmt.Errorf("export size changed from %d to %d", cl.Info.Size, in.Size)
	}
	if in.Flags&nbd.FlagReadOnly != 0 && cl.Info.Flags&nbd.FlagReadOnly == 0 {
		return errors.New("export became read-only")
	}
	return nil
}

// errFailed is what requests get when no connection comes back in time,
// or after a protocol error.
var errFailed = fmt.Errorf("nbd: server not connected: %w", syscall.EIO)

// conn returns the connection to send on, waiting while a reconnect is
// awaited and the delay has not passed.
func (cl *Client) conn() (*conn, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for {
		switch cl.st {
		case connected:
			return cl.cur, nil
		case failing, quit:
			return nil, errFailed
		}
		left := time.Until(cl.deadline)
		if left <= 0 || cl.drained > 0 {
			cl.setState(failing)
			return nil, errFailed
		}
		ch := cl.changed
		cl.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
		cl.mu.Lock()
	}
}

// do runs one request. A request whose connection is lost is sent again
// on the next one, as long as a reconnect is awaited (QEMU's
// nbd_co_request does the same); after the delay it fails with EIO.
func (cl *Client) do(mk func() *call, payload []byte) (*call, error) {
	cl.slots <- struct{}{}
	defer func() { <-cl.slots }()
	for {
		c, err := cl.conn()
		if err != nil {
			return nil, err
		}
		k := mk()
		err = c.roundTrip(k, payload)
		if err == errLost {
			cl.lost(c)
			continue
		}
		var pe *protocolError
		if errors.As(err, &pe) {
			cl.lost(c)
			return nil, fmt.Errorf("%s: %w", pe.msg, syscall.EIO)
		}
		return k, err
	}
}

// DrainBegin: a drained section does not wait for a reconnect; requests
// waiting for one fail now, as nbd_client_co_drain_begin makes them.
func (cl *Client) DrainBegin() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.drained++
	if cl.st == waiting {
		cl.setState(failing)
	}
}

// DrainEnd ends a drained section.
func (cl *Client) DrainEnd() {
	cl.mu.Lock()
	cl.drained--
	cl.mu.Unlock()
}

// Close ends the client: the connection (with NBD_CMD_DISC) and any
// reconnect loop. Requests still waiting fail.
func (cl *Client) Close() {
	cl.mu.Lock()
	if isClosed(cl.stop) {
		cl.mu.Unlock()
		return
	}
	c := cl.cur
	cl.cur = nil
	cl.setState(quit)
	close(cl.stop)
	cl.mu.Unlock()
	if c != nil {
		c.close()
	}
	cl.loops.Wait()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
