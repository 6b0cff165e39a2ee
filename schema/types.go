package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
)

// The reflection model: every Go type that appears in a command's
// arguments or return value is compiled once into a typeInfo, which is
// what the decoder, the encoder and the introspection walk. Keeping one
// model for all three is what stops the wire format, the error texts and
// query-qmp-schema from drifting apart.

// Size is QAPI's 'size': an unsigned 64-bit byte count. It decodes like
// 'uint64' (QEMU's non-keyval visitor has no separate size parser) and is
// introspected as 'int', as QEMU does.
type Size uint64

// Any is QAPI's 'any': a JSON value kept verbatim. As an optional member,
// nil means absent.
type Any = json.RawMessage

// Null is QAPI's 'null', used as the null branch of alternates such as
// BlockdevRefOrNull and StrOrNull.
type Null struct{}

// kind is what a Go type means on the wire.
type kind uint8

const (
	kindStr       kind = iota + 1
	kindBool           // 'bool'
	kindInt            // 'int' (int64 semantics)
	kindIntN           // 'int8'..'int32': int64 visit, then range check
	kindUint64         // 'uint64'
	kindUintN          // 'uint8'..'uint32': uint64 visit, then range check
	kindSize           // 'size'
	kindNumber         // 'number'
	kindAny            // 'any' kept as raw JSON (Any)
	kindGoAny          // 'any' held in a Go interface or map, via encoding/json
	kindNull           // 'null'
	kindEnum           // named string type with EnumValues
	kindObject         // struct, possibly a flat union
	kindAlternate      // struct with the Alternate marker
	kindList           // slice
)

// typeInfo is the compiled form of one Go type.
type typeInfo struct {
	kind     kind
	goType   reflect.Type
	name     string // QAPI name: Go name or QAPIName()
	features []string

	// kindIntN, kindUintN: the limits and the C type name QEMU's
	// visit_type_intN/uintN print ("Parameter 'x' expects int32_t").
	min, max int64
	umax     uint64
	cname    string

	// kindEnum
	values        []string
	valueSet      map[string]struct{}
	valueFeatures map[string][]string

	// kindObject: members (base first), and for flat unions the
	// discriminator and the variants in declaration order.
	members    []*member
	tag        *member
	variants   []*variant
	variantFor map[string]*variant

	// kindAlternate
	branches []*branch

	// kindList
	elem *typeInfo
}

// member is one named member of an object.
type member struct {
	name     string
	key      []byte // `"name":` pre-encoded for the encoder
	index    []int  // reflect field index path through embedded bases
	optional bool
	ptr      bool // the Go field is *T for a member of type T
	typ      *typeInfo
	features []string
}

// variant is the set of extra members a flat union carries for some
// values of its discriminator.
type variant struct {
	cases []string
	index []int // field of type *Struct
	typ   *typeInfo
}

// branch is one branch of an alternate. Its field is *T, or a slice for
// a list branch; non-nil marks the chosen branch.
type branch struct {
	index int
	ptr   bool
	typ   *typeInfo
}

var (
	rawType  = reflect.TypeFor[json.RawMessage]()
	nullType = reflect.TypeFor[Null]()
	sizeType = reflect.TypeFor[Size]()
)

// Optional interfaces a Go type may implement to shape its QAPI view.
type (
	enumType    interface{ EnumValues() []string }
	namedType   interface{ QAPIName() string }
	altMarker   interface{ Alternate() }
	featureType interface{ QAPIFeatures() []string }
	// enumFeatureType gives features of individual enum values, e.g.
	// {"vxhs": {"deprecated"}}.
	enumFeatureType interface{ EnumFeatures() map[string][]string }
)

// The cache of compiled types. Lookups are lock-free once a type is
// compiled; compilation is serialised so that recursive types (a union
// whose variant refers back to it through an alternate) are built once
// and published only when complete.
var (
	typeCache sync.Map // reflect.Type -> *typeInfo
	buildMu   sync.Mutex
)

// typeOf returns the compiled model of t. Errors are programming errors
// in a type declaration; Registry.Add turns them into panics.
func typeOf(t reflect.Type) (*typeInfo, error) {
	if ti, ok := typeCache.Load(t); ok {
		return ti.(*typeInfo), nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if ti, ok := typeCache.Load(t); ok {
		return ti.(*typeInfo), nil
	}
	b := &builder{pending: map[reflect.Type]*typeInfo{}}
	ti, err := b.build(t)
	if err != nil {
		return nil, err
	}
	for k, v := range b.pending {
		typeCache.Store(k, v)
	}
	return ti, nil
}

// implements reports whether t or *t has the method set of iface, and
// returns a value on which to call it.
func implements[I any](t reflect.Type) (I, bool) {
	var zero I
	if v, ok := reflect.Zero(t).Interface().(I); ok {
		return v, true
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[I]()) {
		return reflect.New(t).Interface().(I), true
	}
	return zero, false
}

// qapiName is the name a type is known by in error texts and the schema.
func qapiName(t reflect.Type) string {
	if n, ok := implements[namedType](t); ok {
		return n.QAPIName()
	}
	if t.Name() != "" {
		return t.Name()
	}
	return t.String()
}

type builder struct {
	pending map[reflect.Type]*typeInfo
}

func (b *builder) lookup(t reflect.Type) (*typeInfo, bool) {
	if ti, ok := b.pending[t]; ok {
		return ti, true
	}
	if ti, ok := typeCache.Load(t); ok {
		return ti.(*typeInfo), true
	}
	return nil, false
}

func (b *builder) build(t reflect.Type) (*typeInfo, error) {
	if ti, ok := b.lookup(t); ok {
		return ti, nil
	}
	ti := &typeInfo{goType: t, name: qapiName(t)}
	if f, ok := implements[featureType](t); ok {
		ti.features = f.QAPIFeatures()
	}
	b.pending[t] = ti // before recursing, for recursive types
	if err := b.fill(ti, t); err != nil {
		delete(b.pending, t)
		return nil, fmt.Errorf("schema: type %s: %w", t, err)
	}
	return ti, nil
}

func (b *builder) fill(ti *typeInfo, t reflect.Type) error {
	switch {
	case t == rawType:
		ti.kind, ti.name = kindAny, "any"
		return nil
	case t == nullType:
		ti.kind, ti.name = kindNull, "null"
		return nil
	case t == sizeType:
		ti.kind, ti.name = kindSize, "size"
		return nil
	}
	switch t.Kind() {
	case reflect.String:
		if e, ok := implements[enumType](t); ok {
			return fillEnum(ti, t, e)
		}
		ti.kind, ti.name = kindStr, "str"
	case reflect.Bool:
		ti.kind, ti.name = kindBool, "bool"
	case reflect.Int, reflect.Int64:
		ti.kind, ti.name = kindInt, "int"
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		ti.kind, ti.name = kindIntN, fmt.Sprintf("int%d", bits)
		ti.max = 1<<(bits-1) - 1
		ti.min = -ti.max - 1
		ti.cname = ti.name + "_t"
	case reflect.Uint, reflect.Uint64:
		ti.kind, ti.name = kindUint64, "uint64"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		bits := t.Bits()
		ti.kind, ti.name = kindUintN, fmt.Sprintf("uint%d", bits)
		ti.umax = 1<<bits - 1
		ti.cname = ti.name + "_t"
	case reflect.Float64, reflect.Float32:
		ti.kind, ti.name = kindNumber, "number"
	case reflect.Interface:
		if t.NumMethod() != 0 {
			return fmt.Errorf("only the empty interface can hold 'any'")
		}
		ti.kind, ti.name = kindGoAny, "any"
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return fmt.Errorf("map keys must be strings")
		}
		ti.kind, ti.name = kindGoAny, "any"
	case reflect.Slice:
		elem, err := b.build(t.Elem())
		if err != nil {
			return err
		}
		ti.kind, ti.elem = kindList, elem
		ti.name = "[" + elem.name + "]"
	case reflect.Struct:
		if _, ok := implements[altMarker](t); ok {
			return b.fillAlternate(ti, t)
		}
		return b.fillObject(ti, t)
	default:
		return fmt.Errorf("unsupported Go kind %s", t.Kind())
	}
	return nil
}

func fillEnum(ti *typeInfo, t reflect.Type, e enumType) error {
	ti.kind = kindEnum
	ti.values = e.EnumValues()
	ti.valueSet = make(map[string]struct{}, len(ti.values))
	for _, v := range ti.values {
		if _, dup := ti.valueSet[v]; dup {
			return fmt.Errorf("duplicate enum value %q", v)
		}
		ti.valueSet[v] = struct{}{}
	}
	if f, ok := implements[enumFeatureType](t); ok {
		ti.valueFeatures = f.EnumFeatures()
	}
	return nil
}

func (b *builder) fillAlternate(ti *typeInfo, t reflect.Type) error {
	ti.kind = kindAlternate
	seen := map[jkind]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("qapi") == "-" {
			continue
		}
		br := &branch{index: i}
		ft := f.Type
		switch ft.Kind() {
		case reflect.Pointer:
			br.ptr, ft = true, ft.Elem()
		case reflect.Slice:
		default:
			return fmt.Errorf("alternate branch %s must be a pointer or slice", f.Name)
		}
		bt, err := b.build(ft)
		if err != nil {
			return err
		}
		br.typ = bt
		k := branchKind(bt)
		if k == jInvalid {
			return fmt.Errorf("alternate branch %s has no JSON kind of its own", f.Name)
		}
		if seen[k] {
			return fmt.Errorf("alternate branch %s is ambiguous", f.Name)
		}
		seen[k] = true
		ti.branches = append(ti.branches, br)
	}
	if len(ti.branches) == 0 {
		return fmt.Errorf("alternate without branches")
	}
	return nil
}

// branchKind is the JSON kind that selects a branch of type bt, as QEMU's
// generated alternate visitors switch on the QObject type. A 'number'
// branch claims floats, and integers too when no integer branch exists
// (see pickBranch).
func branchKind(bt *typeInfo) jkind {
	switch bt.kind {
	case kindStr, kindEnum:
		return jStr
	case kindBool:
		return jBool
	case kindInt, kindIntN, kindUint64, kindUintN, kindSize:
		return jInt
	case kindNumber:
		return jFloat
	case kindNull:
		return jNull
	case kindObject:
		return jObj
	case kindList:
		return jArr
	}
	return jInvalid
}

// pickBranch returns the branch of an alternate that a JSON value of kind
// k selects, or nil.
func (ti *typeInfo) pickBranch(k jkind) *branch {
	var number *branch
	for _, br := range ti.branches {
		bk := branchKind(br.typ)
		if bk == k {
			return br
		}
		if bk == jFloat {
			number = br
		}
	}
	if k == jInt {
		return number
	}
	return nil
}
