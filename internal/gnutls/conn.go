package gnutls

import (
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// Conn is a GnuTLS session over a socket, as a net.Conn. One Read and one
// Write may run at the same time (GnuTLS allows one sender and one
// receiver per session); further readers or writers queue.
type Conn struct {
	l    *lib
	nc   net.Conn
	rc   syscall.RawConn
	s    uintptr // gnutls_session_t
	peer string

	rmu sync.Mutex
	wmu sync.Mutex

	// The session is freed when it is closed and no call is inside it.
	mu      sync.Mutex
	refs    int
	closed  bool
	onFree  func()
	freed   bool
	closeMu sync.Once
}

// Error is a failed TLS operation, with GnuTLS's error text.
type Error struct {
	Op   string // "handshake", "read", "write"
	Code int
	Text string
}

func (e *Error) Error() string {
	switch e.Op {
	case "handshake":
		return "TLS handshake failed: " + e.Text
	case "read":
		return "Cannot read from TLS channel: " + e.Text
	}
	return "Cannot write to TLS channel: " + e.Text
}

func newConn(l *lib, nc net.Conn, end uint32, onFree func()) (*Conn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("gnutls: %T is not a socket", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, err
	}
	c := &Conn{l: l, nc: nc, rc: rc, onFree: onFree}
	if ret := l.initSession(&c.s, end|flagNonblock|flagNoSignal); ret < 0 {
		return nil, fmt.Errorf("Cannot initialize TLS session: %s", errText(int(ret)))
	}
	// The descriptor is non-blocking (Go's poller owns it): GnuTLS answers
	// E_AGAIN and the poller waits. No GnuTLS timeout: with one, GnuTLS
	// would poll(2) the descriptor itself and block the thread; nc's
	// deadline bounds the handshake instead.
	l.transportSetInt2(c.s, int32(fd), int32(fd))
	l.handshakeTimeout(c.s, 0)
	return c, nil
}

// wait runs op until it stops answering E_AGAIN, waiting for the socket
// to become readable (or writable) in between. op runs inside the
// RawConn callback, so the descriptor cannot be closed under it.
func (c *Conn) wait(write bool, op func() (again bool)) error {
	f := func(uintptr) bool { return !op() }
	if write {
		return c.rc.Write(f)
	}
	return c.rc.Read(f)
}

// handshake drives gnutls_handshake, waiting in the direction GnuTLS
// says it is blocked on.
func (c *Conn) handshake() error {
	write := false
	for {
		var ret int32
		switched := false
		err := c.wait(write, func() bool {
			ret = c.l.handshake(c.s)
			for ret == eInterrupted {
				ret = c.l.handshake(c.s)
			}
			if ret != eAgain {
				return false
			}
			w := c.l.recordDirection(c.s) == 1
			if w != write {
				write, switched = w, true
				return false
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("TLS handshake failed: %w", err)
		}
		if switched {
			continue
		}
		if ret < 0 {
			return &Error{Op: "handshake", Code: int(ret), Text: errText(int(ret))}
		}
		return nil
	}
}

// PeerUsername is the PSK identity the client authenticated with.
func (c *Conn) PeerUsername() string { return c.peer }

// Protocol is the negotiated protocol version, e.g. "TLS1.3".
func (c *Conn) Protocol() string {
	if !c.acquire() {
		return ""
	}
	defer c.release()
	return c.l.protocolName(c.l.protocolVersion(c.s))
}

func (c *Conn) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.refs++
	return true
}

func (c *Conn) release() {
	c.mu.Lock()
	c.refs--
	last := c.closed && c.refs == 0
	c.mu.Unlock()
	if last {
		c.free()
	}
}

// free deinitialises the session once.
func (c *Conn) free() {
	c.mu.Lock()
	done := c.freed
	c.freed = true
	c.mu.Unlock()
	if done {
		return
	}
	c.l.deinit(c.s)
	if c.onFree != nil {
		c.onFree()
	}
}

// Read reads decrypted data. A close_notify or a peer that hung up reads
// as io.EOF.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	for {
		var n int
		err := c.wait(false, func() bool {
			n = c.l.recordRecv(c.s, p, uintptr(len(p)))
			for n == eInterrupted {
				n = c.l.recordRecv(c.s, p, uintptr(len(p)))
			}
			return n == eAgain
		})
		switch {
		case err != nil:
			return 0, err
		case n > 0:
			return n, nil
		case n == 0, n == ePrematureTermination:
			return 0, io.EOF
		case n == eWarningAlertReceived:
			continue
		}
		return 0, &Error{Op: "read", Code: n, Text: errText(n)}
	}
}

// Write encrypts and sends all of p.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	off := 0
	for off < len(p) {
		var n int
		// After E_AGAIN GnuTLS wants the same arguments again: off only
		// moves on success.
		err := c.wait(true, func() bool {
			n = c.l.recordSend(c.s, p[off:], uintptr(len(p)-off))
			for n == eInterrupted {
				n = c.l.recordSend(c.s, p[off:], uintptr(len(p)-off))
			}
			return n == eAgain
		})
		if err != nil {
			return off, err
		}
		if n < 0 {
			return off, &Error{Op: "write", Code: n, Text: errText(n)}
		}
		off += n
	}
	return off, nil
}

// Close sends close_notify when no write is under way (without waiting
// for the peer), closes the socket and frees the session once no Read or
// Write is inside it.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.closeMu.Do(func() {
		if c.wmu.TryLock() {
			if c.acquire() {
				_ = c.rc.Write(func(uintptr) bool {
					c.l.bye(c.s, shutWR)
					return true
				})
				c.release()
			}
			c.wmu.Unlock()
		}
		err = c.nc.Close()
		c.mu.Lock()
		c.closed = true
		last := c.refs == 0
		c.mu.Unlock()
		if last {
			c.free()
		}
	})
	return err
}

func (c *Conn) LocalAddr() net.Addr                { return c.nc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.nc.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
