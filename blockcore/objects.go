package blockcore

import (
	"crypto/tls"
	"net"
)

// ObjectStore is what drivers may ask of the daemon's user-created
// objects (--object, object-add): secret data (luks key-secret) and TLS
// client credentials (nbd tls-creds). Errors carry the texts to show.
// Drivers needing more (throttle: its throttle-group) assert their own
// interface on the store, so blockcore does not depend on object types.
type ObjectStore interface {
	Secret(id string) ([]byte, error)
	TLSClientConfig(id string) (*tls.Config, error)
	// TLSClientPSK is the client side of TLS-PSK credentials, which
	// crypto/tls cannot carry: one handshake per connection, and release
	// once no more connections will be made. Both are nil for
	// credentials of another kind.
	TLSClientPSK(id string) (handshake func(net.Conn) (net.Conn, error), release func(), err error)
}

// SetObjects gives drivers opened from now on access to objects.
func (g *Graph) SetObjects(o ObjectStore) { g.objects = o }

// Objects returns the object store, or nil when there is none (tests
// that build a graph without a daemon).
func (g *Graph) Objects() ObjectStore { return g.objects }
