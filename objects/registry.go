// Package objects owns blockd's user-created objects: what --object and
// object-add create and object-del removes (secret, tls-creds-x509,
// tls-creds-psk, authz-simple, iothread, throttle-group), with
// qemu-storage-daemon's argument checks, load errors and texts. Other
// parts of the daemon look objects up by id: the NBD server for its TLS
// configuration and authorization, drivers for secrets and throttle
// groups (a group in use cannot be deleted).
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

	"blockd/internal/keyval"
	"blockd/internal/throttle"
	"blockd/schema"
)

// Registry holds the objects by id. It is safe for concurrent use: the
// commands run on the graph's owner, lookups come from servers' goroutines.
type Registry struct {
	log *zap.Logger

	mu   sync.Mutex
	objs map[string]*object
}

// object is one created object. Exactly one of the typed fields is set,
// except for iothread, which has no state.
type object struct {
	id    string
	typ   ObjectType
	uses  int // pins taken with Use
	sec   []byte
	tls   *tlsCreds
	authz string // authz-simple identity
	tg    *throttle.Group
}

// NewRegistry returns an empty registry.
func NewRegistry(log *zap.Logger) *Registry {
	if log == nil {
		log = zap.NewNop()
	}
	return &Registry{log: log, objs: map[string]*object{}}
}

// RegisterCommands declares object-add and object-del.
func (r *Registry) RegisterCommands(reg *schema.Registry) {
	schema.Define(reg, "object-add", func(_ context.Context, o *ObjectOptions) (schema.Empty, error) {
		return schema.Empty{}, r.add(o)
	})
	schema.Define(reg, "object-del", func(_ context.Context, a *ObjectDelArgs) (schema.Empty, error) {
		return schema.Empty{}, r.del(a.ID)
	})
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

// idWellformed is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.' and '_'.
func idWellformed(id string) bool {
	if id == "" || !isLetter(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// add creates an object in the reference's order: the id's syntax, the
// properties that cannot be set, the id's uniqueness, then the type's
// own loading (which reads files and may fail).
func (r *Registry) add(o *ObjectOptions) error {
	if !idWellformed(o.ID) {
		return schema.Errorf("%s", errBadID)
	}
	if o.Secret != nil && o.Secret.Loaded != nil {
		return schema.Errorf("Property 'secret.loaded' is not writable")
	}
	r.mu.Lock()
	_, dup := r.objs[o.ID]
	r.mu.Unlock()
	if dup {
		return schema.Errorf("attempt to add duplicate property '%s' to object (type 'container')", o.ID)
	}
	obj := &object{id: o.ID, typ: o.QomType}
	// A variant without members given may come decoded as nil.
	if o.Secret == nil {
		o.Secret = &SecretProperties{}
	}
	if o.TLSCredsX509 == nil {
		o.TLSCredsX509 = &TLSCredsX509Properties{}
	}
	if o.TLSCredsPSK == nil {
		o.TLSCredsPSK = &TLSCredsPSKProperties{}
	}
	var err error
	switch o.QomType {
	case "secret":
		obj.sec, err = r.loadSecret(o.Secret)
	case "tls-creds-x509":
		obj.tls, err = loadX509(o.TLSCredsX509)
	case "tls-creds-psk":
		obj.tls, err = loadPSK(o.TLSCredsPSK)
	case "authz-simple":
		if o.AuthzSimple != nil { // identity is required: decoding checked it
			obj.authz = o.AuthzSimple.Identity
		}
	case "throttle-group":
		if o.ThrottleGroup == nil {
			o.ThrottleGroup = &ThrottleGroupProperties{}
		}
		obj.tg, err = loadThrottleGroup(o.ThrottleGroup)
	case "iothread":
		// Accepted so that managers' usual command lines work; blockd
		// has no event-loop threads to configure.
	}
	if err != nil {
		return schema.AsError(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.objs[o.ID]; dup { // added meanwhile by another monitor
		return schema.Errorf("attempt to add duplicate property '%s' to object (type 'container')", o.ID)
	}
	r.objs[o.ID] = obj
	r.log.Info("object added", zap.String("id", o.ID), zap.String("qom-type", string(o.QomType)))
	return nil
}

func (r *Registry) del(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objs[id]
	if !ok {
		return schema.Errorf("object '%s' not found", id)
	}
	if obj.uses > 0 {
		return schema.Errorf("object '%s' is in use, can not be deleted", id)
	}
	delete(r.objs, id)
	r.log.Info("object deleted", zap.String("id", id))
	return nil
}

// Use pins an object so that object-del refuses it until release is
// called, for users that need the object itself to stay (the reference
// refuses deletion of such objects, e.g. throttle groups in use). Users
// that take a snapshot (TLS configurations, secrets) need no pin: the
// reference lets those objects be deleted under them.
func (r *Registry) Use(id string) (release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	obj, ok := r.objs[id]
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

func (r *Registry) lookup(id string) *object {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.objs[id]
}

// Secret returns a copy of the data of secret id, with the reference's
// texts for an unknown id or an object of another type.
func (r *Registry) Secret(id string) ([]byte, error) {
	obj := r.lookup(id)
	if obj == nil {
		return nil, schema.Errorf("No secret with id '%s'", id)
	}
	if obj.typ != "secret" {
		return nil, schema.Errorf("Object with id '%s' is not a secret", id)
	}
	return append([]byte(nil), obj.sec...), nil
}

// TLSServerConfig returns the server-side TLS configuration of the TLS
// credentials id (for nbd-server-start's tls-creds).
func (r *Registry) TLSServerConfig(id string) (*tls.Config, error) {
	obj := r.lookup(id)
	if obj == nil {
		return nil, schema.Errorf("No TLS credentials with id '%s'", id)
	}
	if obj.tls == nil {
		return nil, schema.Errorf("Object with id '%s' is not TLS credentials", id)
	}
	if obj.tls.endpoint != "server" {
		return nil, schema.Errorf("Expected TLS credentials for a server endpoint")
	}
	return obj.tls.serverConfig(id)
}

// TLSClientConfig returns the client-side TLS configuration of the TLS
// credentials id (for a future nbd client driver's tls-creds): the CA to
// verify servers with, and the client certificate when the directory has
// one. The caller sets ServerName (the reference's tls-hostname).
func (r *Registry) TLSClientConfig(id string) (*tls.Config, error) {
	obj := r.lookup(id)
	if obj == nil {
		return nil, schema.Errorf("No TLS credentials with id '%s'", id)
	}
	if obj.tls == nil {
		return nil, schema.Errorf("Object with id '%s' is not TLS credentials", id)
	}
	if obj.tls.endpoint != "client" {
		return nil, schema.Errorf("Expecting TLS credentials with a client endpoint")
	}
	return obj.tls.clientConfig(id)
}

// Authorize says whether the authorization object authzID lets the peer
// with the given distinguished name in (see PeerName); the error carries
// the reference's text when the object is missing or of another type.
func (r *Registry) Authorize(authzID, distinguishedName string) (bool, error) {
	obj := r.lookup(authzID)
	if obj == nil {
		return false, fmt.Errorf("Cannot find QAuthZ object ID %s", authzID)
	}
	if obj.typ != "authz-simple" {
		return false, fmt.Errorf("Object '%s' is not a QAuthZ subclass", authzID)
	}
	return obj.authz == distinguishedName, nil
}

// PeerName is the distinguished name of a client certificate as the
// reference's TLS sessions report it (RFC 4514, most specific first,
// e.g. "CN=client,O=Example,C=GB"), which is what authz-simple's
// identity is compared with.
func PeerName(cert *x509.Certificate) string {
	return cert.Subject.String()
}
