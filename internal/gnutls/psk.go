package gnutls

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"

	"blockd/internal/errtext"
)

// creds are allocated GnuTLS credentials shared by sessions: Close frees
// them once the last session using them has ended.
type creds struct {
	l        *lib
	cred     uintptr
	flags    uint32 // flagServer or flagClient
	priority string
	freeFn   func()

	mu     sync.Mutex
	refs   int
	closed bool
}

// PSKServer is a set of server-side PSK credentials (a keys.psk file of
// "username:hexkey" lines, read by GnuTLS at each handshake) and the
// priority string its sessions use.
type PSKServer struct {
	creds
	dh uintptr // 0 with the RFC 7919 group (no dh-params.pem)
}

// PSKClient is a PSK identity (username and key) for client sessions.
type PSKClient struct{ creds }

// NewPSKServer loads GnuTLS if needed and allocates the credentials.
// dhParams is a PKCS#3 PEM file, or "" for GnuTLS's RFC 7919 parameters
// (2048-bit, known at once rather than generated as the reference does).
func NewPSKServer(pskFile, dhParams, priority string) (*PSKServer, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	l := loaded
	s := &PSKServer{creds: creds{l: l, flags: flagServer, priority: priority}}
	if ret := l.pskAllocServer(&s.cred); ret < 0 {
		return nil, fmt.Errorf("Cannot allocate credentials: %s", errText(int(ret)))
	}
	s.freeFn = func() {
		l.pskFreeServer(s.cred)
		if s.dh != 0 {
			l.dhDeinit(s.dh)
		}
	}
	if dhParams != "" {
		dh, err := importDH(l, dhParams)
		if err != nil {
			s.freeFn()
			return nil, err
		}
		s.dh = dh
		l.pskSetServerDH(s.cred, s.dh)
	} else if ret := l.pskSetServerKnownDH(s.cred, secParamMedium); ret < 0 {
		s.freeFn()
		return nil, fmt.Errorf("Unable to set DH parameters: %s", errText(int(ret)))
	}
	if ret := l.pskSetServerFile(s.cred, pskFile); ret < 0 {
		s.freeFn()
		return nil, fmt.Errorf("Cannot set PSK server credentials from %s: %s", pskFile, errText(int(ret)))
	}
	return s, nil
}

// importDH reads dh-params.pem (PKCS#3, PEM) with the reference's error
// texts.
func importDH(l *lib, path string) (uintptr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("Failed to open file “%s”: %s", path, errtext.Strerror(errtext.Errno(err)))
	}
	var dh uintptr
	if ret := l.dhInit(&dh); ret < 0 {
		return 0, fmt.Errorf("Unable to initialize DH parameters: %s", errText(int(ret)))
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	d := datum{size: uint32(len(b))}
	if len(b) > 0 {
		d.data = &b[0]
		pin.Pin(d.data)
	}
	if ret := l.dhImportPKCS3(dh, &d, x509FmtPEM); ret < 0 {
		l.dhDeinit(dh)
		return 0, fmt.Errorf("Unable to load DH parameters from %s: %s", path, errText(int(ret)))
	}
	return dh, nil
}

// CheckDHParams loads GnuTLS and checks that path holds DH parameters it
// can use, for errors at credential creation as the reference gives them.
func CheckDHParams(path string) error {
	if err := Load(); err != nil {
		return err
	}
	dh, err := importDH(loaded, path)
	if err != nil {
		return err
	}
	loaded.dhDeinit(dh)
	return nil
}

// NewPSKClient loads GnuTLS if needed and sets up the identity username
// with the key given in hex, as keys.psk holds it.
func NewPSKClient(username, hexKey, priority string) (*PSKClient, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	l := loaded
	c := &PSKClient{creds{l: l, flags: flagClient, priority: priority}}
	if ret := l.pskAllocClient(&c.cred); ret < 0 {
		return nil, fmt.Errorf("Cannot allocate credentials: %s", errText(int(ret)))
	}
	c.freeFn = func() { l.pskFreeClient(c.cred) }
	key := []byte(hexKey)
	var pin runtime.Pinner
	defer pin.Unpin()
	d := datum{size: uint32(len(key))}
	if len(key) > 0 {
		d.data = &key[0]
		pin.Pin(d.data)
	}
	if ret := l.pskSetClient(c.cred, username, &d, pskKeyHex); ret < 0 {
		c.freeFn()
		return nil, fmt.Errorf("Cannot set PSK client credentials: %s", errText(int(ret)))
	}
	return c, nil
}

// Close frees the credentials after the last session using them.
func (c *creds) Close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	last := c.refs == 0 && !already
	c.mu.Unlock()
	if last {
		c.freeFn()
	}
}

func (c *creds) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.refs++
	return true
}

func (c *creds) release() {
	c.mu.Lock()
	c.refs--
	last := c.closed && c.refs == 0
	c.mu.Unlock()
	if last {
		c.freeFn()
	}
}

// Handshake runs the server side of a TLS handshake on nc, which must be
// a socket (net.TCPConn, net.UnixConn, or any syscall.Conn). It honours
// nc's deadlines. On failure nc is left open for the caller to close.
func (s *PSKServer) Handshake(nc net.Conn) (*Conn, error) {
	c, err := s.session(nc)
	if err != nil {
		return nil, err
	}
	c.peer = s.l.pskServerUsername(c.s)
	return c, nil
}

// Handshake runs the client side of a TLS handshake on nc (a socket).
func (p *PSKClient) Handshake(nc net.Conn) (*Conn, error) {
	return p.session(nc)
}

// session starts a session with these credentials and shakes hands.
func (cr *creds) session(nc net.Conn) (*Conn, error) {
	if !cr.acquire() {
		return nil, net.ErrClosed
	}
	c, err := newConn(cr.l, nc, cr.flags, cr.release)
	if err != nil {
		cr.release()
		return nil, err
	}
	l := cr.l
	if ret := l.prioritySetDirect(c.s, cr.priority, nil); ret < 0 {
		c.free()
		return nil, fmt.Errorf("Unable to set TLS session priority %s: %s", cr.priority, errText(int(ret)))
	}
	if ret := l.credentialsSet(c.s, crdPSK, cr.cred); ret < 0 {
		c.free()
		return nil, fmt.Errorf("Cannot set session credentials: %s", errText(int(ret)))
	}
	if err := c.handshake(); err != nil {
		c.free()
		return nil, err
	}
	return c, nil
}
