// Package nbd owns the nbd block driver: a node whose data is an export
// of a remote NBD server (qemu-nbd, qemu-storage-daemon, blockd, nbdkit),
// reached over a Unix socket or TCP, optionally with TLS (x509 on
// crypto/tls, PSK on GnuTLS).
//
// The wire format and the negotiation are the nbd package's (one
// implementation for server and client); this package owns transmission
// on the client side and the connection's life:
//
//   - conn.go: one negotiated connection. Requests carry a cookie; one
//     reader goroutine per connection matches simple replies and
//     structured chunks (data, holes, block status, errors) to the
//     waiting request and validates them, so up to 16 requests are in
//     flight per node with no goroutine per request. A server that
//     breaks the protocol (bad magic, unknown cookie, a chunk outside the
//     request) ends the connection and the client for good.
//   - client.go: reconnection. A lost connection makes requests wait up
//     to reconnect-delay seconds while a loop dials again (100 ms to 2 s
//     apart); requests in flight are sent again on the new connection,
//     and after the delay every request fails with EIO until a reconnect
//     succeeds. open-timeout retries the first connection.
//   - io.go: the blockio.Device over it, with block status from
//     base:allocation (or the x-dirty-bitmap context).
package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"strings"
	"time"

	"blockd/blockcore"
	"blockd/internal/qemu"
	"blockd/nbd"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "nbd", Protocol: true, Open: open})
}

// node is one open nbd node.
type node struct {
	*Client
	opts       *schema.BlockdevOptionsNbd
	releaseTLS func() // TLS-PSK credentials held for reconnects
}

// handshakeTimeout bounds one connection attempt's negotiation.
const handshakeTimeout = 30 * time.Second

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Nbd
	cfg := Config{HandshakeTimeout: handshakeTimeout, Context: nbd.ContextBaseAllocation}
	switch o.Server.Type {
	case "unix":
		u := o.Server.Unix
		if u.Abstract != nil && *u.Abstract {
			return nil, schema.Errorf("Abstract Unix sockets are not supported")
		}
		cfg.Addr = Address{Unix: u.Path}
	case "inet":
		in := o.Server.Inet
		cfg.Addr = Address{Host: in.Host, Port: in.Port, Network: "tcp"}
		switch {
		case in.Ipv4 != nil && *in.Ipv4 && !(in.Ipv6 != nil && *in.Ipv6):
			cfg.Addr.Network = "tcp4"
		case in.Ipv6 != nil && *in.Ipv6 && !(in.Ipv4 != nil && *in.Ipv4):
			cfg.Addr.Network = "tcp6"
		}
	case "vsock":
		v := o.Server.Vsock
		cid, ok := qemu.ParseUintFull(v.Cid, math.MaxUint32)
		if !ok {
			return nil, schema.Errorf("Failed to parse cid '%s'", v.Cid)
		}
		port, ok := qemu.ParseUintFull(v.Port, math.MaxUint32)
		if !ok {
			return nil, schema.Errorf("Failed to parse port '%s'", v.Port)
		}
		cfg.Addr = Address{Host: v.Cid, Port: v.Port, Network: "vsock", CID: uint32(cid), VsockPort: uint32(port)}
	case "fd":
		return nil, schema.Errorf("only QEMU supports file descriptor passing")
	default:
		return nil, schema.Errorf("socket family %s unsupported", o.Server.Type)
	}
	if o.Export != nil {
		cfg.Export = *o.Export
	}
	if o.XDirtyBitmap != nil {
		cfg.Context = *o.XDirtyBitmap
	}
	var releaseTLS func()
	if o.TLSCreds != nil {
		store := oc.Graph.Objects()
		if store == nil {
			return nil, schema.Errorf("No TLS credentials with id '%s'", *o.TLSCreds)
		}
		hs, release, err := store.TLSClientPSK(*o.TLSCreds)
		if err != nil {
			return nil, err
		}
		if hs != nil {
			cfg.TLSHandshake, releaseTLS = hs, release
		} else if cfg.TLS, err = tlsConfig(store, o, cfg.Addr); err != nil {
			return nil, err
		}
	}
	if releaseTLS == nil {
		releaseTLS = func() {}
	}
	if o.ReconnectDelay != nil {
		cfg.ReconnectDelay = time.Duration(*o.ReconnectDelay) * time.Second
	}
	var openTimeout time.Duration
	if o.OpenTimeout != nil {
		openTimeout = time.Duration(*o.OpenTimeout) * time.Second
	}
	cl, err := Connect(cfg, openTimeout)
	if err != nil {
		releaseTLS()
		return nil, schema.Errorf("%s", err)
	}
	if o.XDirtyBitmap != nil {
		if _, ok := cl.Info.Contexts[cfg.Context]; !ok {
			cl.Close()
			releaseTLS()
			// What qemu-storage-daemon 7.2 answers (its own message is
			// lost on the way and only the errno is shown).
			return nil, schema.Errorf("Could not open image: Invalid argument")
		}
	}
	if cl.Info.Flags&nbd.FlagReadOnly != 0 && !oc.ReadOnly {
		if !oc.AutoReadOnly {
			cl.Close()
			releaseTLS()
			// qemu-storage-daemon 7.2 loses its own message here too and
			// reports the errno (EACCES).
			return nil, schema.Errorf("Could not open image: Permission denied")
		}
		oc.ReadOnly = true
	}
	return &node{Client: cl, opts: o, releaseTLS: releaseTLS}, nil
}

// tlsConfig is the client configuration of tls-creds. The server's
// certificate is checked against tls-hostname, or the inet host; over a
// Unix socket without tls-hostname only its chain is checked, as
// QEMU's client does.
func tlsConfig(store blockcore.ObjectStore, o *schema.BlockdevOptionsNbd, a Address) (*tls.Config, error) {
	base, err := store.TLSClientConfig(*o.TLSCreds)
	if err != nil {
		return nil, err
	}
	cfg := base.Clone()
	host := a.Host
	if o.TLSHostname != nil {
		host = *o.TLSHostname
	}
	if host != "" {
		cfg.ServerName = host
		return cfg, nil
	}
	roots := cfg.RootCAs
	cfg.InsecureSkipVerify = true // replaced by the chain check below
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("server sent no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	return cfg, nil
}

// Close disconnects.
func (n *node) Close() error {
	n.Client.Close()
	n.releaseTLS()
	return nil
}

// ExactFilename is nbd_refresh_filename's pseudo URI; an IPv6 host or a
// vsock address cannot be written as one.
func (n *node) ExactFilename() string {
	s := n.opts.Server
	var path, host, port string
	switch {
	case s.Unix != nil:
		path = s.Unix.Path
	case s.Inet != nil:
		if !strings.Contains(s.Inet.Host, ":") {
			host = s.Inet.Host
		}
		port = s.Inet.Port
	}
	exp, hasExp := "", n.opts.Export != nil
	if hasExp {
		exp = *n.opts.Export
	}
	switch {
	case path != "" && hasExp:
		return "nbd+unix:///" + exp + "?socket=" + path
	case path != "":
		return "nbd+unix://?socket=" + path
	case host != "" && hasExp:
		return "nbd://" + host + ":" + port + "/" + exp
	case host != "":
		return "nbd://" + host + ":" + port
	}
	return ""
}

// StrongOptions are nbd's strong runtime options (path, host, port,
// export, tls-creds, tls-hostname, server.*) in their flat form, which
// json: filenames of the nodes above show.
func (n *node) StrongOptions() map[string]any {
	m := map[string]any{}
	o := n.opts
	if o.Export != nil {
		m["export"] = *o.Export
	}
	if o.TLSCreds != nil {
		m["tls-creds"] = *o.TLSCreds
	}
	if o.TLSHostname != nil {
		m["tls-hostname"] = *o.TLSHostname
	}
	m["server.type"] = string(o.Server.Type)
	switch s := o.Server; {
	case s.Unix != nil:
		m["server.path"] = s.Unix.Path
		if s.Unix.Abstract != nil {
			m["server.abstract"] = *s.Unix.Abstract
		}
		if s.Unix.Tight != nil {
			m["server.tight"] = *s.Unix.Tight
		}
	case s.Inet != nil:
		m["server.host"] = s.Inet.Host
		m["server.port"] = s.Inet.Port
		for k, v := range map[string]*bool{"server.numeric": s.Inet.Numeric, "server.ipv4": s.Inet.Ipv4,
			"server.ipv6": s.Inet.Ipv6, "server.keep-alive": s.Inet.KeepAlive, "server.mptcp": s.Inet.Mptcp} {
			if v != nil {
				m[k] = *v
			}
		}
		if s.Inet.To != nil {
			m["server.to"] = *s.Inet.To
		}
	}
	return m
}
