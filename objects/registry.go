// Package objects owns blockd's QOM: the class table of the types blockd
// has (class.go), the tree of objects under / with the qom-list, qom-get,
// qom-set, qom-list-types and qom-list-properties commands (qom.go), and
// the user-created objects: what --object and object-add create and
// object-del removes (secret, secret_keyring, tls-creds-x509,
// tls-creds-psk, tls-creds-anon, tls-cipher-suites, authz-simple,
// authz-list, authz-list-file, iothread, main-loop, thread-context,
// pr-manager-helper, throttle-group), with
// qemu-storage-daemon's argument checks, load errors and texts. Other
// parts of the daemon look objects up by id: the NBD server for its TLS
// configuration and authorization, drivers for secrets and throttle
// groups (a group in use cannot be deleted); the chardev
// package puts its devices under /chardevs.
//
// Objects are loaded completely when they are created, as the reference
// does, so a later user sees either a working object or none. Users get a
// snapshot (a *tls.Config, a copy of the secret): deleting an object
// afterwards does not disturb them, which is also the reference's
// behaviour for TLS credentials held by a running NBD server.
package objects

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/keyval"
	"blockd/internal/qemu"
	"blockd/schema"
)

// Registry holds the QOM tree: the objects object-add creates (by id,
// under /objects) and the chardevs under /chardevs. It is safe for
// concurrent use: the commands run on the graph's owner, lookups come
// from servers' goroutines.
type Registry struct {
	log *zap.Logger
	bus *events.Bus // nil: events are not sent (tests)

	mu       sync.Mutex
	root     *qomNode
	objects  *qomNode // "/objects"
	mainLoop bool     // a main-loop object exists (there is one at most)
}

// NewRegistry returns a tree with its two empty containers.
func NewRegistry(log *zap.Logger) *Registry {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Registry{log: log, root: newNode("", "container")}
	r.objects = newNode("objects", "container")
	r.root.add(r.objects)
	r.root.add(newNode("chardevs", "container"))
	return r
}

// SetBus gives objects the bus their events (PR_MANAGER_STATUS_CHANGED)
// go to.
func (r *Registry) SetBus(b *events.Bus) { r.bus = b }

func (r *Registry) publish(p events.Payload) {
	if r.bus != nil {
		r.bus.Publish(p)
	}
}

// RegisterCommands declares object-add, object-del and the qom commands.
func (r *Registry) RegisterCommands(reg *schema.Registry) {
	schema.Define(reg, "object-add", func(_ context.Context, o *ObjectOptions) (schema.Empty, error) {
		return schema.Empty{}, r.add(o)
	})
	schema.Define(reg, "object-del", func(_ context.Context, a *ObjectDelArgs) (schema.Empty, error) {
		return schema.Empty{}, r.del(a.ID)
	})
	r.registerQOM(reg)
}

// AddFromCLI creates the object of one --object option: a JSON object,
// or key=value pairs whose first may omit "qom-type=". The error is the
// reference's text without the option prefix.
func (r *Registry) AddFromCLI(spec string) error {
	var o ObjectOptions
	if strings.HasPrefix(strings.TrimSpace(spec), "{") {
		if !json.Valid([]byte(spec)) {
			return fmt.Errorf("JSON parse error")
		}
		if err := schema.Decode(json.RawMessage(spec), &o); err != nil {
			return err
		}
	} else {
		kv, err := keyval.Parse(spec, "qom-type")
		if err != nil {
			return err
		}
		b, err := json.Marshal(kv)
		if err != nil {
			return err
		}
		if err := schema.DecodeKeyval(b, &o); err != nil {
			return err
		}
	}
	err := r.add(&o)
	if err != nil && err.Error() == errBadID {
		// The command line shows the hint the reference appends (QMP
		// replies do not carry hints).
		return fmt.Errorf("%s\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.", errBadID)
	}
	return err
}

const errBadID = "Parameter 'id' expects an identifier"

// add creates an object in the reference's order (user_creatable_add_type):
// the id's syntax, the properties' setters, the id's uniqueness, then the
// type's own loading (which reads files and may fail).
func (r *Registry) add(o *ObjectOptions) error {
	if !qemu.IDWellFormed(o.ID) {
		return schema.Errorf("%s", errBadID)
	}
	c := creatableClass(string(o.QomType))
	if c == nil { // decoding only lets creatable types in
		return schema.Errorf("Parameter 'qom-type' does not accept value '%s'", o.QomType)
	}
	inst, err := c.Init(o)
	if err != nil {
		return schema.AsError(err)
	}
	if r.lookup(o.ID) != nil {
		return dupError(o.ID)
	}
	if c.Complete != nil {
		if err := c.Complete(r, inst); err != nil {
			if c.Finalize != nil {
				c.Finalize(inst)
			}
			// The reference adds the child before completing it and
			// unparents it on failure, which leaves a tombstone in
			// the container's table: the order of later listings
			// depends on it.
			r.mu.Lock()
			if _, taken := r.objects.children[o.ID]; !taken {
				r.objects.order.Insert(o.ID)
				r.objects.order.IterRemove(o.ID)
			}
			r.mu.Unlock()
			return schema.AsError(err)
		}
	}
	r.mu.Lock()
	if _, dup := r.objects.children[o.ID]; dup { // added meanwhile by another monitor
		r.mu.Unlock()
		if c.Finalize != nil {
			c.Finalize(inst)
		}
		return dupError(o.ID)
	}
	n := newNode(o.ID, c.Name)
	n.inst = inst
	r.objects.add(n)
	r.mu.Unlock()
	r.log.Info("object added", zap.String("id", o.ID), zap.String("qom-type", string(o.QomType)))
	return nil
}

func dupError(id string) error {
	return schema.Errorf("attempt to add duplicate property '%s' to object (type 'container')", id)
}

func (r *Registry) del(id string) error {
	n, err := r.unparent(id)
	if err != nil {
		return err
	}
	// Outside the lock: a finalizer may wait for a goroutine that takes
	// it (authz-list-file's reload).
	if n.class.Finalize != nil {
		n.class.Finalize(n.inst)
	}
	r.log.Info("object deleted", zap.String("id", id))
	return nil
}

func (r *Registry) unparent(id string) (*qomNode, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.objects.children[id]
	if !ok {
		return nil, schema.Errorf("object '%s' not found", id)
	}
	if n.uses > 0 || n.class.CanBeDeleted != nil && !n.class.CanBeDeleted(n.inst) {
		return nil, schema.Errorf("object '%s' is in use, can not be deleted", id)
	}
	r.objects.remove(id)
	return n, nil
}

// Use pins an object so that object-del refuses it until release is
// called, for users that need the object itself to stay (the reference
// refuses deletion of such objects, e.g. throttle groups in use). Users
// that take a snapshot (TLS configurations, secrets) need no pin: the
// reference lets those objects be deleted under them.
func (r *Registry) Use(id string) (release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objects.children[id]
	if !ok {
		return nil, schema.Errorf("object '%s' not found", id)
	}
	obj.uses++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			obj.uses--
			r.mu.Unlock()
		})
	}, nil
}

// lookup returns the object id and its state.
func (r *Registry) lookup(id string) *qomNode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.objects.children[id]
}

// Secret returns a copy of the data of secret id, with the reference's
// texts for an unknown id or an object of another type.
func (r *Registry) Secret(id string) ([]byte, error) {
	obj := r.lookup(id)
	if obj == nil {
		return nil, schema.Errorf("No secret with id '%s'", id)
	}
	var v []byte
	switch s := obj.inst.(type) {
	case *secretInst:
		v = s.value
	case *keyringInst:
		v = s.value
	default:
		return nil, schema.Errorf("Object with id '%s' is not a secret", id)
	}
	return append([]byte(nil), v...), nil
}

// TLSServerConfig returns the server-side TLS configuration of the TLS
// credentials id (for nbd-server-start's tls-creds).
func (r *Registry) TLSServerConfig(id string) (*tls.Config, error) {
	t, err := r.tlsInst(id)
	if err != nil {
		return nil, err
	}
	if t.creds.endpoint != "server" {
		return nil, schema.Errorf("Expected TLS credentials for a server endpoint")
	}
	return t.creds.serverConfig(id)
}

// TLSClientConfig returns the client-side TLS configuration of the TLS
// credentials id (for a future nbd client driver's tls-creds): the CA to
// verify servers with, and the client certificate when the directory has
// one. The caller sets ServerName (the reference's tls-hostname).
func (r *Registry) TLSClientConfig(id string) (*tls.Config, error) {
	t, err := r.tlsInst(id)
	if err != nil {
		return nil, err
	}
	if t.creds.endpoint != "client" {
		return nil, schema.Errorf("Expected TLS credentials for a client endpoint")
	}
	return t.creds.clientConfig(id)
}

// Authorize says whether the authorization object authzID lets the peer
// with the given distinguished name in (see PeerName); the error carries
// the reference's text when the object is missing or of another type.
func (r *Registry) Authorize(authzID, distinguishedName string) (bool, error) {
	obj := r.lookup(authzID)
	if obj == nil {
		return false, fmt.Errorf("Cannot find QAuthZ object ID %s", authzID)
	}
	r.mu.Lock() // qom-set may change the identity or the rules
	defer r.mu.Unlock()
	switch a := obj.inst.(type) {
	case *authzInst:
		return str(a.identity) == distinguishedName, nil
	case *authzListInst:
		return a.allows(distinguishedName), nil
	case *authzListFileInst:
		return a.allows(distinguishedName), nil
	}
	return false, fmt.Errorf("Object '%s' is not a QAuthZ subclass", authzID)
}

// PeerName is the distinguished name of a client certificate as the
// reference's TLS sessions report it (RFC 4514, most specific first,
// e.g. "CN=client,O=Example,C=GB"), which is what authz-simple's
// identity is compared with.
func PeerName(cert *x509.Certificate) string {
	return cert.Subject.String()
}
