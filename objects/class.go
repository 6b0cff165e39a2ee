package objects

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"sync"

	"blockd/internal/ghash"
	"blockd/schema"
)

// Class is a QOM type blockd has: where it sits in the type hierarchy,
// the properties its class_init adds, and, for the types object-add
// creates, how an instance is made. A new object type is one Class
// registered with RegisterClass (from an init function) plus its variant
// in ObjectOptions; everything else (object-add/-del, --object, qom-*,
// qom-list-types, introspection of qom-type) follows from the table.
type Class struct {
	Name string
	// QAPIName is the class's qom-type value where QEMU's schema spells
	// it otherwise (authz-list-file is "authz-listfile" in ObjectType).
	QAPIName string
	Parent   string // "" for the roots "object" and "interface"
	Abstract bool
	// Interfaces the class implements ("user-creatable" for what
	// object-add creates), for qom-list-types' implements.
	Interfaces []string
	// Props are the class's own properties, in the order its class_init
	// adds them; the reference lists them in its hash table's order,
	// which is derived from this one.
	Props []Property

	// Init makes an instance from object-add's arguments: the properties'
	// setters, which run before the id is checked for uniqueness.
	Init func(o *ObjectOptions) (any, error)
	// Complete loads what the properties name (files, keys) once the id
	// is known to be free (user_creatable_complete). May be nil.
	Complete func(r *Registry, inst any) error
	// CanBeDeleted, when set, may refuse object-del (the reference's
	// can_be_deleted).
	CanBeDeleted func(inst any) bool
	// Finalize releases what an instance holds (threads, sockets, file
	// watches) once object-del removed it or its Complete failed. May
	// be nil.
	Finalize func(inst any)
}

// Property is one QOM property: its name and QOM type, and accessors of
// an instance's state (nil: not readable, not writable). Set gets the
// value as sent and uses the visit helpers for the reference's texts.
// Get may return an error, which qom-get answers with (a getter that
// asks the system, like thread-context's cpu-affinity).
type Property struct {
	Name string
	Type string
	Get  func(inst any) any
	Set  func(inst any, name string, v json.RawMessage) error
}

var (
	classMu sync.RWMutex
	classes = map[string]*Class{}
)

// RegisterClass adds a QOM type. Registering a name twice is a
// programming error.
func RegisterClass(c *Class) {
	classMu.Lock()
	defer classMu.Unlock()
	if _, dup := classes[c.Name]; dup {
		panic("objects: class " + c.Name + " registered twice")
	}
	classes[c.Name] = c
}

func lookupClass(name string) *Class {
	classMu.RLock()
	defer classMu.RUnlock()
	return classes[name]
}

// qapiName is the class's value in ObjectType.
func (c *Class) qapiName() string {
	if c.QAPIName != "" {
		return c.QAPIName
	}
	return c.Name
}

// userCreatable lists the qom-type values of the classes object-add can
// create, sorted.
func userCreatable() []string {
	classMu.RLock()
	defer classMu.RUnlock()
	var out []string
	for _, c := range classes {
		if c.Init != nil {
			out = append(out, c.qapiName())
		}
	}
	slices.Sort(out)
	return out
}

// creatableClass returns the class object-add creates for a qom-type
// value, or nil.
func creatableClass(qomType string) *Class {
	classMu.RLock()
	defer classMu.RUnlock()
	for _, c := range classes {
		if c.Init != nil && c.qapiName() == qomType {
			return c
		}
	}
	return nil
}

// ancestry is the class and its parents, root last.
func (c *Class) ancestry() []*Class {
	var out []*Class
	for k := c; k != nil; k = lookupClass(k.Parent) {
		out = append(out, k)
		if k.Parent == "" {
			break
		}
	}
	return out
}

// is is object_class_dynamic_cast: the class, one of its parents or one
// of their interfaces is named name.
func (c *Class) is(name string) bool {
	for _, k := range c.ancestry() {
		if k.Name == name {
			return true
		}
		for _, i := range k.Interfaces {
			if ic := lookupClass(i); ic != nil && ic.is(name) {
				return true
			}
		}
	}
	return false
}

// prop finds a property of the class or its parents.
func (c *Class) prop(name string) *Property {
	for _, k := range c.ancestry() {
		for i := range k.Props {
			if k.Props[i].Name == name {
				return &k.Props[i]
			}
		}
	}
	return nil
}

// listedProps are the class's properties in the order the reference's
// qom-list and qom-list-properties give them: its iterator visits each
// class's hash table from the leaf up to "object", and the list is built
// by prepending, so "type" comes first and each class's properties
// follow in reverse hash order.
func (c *Class) listedProps() []*Property {
	var out []*Property
	anc := c.ancestry()
	for i := len(anc) - 1; i >= 0; i-- {
		k := anc[i]
		t := ghash.New()
		for _, p := range k.Props {
			t.Insert(p.Name)
		}
		keys := t.Keys()
		for j := len(keys) - 1; j >= 0; j-- {
			out = append(out, k.prop(keys[j]))
		}
	}
	return out
}

// typeOrder is the order qemu-storage-daemon 7.2 lists its types in
// (its type table's hash order, reversed), so that qom-list-types lists
// the types blockd has as the reference does. Types not named here come
// last, sorted.
var typeOrder = []string{
	"qio-channel-null", "authz-simple", "secret_common", "qio-channel-socket",
	"fw_cfg-data-generator", "container", "interface", "tls-creds-anon",
	"pr-manager-helper", "iothread", "secret", "authz", "chardev-serial",
	"qio-channel", "chardev-mux", "tls-creds-psk", "tls-creds",
	"qio-channel-file", "qio-channel-command", "qio-channel-websock",
	"chardev-pipe", "main-loop", "chardev-parallel", "chardev-fd",
	"qio-channel-tls", "qio-net-listener", "authz-list-file", "pr-manager",
	"chardev-null", "chardev-ringbuf", "event-loop-base", "qio-dns-resolver",
	"authz-list", "chardev-stdio", "chardev", "user-creatable",
	"chardev-socket", "chardev-file", "chardev-memory", "qio-channel-buffer",
	"object", "chardev-udp", "tls-creds-x509", "tls-cipher-suites",
	"chardev-pty", "thread-context", "secret_keyring", "throttle-group",
}

func sortedClasses() []*Class {
	classMu.RLock()
	defer classMu.RUnlock()
	rank := func(n string) int {
		if i := slices.Index(typeOrder, n); i >= 0 {
			return i
		}
		return len(typeOrder)
	}
	out := make([]*Class, 0, len(classes))
	for _, c := range classes {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Class) int {
		if ra, rb := rank(a.Name), rank(b.Name); ra != rb {
			return ra - rb
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// The base types every object and interface derives from.
func init() {
	RegisterClass(&Class{Name: "object", Abstract: true, Props: []Property{{
		Name: "type", Type: "string",
		// The tree fills in the instance's class name (qom.go).
	}}})
	RegisterClass(&Class{Name: "interface", Abstract: true})
	RegisterClass(&Class{Name: "user-creatable", Parent: "interface", Abstract: true})
	RegisterClass(&Class{Name: "container", Parent: "object"})
}

// The input visitor's checks of a qom-set value, with its texts.

func badType(name, want string) error {
	return schema.Errorf("Invalid parameter type for '%s', expected: %s", name, want)
}

func visitInt(name string, v json.RawMessage) (int64, error) {
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		return 0, badType(name, "integer")
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, badType(name, "integer")
	}
	return i, nil
}

func visitStr(name string, v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", badType(name, "string")
	}
	return s, nil
}

func visitBool(name string, v json.RawMessage) (bool, error) {
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		return false, badType(name, "boolean")
	}
	return b, nil
}

func visitEnum(name string, v json.RawMessage, values []string) (string, error) {
	s, err := visitStr(name, v)
	if err != nil {
		return "", err
	}
	if !slices.Contains(values, s) {
		return "", schema.Errorf("Parameter '%s' does not accept value '%s'", name, s)
	}
	return s, nil
}

// nonNegative is the range check of the event loop's integer setters.
func nonNegative(name string, v int64) error {
	if v < 0 {
		return schema.Errorf("%s value must be in range [0, %d]", name, int64(math.MaxInt64))
	}
	return nil
}

// str is a string property's value: unset reads as "".
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func strProp(name string, field func(inst any) **string) Property {
	return Property{Name: name, Type: "string",
		Get: func(inst any) any { return str(*field(inst)) },
		Set: func(inst any, n string, v json.RawMessage) error {
			s, err := visitStr(n, v)
			if err == nil {
				*field(inst) = &s
			}
			return err
		}}
}
