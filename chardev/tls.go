package chardev

import (
	"errors"
	"net"
	"sync"
	"time"
)

// tlsHandshakeTimeout bounds a TLS handshake on a socket chardev, so that
// a peer that connects and says nothing cannot hold the connection.
const tlsHandshakeTimeout = 10 * time.Second

// validateTLS is the TLS part of qmp_chardev_validate_socket: TLS runs
// over inet sockets only, and tls-authz needs tls-creds.
func validateTLS(o *Socket) error {
	tls := o.TLSCreds != nil
	switch a := o.Addr.Flat(); {
	case tls && a.Unix != nil:
		return errors.New("'tls_creds' option is incompatible with 'unix' address type")
	case tls && a.Vsock != nil:
		return errors.New("'tls_creds' option is incompatible with 'vsock' address type")
	case tls && a.Fd != nil && !(o.Server != nil && *o.Server):
		return errors.New("'tls_creds' option is incompatible with 'fd' address type as client")
	}
	if o.TLSAuthz != nil && !tls {
		return errors.New("'tls_authz' option requires 'tls_creds' option")
	}
	return nil
}

// socketTLS resolves a socket chardev's tls-creds as
// qmp_chardev_open_socket does, before anything listens or connects: the
// handshake each connection runs (nil without TLS) and what to release
// when the chardev closes.
func (r *Registry) socketTLS(o *Socket, listen bool) (func(net.Conn) (net.Conn, error), func(), error) {
	if o.TLSCreds == nil {
		return nil, func() {}, nil
	}
	if listen {
		srv, err := r.objs.TLSServer(*o.TLSCreds, o.TLSAuthz)
		if err != nil {
			return nil, nil, err
		}
		return srv.Handshake, srv.Close, nil
	}
	host := ""
	if a := o.Addr.Flat(); a.Inet != nil {
		host = a.Inet.Host
	}
	return r.objs.TLSClient(*o.TLSCreds, host, "Expected TLS credentials for a client endpoint")
}

// tlsConn runs the TLS handshake on its first Read or Write, in the
// goroutine that serves the connection, so that a slow or silent client
// never holds up the accepting one. A failed handshake fails every call.
type tlsConn struct {
	net.Conn // the socket, until the handshake has replaced it
	shake    func(net.Conn) (net.Conn, error)

	once sync.Once
	mu   sync.Mutex
	tls  net.Conn
	err  error
}

func newTLSConn(raw net.Conn, shake func(net.Conn) (net.Conn, error)) *tlsConn {
	return &tlsConn{Conn: raw, shake: shake}
}

func (c *tlsConn) handshake() (net.Conn, error) {
	c.once.Do(func() {
		_ = c.Conn.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
		tc, err := c.shake(c.Conn)
		_ = c.Conn.SetDeadline(time.Time{})
		c.mu.Lock()
		c.tls, c.err = tc, err
		c.mu.Unlock()
		if err != nil {
			_ = c.Conn.Close()
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tls, c.err
}

func (c *tlsConn) Read(p []byte) (int, error) {
	tc, err := c.handshake()
	if err != nil {
		return 0, err
	}
	return tc.Read(p)
}

func (c *tlsConn) Write(p []byte) (int, error) {
	tc, err := c.handshake()
	if err != nil {
		return 0, err
	}
	return tc.Write(p)
}

// Close closes the TLS session once there is one, the socket otherwise
// (which also ends a handshake in progress).
func (c *tlsConn) Close() error {
	c.mu.Lock()
	tc := c.tls
	c.mu.Unlock()
	if tc != nil {
		return tc.Close()
	}
	return c.Conn.Close()
}
