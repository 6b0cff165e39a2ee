package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
)

// Handler runs a command. args is a pointer to a value of the command's
// Args type (*NoArgs when it has none), already strictly decoded.
type Handler func(ctx context.Context, args any) (any, error)

// Command declares one QMP command. The same declaration drives argument
// decoding, result encoding and introspection.
type Command struct {
	Name           string
	Args           reflect.Type // struct type of the arguments; nil: none ('0')
	Ret            reflect.Type // nil: returns {} ('0')
	AllowOOB       bool
	AllowPreconfig bool
	Features       []string // e.g. "deprecated", "unstable"
	Handler        Handler

	args, ret *typeInfo // compiled by Add
}

// NoArgs is the argument type of a command without arguments.
type NoArgs struct{}

// Empty is the return type of a command that returns {}.
type Empty struct{}

var (
	noArgsType = reflect.TypeFor[NoArgs]()
	emptyType  = reflect.TypeFor[Empty]()
)

// Option adjusts a command declared with Define.
type Option func(*Command)

// AllowOOB marks a command as executable out of band.
func AllowOOB() Option { return func(c *Command) { c.AllowOOB = true } }

// AllowPreconfig marks a command as allowed before configuration ends.
func AllowPreconfig() Option { return func(c *Command) { c.AllowPreconfig = true } }

// Features sets the command's QAPI features (shown by introspection).
func Features(f ...string) Option {
	return func(c *Command) { c.Features = append(c.Features, f...) }
}

// event declares one event, for introspection only.
type event struct {
	name string
	data *typeInfo // nil: no data ('0')
}

// Registry holds the commands and events of one QMP surface. Commands are
// added at start-up; lookups and calls may then run concurrently.
type Registry struct {
	mu       sync.RWMutex
	commands map[string]*Command
	entities []entity // commands and events in declaration order
	schema   *introspection
}

// entity is a command or an event, in the order they were declared,
// which is the order query-qmp-schema lists them in.
type entity struct {
	cmd *Command
	ev  *event
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{commands: map[string]*Command{}}
}

// Add registers c. A duplicate name or a type the schema cannot express
// is a programming error and panics.
func (r *Registry) Add(c Command) {
	if c.Name == "" || c.Handler == nil {
		panic("schema: command needs a name and a handler")
	}
	if c.Args == noArgsType {
		c.Args = nil
	}
	if c.Ret == emptyType {
		c.Ret = nil
	}
	if c.Args != nil {
		c.args = mustType(c.Args)
		if c.args.kind != kindObject {
			panic(fmt.Sprintf("schema: command %s: arguments must be a struct", c.Name))
		}
	}
	if c.Ret != nil {
		c.ret = mustType(derefType(c.Ret))
	}
	c.Features = slices.Clone(c.Features)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.commands[c.Name]; dup {
		panic(fmt.Sprintf("schema: command %s registered twice", c.Name))
	}
	r.commands[c.Name] = &c
	r.entities = append(r.entities, entity{cmd: &c})
	r.schema = nil
}

// AddEvent declares an event and its data type (nil: no data), so that
// introspection lists it.
func (r *Registry) AddEvent(name string, data reflect.Type) {
	ev := &event{name: name}
	if data != nil && data != emptyType && data != noArgsType {
		ev.data = mustType(derefType(data))
		if ev.data.kind != kindObject {
			panic(fmt.Sprintf("schema: event %s: data must be a struct", name))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entities = append(r.entities, entity{ev: ev})
	r.schema = nil
}

func derefType(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

func mustType(t reflect.Type) *typeInfo {
	ti, err := typeOf(t)
	if err != nil {
		panic(err)
	}
	return ti
}

// Define registers a command with typed arguments and result. Use NoArgs
// for A when it takes none and Empty for R when it returns {}.
func Define[A, R any](r *Registry, name string, h func(ctx context.Context, args *A) (R, error), opts ...Option) {
	c := Command{
		Name: name,
		Args: reflect.TypeFor[A](),
		Ret:  reflect.TypeFor[R](),
		Handler: func(ctx context.Context, args any) (any, error) {
			a, _ := args.(*A)
			if a == nil {
				a = new(A)
			}
			return h(ctx, a)
		},
	}
	for _, o := range opts {
		o(&c)
	}
	r.Add(c)
}

// Lookup returns the command called name.
func (r *Registry) Lookup(name string) (*Command, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.commands[name]
	return c, ok
}

// Names returns the command names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.commands))
	for n := range r.commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// preEncoded is a result that is already JSON; Call passes it through.
// Introspection uses it to serve its cached encoding.
type preEncoded []byte

// Call decodes args strictly (with keyval rules under WithKeyval), runs
// the command and encodes its result.
// Every error is an *Error: handler errors that are not become
// GenericError, and a panicking handler becomes a GenericError too, so
// that one bad command cannot take the monitor down.
func (r *Registry) Call(ctx context.Context, name string, args json.RawMessage) (res json.RawMessage, err error) {
	c, ok := r.Lookup(name)
	if !ok {
		return nil, ClassErrorf(ClassCommandNotFound, "The command %s has not been found", name)
	}
	var a any = new(NoArgs)
	if c.Args != nil {
		a = reflect.New(c.Args).Interface()
	}
	decode := Decode
	if isKeyval(ctx) {
		decode = DecodeKeyval
	}
	if err := decode(args, a); err != nil {
		return nil, &argumentError{AsError(err)}
	}
	out, err := c.run(ctx, a)
	if err != nil {
		return nil, AsError(err)
	}
	if c.Ret == nil {
		return json.RawMessage("{}"), nil
	}
	if p, ok := out.(preEncoded); ok {
		return json.RawMessage(p), nil
	}
	if rv := reflect.ValueOf(out); !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		// QMP has no null return; a command that has nothing to say
		// should be declared with Empty.
		return nil, Errorf("internal error: command %s returned no value", name)
	}
	b, err := Marshal(out)
	if err != nil {
		return nil, Errorf("internal error: command %s: %v", name, err)
	}
	return b, nil
}

// run calls the handler. A panic is not turned into an error here: the
// caller (the graph owner) recovers it and rolls back the graph change
// the handler left half done, which only it can do.
func (c *Command) run(ctx context.Context, args any) (out any, err error) {
	return c.Handler(ctx, args)
}
