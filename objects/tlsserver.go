package objects

import (
	"crypto/tls"
	"fmt"
	"net"

	"go.uber.org/zap"

	"blockd/internal/gnutls"
	"blockd/schema"
)

// ServerTLS is the server side of TLS made from credentials, ready to
// take connections (nbd-server-start's tls-creds and tls-authz). Close
// releases what it holds once its sessions have ended.
type ServerTLS interface {
	Handshake(nc net.Conn) (net.Conn, error)
	Close()
}

// pskPriorityExtra is what the reference appends to the priority of a
// PSK session so that the PSK key exchanges are offered.
const pskPriorityExtra = "+ECDHE-PSK:+DHE-PSK:+PSK"

// defaultPriority is the reference's CONFIG_TLS_PRIORITY.
const defaultPriority = "NORMAL"

// pskPriority is the GnuTLS priority of a PSK session, as the reference
// builds it: the credentials' priority (or its default) with the PSK key
// exchanges added.
func (c *tlsCreds) pskPriority() string {
	prio := c.priority
	if prio == "" {
		prio = defaultPriority
	}
	return prio + ":" + pskPriorityExtra
}

// tlsInst is the TLS credentials object id, or the reference's error
// for an unknown id or an object of another type.
func (r *Registry) tlsInst(id string) (*tlsInst, error) {
	obj := r.lookup(id)
	if obj == nil {
		return nil, schema.Errorf("No TLS credentials with id '%s'", id)
	}
	t, ok := obj.inst.(*tlsInst)
	if !ok {
		return nil, schema.Errorf("Object with id '%s' is not TLS credentials", id)
	}
	return t, nil
}

// TLSServer returns the server side of the TLS credentials id. x509
// credentials run on crypto/tls, and authzID, when set, names the
// authz-simple object that must allow the client certificate's
// distinguished name, looked up at each handshake. PSK credentials run
// on GnuTLS, loaded now; as in the reference, a PSK session is not
// checked against authzID (there is no certificate to check).
func (r *Registry) TLSServer(id string, authzID *string) (ServerTLS, error) {
	t, err := r.tlsInst(id)
	if err != nil {
		return nil, err
	}
	c := t.creds
	if c.endpoint != "server" {
		return nil, schema.Errorf("Expected TLS credentials for a server endpoint")
	}
	if c.unsupported != "" {
		// The server starts; each client is refused after STARTTLS.
		return refusingServer{c.errUnsupported()}, nil
	}
	if c.psk {
		s, err := gnutls.NewPSKServer(c.pskFile, c.dhFile, c.pskPriority())
		if err != nil {
			return nil, schema.Errorf("%s", err)
		}
		r.log.Info("TLS-PSK server credentials loaded", zap.String("id", id), zap.String("gnutls", gnutls.Version()))
		return pskServer{s, r.log}, nil
	}
	cfg, err := c.serverConfig(id)
	if err != nil {
		return nil, schema.Errorf("%s", err)
	}
	return &x509Server{cfg: cfg, authz: authzID, r: r}, nil
}

// TLSClient returns the client side of the TLS credentials id for a
// connection to host: a handshake on GnuTLS for PSK, on crypto/tls for
// x509 (the server's certificate checked against host), and what to
// release once no more connections will be made. endpointErr is the
// caller's text for server credentials: QEMU's users word it each their
// own way.
func (r *Registry) TLSClient(id, host, endpointErr string) (func(net.Conn) (net.Conn, error), func(), error) {
	t, err := r.tlsInst(id)
	if err != nil {
		return nil, nil, err
	}
	if t.creds.endpoint != "client" {
		return nil, nil, schema.Errorf("%s", endpointErr)
	}
	if t.creds.psk {
		return r.TLSClientPSK(id)
	}
	cfg, err := t.creds.clientConfig(id)
	if err != nil {
		return nil, nil, schema.Errorf("%s", err)
	}
	cfg.ServerName = host
	handshake := func(nc net.Conn) (net.Conn, error) {
		tc := tls.Client(nc, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake failed: %w", err)
		}
		return tc, nil
	}
	return handshake, func() {}, nil
}

// TLSClientPSK returns the client side of the TLS-PSK credentials id: a
// GnuTLS client with their username and key, its handshake and its
// release. Other credentials give nil, nil (TLSClientConfig serves x509).
func (r *Registry) TLSClientPSK(id string) (func(net.Conn) (net.Conn, error), func(), error) {
	t, err := r.tlsInst(id)
	if err != nil {
		return nil, nil, err
	}
	c := t.creds
	if !c.psk {
		return nil, nil, nil
	}
	if c.endpoint != "client" {
		return nil, nil, schema.Errorf("Expecting TLS credentials with a client endpoint")
	}
	cl, err := gnutls.NewPSKClient(c.pskUser, c.pskKey, c.pskPriority())
	if err != nil {
		return nil, nil, schema.Errorf("%s", err)
	}
	handshake := func(nc net.Conn) (net.Conn, error) { return cl.Handshake(nc) }
	return handshake, cl.Close, nil
}

type pskServer struct {
	s   *gnutls.PSKServer
	log *zap.Logger
}

func (p pskServer) Handshake(nc net.Conn) (net.Conn, error) {
	c, err := p.s.Handshake(nc)
	if err != nil {
		return nil, err
	}
	p.log.Debug("TLS-PSK client", zap.String("username", c.PeerUsername()), zap.String("protocol", c.Protocol()))
	return c, nil
}

func (p pskServer) Close() { p.s.Close() }

type x509Server struct {
	cfg   *tls.Config
	authz *string
	r     *Registry
}

func (x *x509Server) Handshake(nc net.Conn) (net.Conn, error) {
	tc := tls.Server(nc, x.cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake failed: %w", err)
	}
	if x.authz != nil {
		dn := ""
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			dn = PeerName(certs[0])
		}
		ok, err := x.r.Authorize(*x.authz, dn)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("TLS x509 authz check for %s is denied", dn)
		}
	}
	return tc, nil
}

func (*x509Server) Close() {}

// refusingServer fails every handshake, as the reference does with
// credentials it cannot make a TLS session with.
type refusingServer struct{ err error }

func (s refusingServer) Handshake(net.Conn) (net.Conn, error) { return nil, s.err }
func (refusingServer) Close()                                 {}
