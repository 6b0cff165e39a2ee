package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// Introspection is generated from the registry's declarations, in the
// shape of QEMU 7.2's qapi/introspect.py output:
//
//   - commands and events first, in declaration order;
//   - then every type they use, transitively, in order of first use, an
//     array type listed before its element type;
//   - type names other than builtins masked as decimal numbers, "0"
//     being the empty object (no arguments, no return value, and union
//     values without variant members);
//   - all integer types (int8..uint64, size) shown as the builtin 'int',
//     as QEMU does, so only str, any, bool, int, null and number appear
//     as builtins.
//
// The numbering is deterministic for a given registry but is not QSD's:
// clients must not (and libvirt does not) depend on the numbers.

// introspection is the cached result; the registry is immutable once
// serving, so it is computed once and reset only by Add/AddEvent.
type introspection struct {
	infos []SchemaInfo
	json  []byte
}

// Schema returns the query-qmp-schema entities. The result is shared and
// must not be modified.
func (r *Registry) Schema() []SchemaInfo { return r.introspect().infos }

// SchemaJSON returns the encoded query-qmp-schema return value.
func (r *Registry) SchemaJSON() json.RawMessage { return r.introspect().json }

func (r *Registry) introspect() *introspection {
	r.mu.RLock()
	s := r.schema
	r.mu.RUnlock()
	if s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.schema == nil {
		infos := newGen().run(r.entities)
		b, err := Marshal(infos)
		if err != nil {
			panic(fmt.Sprintf("schema: encoding introspection: %v", err))
		}
		r.schema = &introspection{infos: infos, json: b}
	}
	return r.schema
}

// AddIntrospection registers query-commands and query-qmp-schema, which
// describe the registry they are added to (themselves included).
func (r *Registry) AddIntrospection() {
	Define(r, "query-commands", func(context.Context, *NoArgs) ([]CommandInfo, error) {
		names := r.Names()
		out := make([]CommandInfo, len(names))
		for i, n := range names {
			out[i].Name = n
		}
		return out, nil
	}, AllowPreconfig())
	r.Add(Command{
		Name:           "query-qmp-schema",
		Ret:            reflect.TypeFor[[]SchemaInfo](),
		AllowPreconfig: true,
		Handler: func(context.Context, any) (any, error) {
			return preEncoded(r.SchemaJSON()), nil
		},
	})
}

// queued is a type waiting to be described.
type queued struct {
	name string
	ti   *typeInfo // nil for builtins and the empty object
	elem string    // arrays: element type name
}

type gen struct {
	queue []queued
	seen  map[string]bool // by identity
	names map[*typeInfo]string
	next  int
}

func newGen() *gen {
	g := &gen{seen: map[string]bool{"0": true}, names: map[*typeInfo]string{}, next: 1}
	g.queue = append(g.queue, queued{name: "0"})
	return g
}

func (g *gen) run(entities []entity) []SchemaInfo {
	var out []SchemaInfo
	for _, e := range entities {
		if c := e.cmd; c != nil {
			info := SchemaInfo{Name: c.Name, MetaType: "command", Features: c.Features,
				Command: &SchemaInfoCommand{ArgType: g.use(c.args), RetType: g.use(c.ret)}}
			if c.AllowOOB {
				t := true
				info.Command.AllowOOB = &t
			}
			out = append(out, info)
			continue
		}
		out = append(out, SchemaInfo{Name: e.ev.name, MetaType: "event",
			Event: &SchemaInfoEvent{ArgType: g.use(e.ev.data)}})
	}
	for i := 0; i < len(g.queue); i++ { // the queue grows as types are described
		out = append(out, g.describe(g.queue[i]))
	}
	return out
}

// builtinName is the builtin a type is shown as, or "".
func builtinName(ti *typeInfo) string {
	switch ti.kind {
	case kindStr:
		return "str"
	case kindBool:
		return "bool"
	case kindInt, kindIntN, kindUint64, kindUintN, kindSize:
		return "int"
	case kindNumber:
		return "number"
	case kindNull:
		return "null"
	case kindAny, kindGoAny:
		return "any"
	}
	return ""
}

func isEmptyObject(ti *typeInfo) bool {
	return ti == nil || (ti.kind == kindObject && len(ti.members) == 0 &&
		ti.tag == nil && len(ti.features) == 0)
}

// identity tells types apart for de-duplication without naming them.
func identity(ti *typeInfo) string {
	switch {
	case isEmptyObject(ti):
		return "0"
	case builtinName(ti) != "":
		return builtinName(ti)
	case ti.kind == kindList:
		return "[" + identity(ti.elem) + "]"
	}
	return fmt.Sprintf("%p", ti)
}

// use queues ti for description if new and returns its masked name.
func (g *gen) use(ti *typeInfo) string {
	if isEmptyObject(ti) {
		return "0"
	}
	if b := builtinName(ti); b != "" {
		if !g.seen[b] {
			g.seen[b] = true
			g.queue = append(g.queue, queued{name: b})
		}
		return b
	}
	if ti.kind == kindList {
		slot := -1
		if id := identity(ti); !g.seen[id] {
			g.seen[id] = true
			g.queue = append(g.queue, queued{})
			slot = len(g.queue) - 1
		}
		elem := g.use(ti.elem)
		name := "[" + elem + "]"
		if slot >= 0 {
			g.queue[slot] = queued{name: name, elem: elem}
		}
		return name
	}
	if n, ok := g.names[ti]; ok {
		return n
	}
	n := strconv.Itoa(g.next)
	g.next++
	g.names[ti] = n
	g.queue = append(g.queue, queued{name: n, ti: ti})
	return n
}

var builtinJSONTypes = map[string]JSONType{
	"str": "string", "bool": "boolean", "int": "int",
	"number": "number", "null": "null", "any": "value",
}

func (g *gen) describe(q queued) SchemaInfo {
	switch {
	case q.name == "0":
		return SchemaInfo{Name: "0", MetaType: "object",
			Object: &SchemaInfoObject{Members: []SchemaInfoObjectMember{}}}
	case q.elem != "":
		return SchemaInfo{Name: q.name, MetaType: "array",
			Array: &SchemaInfoArray{ElementType: q.elem}}
	case q.ti == nil:
		return SchemaInfo{Name: q.name, MetaType: "builtin",
			Builtin: &SchemaInfoBuiltin{JSONType: builtinJSONTypes[q.name]}}
	}
	ti := q.ti
	info := SchemaInfo{Name: q.name, Features: ti.features}
	switch ti.kind {
	case kindEnum:
		e := &SchemaInfoEnum{Values: ti.values}
		for _, v := range ti.values {
			e.Members = append(e.Members, SchemaInfoEnumMember{Name: v, Features: ti.valueFeatures[v]})
		}
		info.MetaType, info.Enum = "enum", e
	case kindAlternate:
		a := &SchemaInfoAlternate{}
		for _, br := range ti.branches {
			a.Members = append(a.Members, SchemaInfoAlternateMember{Type: g.use(br.typ)})
		}
		info.MetaType, info.Alternate = "alternate", a
	default:
		info.MetaType, info.Object = "object", g.object(ti)
	}
	return info
}

func (g *gen) object(ti *typeInfo) *SchemaInfoObject {
	o := &SchemaInfoObject{Members: []SchemaInfoObjectMember{}}
	for _, m := range ti.members {
		om := SchemaInfoObjectMember{Name: m.name, Type: g.use(m.typ), Features: m.features}
		if m.optional {
			om.Default = Any("null")
		}
		o.Members = append(o.Members, om)
	}
	if ti.tag == nil {
		return o
	}
	tag := ti.tag.name
	o.Tag = &tag
	o.Variants = []SchemaInfoObjectVariant{}
	// Declared variants first, then the values without variant members,
	// which QEMU points at the empty object.
	for _, v := range ti.variants {
		t := g.use(v.typ)
		for _, c := range v.cases {
			o.Variants = append(o.Variants, SchemaInfoObjectVariant{Case: c, Type: t})
		}
	}
	for _, c := range ti.tag.typ.values {
		if ti.variantFor[c] == nil {
			o.Variants = append(o.Variants, SchemaInfoObjectVariant{Case: c, Type: "0"})
		}
	}
	return o
}
