package schema

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// Decoding follows QEMU 7.2's qobject-input-visitor and the generated
// visit_type_* functions step by step, because clients (libvirt, scripts,
// test suites) match on the error texts:
//
//   - members are visited in declaration order (base, own, then the
//     variant chosen by the discriminator), so the first error is the
//     first bad member in declaration order, not in input order;
//   - leftover keys are reported when a struct is complete, after all of
//     its members decoded without error;
//   - most texts carry the full name (file.driver, options[0].file), but
//     the enum, alternate and sized-integer range checks in
//     qapi-visit-core.c and the generated alternate visitors use the bare
//     member name, or "null" for a list element.
//
// A JSON null is a value like any other: it is not "absent".

// Decode decodes QMP "arguments" into the struct into points to, with
// QEMU's checks and error texts. Empty args mean {}. All errors are
// *Error with class GenericError.
func Decode(args json.RawMessage, into any) error {
	return decode(args, into, false)
}

func decode(args json.RawMessage, into any, keyval bool) error {
	rv := reflect.ValueOf(into)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return Errorf("internal error: schema.Decode needs a non-nil pointer")
	}
	ti, err := typeOf(rv.Type().Elem())
	if err != nil {
		return Errorf("internal error: %v", err)
	}
	if ti.kind != kindObject {
		return Errorf("internal error: schema.Decode into %s, not an object", ti.name)
	}
	root := &jval{kind: jObj}
	if len(bytes.TrimSpace(args)) > 0 {
		if root, err = parseJSON(args); err != nil {
			return err
		}
	}
	if root.kind != jObj {
		return Errorf("QMP input member 'arguments' must be an object")
	}
	dst := rv.Elem()
	dst.SetZero()
	d := decoder{keyval: keyval}
	return d.object(root, ti, dst)
}

// decoder tracks the path to the value being visited, for full names.
type decoder struct {
	path   []pathSeg
	keyval bool // scalars are strings to convert (see keyval.go)
}

type pathSeg struct {
	name  string // member name; "" for a list element
	index int
}

func (d *decoder) push(name string, index int) {
	d.path = append(d.path, pathSeg{name: name, index: index})
}

func (d *decoder) pop() { d.path = d.path[:len(d.path)-1] }

// full is QEMU's full_name(): "a.b[2].c", or "a.b.2.c" for keyval.
func (d *decoder) full() string {
	var sb strings.Builder
	for i, s := range d.path {
		if s.name == "" && d.keyval {
			sb.WriteByte('.')
			sb.WriteString(strconv.Itoa(s.index))
			continue
		}
		if s.name == "" {
			sb.WriteByte('[')
			sb.WriteString(strconv.Itoa(s.index))
			sb.WriteByte(']')
			continue
		}
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(s.name)
	}
	return sb.String()
}

// short is the bare name some QEMU checks print: the member name, or
// "null" for a list element (whose visit has no name).
func (d *decoder) short() string {
	if len(d.path) == 0 || d.path[len(d.path)-1].name == "" {
		return "null"
	}
	return d.path[len(d.path)-1].name
}

func (d *decoder) badType(expected string) error {
	return Errorf("Invalid parameter type for '%s', expected: %s", d.full(), expected)
}

// object decodes a JSON value into a struct (start_struct, members,
// check_struct).
func (d *decoder) object(v *jval, ti *typeInfo, dst reflect.Value) error {
	if v.kind != jObj {
		return d.badType("object")
	}
	if err := d.members(v, ti, dst); err != nil {
		return err
	}
	var keys, used []string
	for i := range v.fields {
		keys = append(keys, v.fields[i].key)
		if v.fields[i].used {
			used = append(used, v.fields[i].key)
		}
	}
	if len(used) == len(keys) {
		return nil
	}
	d.push(firstUnexpected(keys, used), 0)
	err := Errorf("Parameter '%s' is unexpected", d.full())
	d.pop()
	return err
}

// members decodes ti's members, then the variant the discriminator picks,
// from the same JSON object.
func (d *decoder) members(v *jval, ti *typeInfo, dst reflect.Value) error {
	for _, m := range ti.members {
		f := v.field(m.name)
		fv := dst.FieldByIndex(m.index)
		d.push(m.name, 0)
		var err error
		switch {
		case f != nil:
			f.used = true
			err = d.member(&f.val, m, fv)
		case !m.optional:
			err = Errorf("Parameter '%s' is missing", d.full())
		}
		d.pop()
		if err != nil {
			return err
		}
	}
	if ti.tag == nil {
		return nil
	}
	vr := ti.variantFor[dst.FieldByIndex(ti.tag.index).String()]
	if vr == nil {
		return nil
	}
	p := reflect.New(vr.typ.goType)
	if err := d.members(v, vr.typ, p.Elem()); err != nil {
		return err
	}
	dst.FieldByIndex(vr.index).Set(p)
	return nil
}

func (d *decoder) member(v *jval, m *member, fv reflect.Value) error {
	if !m.ptr {
		return d.value(v, m.typ, fv)
	}
	p := reflect.New(fv.Type().Elem())
	if err := d.value(v, m.typ, p.Elem()); err != nil {
		return err
	}
	fv.Set(p)
	return nil
}

// value decodes v into dst, whose compiled type is ti.
func (d *decoder) value(v *jval, ti *typeInfo, dst reflect.Value) error {
	if d.keyval && isScalar(ti.kind) {
		return d.keyvalScalar(v, ti, dst)
	}
	switch ti.kind {
	case kindStr:
		if v.kind != jStr {
			return d.badType("string")
		}
		dst.SetString(v.s)
	case kindEnum:
		if v.kind != jStr {
			return d.badType("string")
		}
		if _, ok := ti.valueSet[v.s]; !ok {
			return Errorf("Parameter '%s' does not accept value '%s'", d.short(), v.s)
		}
		dst.SetString(v.s)
	case kindBool:
		if v.kind != jBool {
			return d.badType("boolean")
		}
		dst.SetBool(v.b)
	case kindInt, kindIntN:
		return d.integer(v, ti, dst)
	case kindUint64, kindUintN, kindSize:
		return d.unsigned(v, ti, dst)
	case kindNumber:
		if v.kind != jInt && v.kind != jFloat {
			return d.badType("number")
		}
		dst.SetFloat(parseNumber(v.s))
	case kindAny:
		dst.SetBytes(bytes.Clone(v.raw))
	case kindGoAny:
		return d.goAny(v, dst)
	case kindNull:
		if v.kind != jNull {
			return d.badType("null")
		}
	case kindObject:
		return d.object(v, ti, dst)
	case kindAlternate:
		return d.alternate(v, ti, dst)
	case kindList:
		return d.list(v, ti, dst)
	default:
		return Errorf("internal error: cannot decode %s", ti.name)
	}
	return nil
}

// integer is visit_type_int / visit_type_intN: any integer that fits
// int64, then the range of the Go type.
func (d *decoder) integer(v *jval, ti *typeInfo, dst reflect.Value) error {
	var n int64
	var err error
	if v.kind == jInt {
		n, err = strconv.ParseInt(v.s, 10, 64)
	}
	if v.kind != jInt || err != nil {
		return d.badType("integer")
	}
	if ti.kind == kindIntN && (n < ti.min || n > ti.max) {
		return Errorf("Parameter '%s' expects %s", d.short(), ti.cname)
	}
	dst.SetInt(n)
	return nil
}

// unsigned is visit_type_uint64 (and size, and uintN): any integer that
// fits uint64, or a negative one that fits int64 (QEMU keeps accepting
// those "for backward compatibility", wrapping them), then the range of
// the Go type.
func (d *decoder) unsigned(v *jval, ti *typeInfo, dst reflect.Value) error {
	ok := v.kind == jInt
	var u uint64
	if ok {
		var err error
		if u, err = strconv.ParseUint(v.s, 10, 64); err != nil {
			n, err := strconv.ParseInt(v.s, 10, 64)
			u, ok = uint64(n), err == nil
		}
	}
	if !ok {
		return Errorf("Parameter '%s' expects uint64", d.full())
	}
	if ti.kind == kindUintN && u > ti.umax {
		return Errorf("Parameter '%s' expects %s", d.short(), ti.cname)
	}
	dst.SetUint(u)
	return nil
}

// parseNumber converts a JSON number literal as QEMU's parser would: to
// the nearest double, out-of-range values becoming infinities.
func parseNumber(lit string) float64 {
	f, _ := strconv.ParseFloat(lit, 64)
	return f
}

func (d *decoder) goAny(v *jval, dst reflect.Value) error {
	p := reflect.New(dst.Type())
	dec := json.NewDecoder(bytes.NewReader(v.raw))
	dec.UseNumber()
	if err := dec.Decode(p.Interface()); err != nil {
		// Only a map can fail: an interface takes any valid JSON.
		return d.badType("object")
	}
	dst.Set(p.Elem())
	return nil
}

// alternate picks the branch by the JSON kind, like the generated
// visit_type_ALT: no matching branch is reported with the bare name and
// the alternate's QAPI name.
func (d *decoder) alternate(v *jval, ti *typeInfo, dst reflect.Value) error {
	br := ti.pickBranch(v.kind)
	if br == nil {
		return Errorf("Invalid parameter type for '%s', expected: %s", d.short(), ti.name)
	}
	fv := dst.Field(br.index)
	if !br.ptr {
		return d.value(v, br.typ, fv)
	}
	p := reflect.New(fv.Type().Elem())
	if err := d.value(v, br.typ, p.Elem()); err != nil {
		return err
	}
	fv.Set(p)
	return nil
}

func (d *decoder) list(v *jval, ti *typeInfo, dst reflect.Value) error {
	if v.kind != jArr {
		return d.badType("array")
	}
	s := reflect.MakeSlice(dst.Type(), len(v.elems), len(v.elems))
	for i := range v.elems {
		d.push("", i)
		err := d.value(&v.elems[i], ti.elem, s.Index(i))
		d.pop()
		if err != nil {
			return err
		}
	}
	dst.Set(s)
	return nil
}
