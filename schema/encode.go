package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// Encoding writes return values and events the way QEMU's
// qobject-output-visitor would produce them: members named and ordered
// by the declarations (base first, then the union variant flattened into
// the same object), absent optional members omitted, alternates as their
// chosen branch, and strings escaped like QEMU's JSON writer.

// Marshal encodes v by its qapi tags. A nil v or nil pointer encodes as
// null.
func Marshal(v any) ([]byte, error) {
	if v == nil {
		return []byte("null"), nil
	}
	rv := reflect.ValueOf(v)
	t := rv.Type()
	if t.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return []byte("null"), nil
		}
		rv, t = rv.Elem(), t.Elem()
	}
	ti, err := typeOf(t)
	if err != nil {
		return nil, err
	}
	return appendValue(nil, rv, ti)
}

func appendValue(buf []byte, rv reflect.Value, ti *typeInfo) ([]byte, error) {
	switch ti.kind {
	case kindStr, kindEnum:
		return AppendJSONString(buf, rv.String()), nil
	case kindBool:
		return strconv.AppendBool(buf, rv.Bool()), nil
	case kindInt, kindIntN:
		return strconv.AppendInt(buf, rv.Int(), 10), nil
	case kindUint64, kindUintN, kindSize:
		return strconv.AppendUint(buf, rv.Uint(), 10), nil
	case kindNumber:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("schema: cannot encode non-finite number %v", f)
		}
		return appendFloat(buf, f), nil
	case kindAny:
		raw := rv.Bytes()
		if len(raw) == 0 {
			return append(buf, "null"...), nil
		}
		if !json.Valid(raw) {
			return nil, fmt.Errorf("schema: 'any' value is not valid JSON")
		}
		return append(buf, raw...), nil
	case kindGoAny:
		return appendGoAny(buf, rv)
	case kindNull:
		return append(buf, "null"...), nil
	case kindObject:
		buf = append(buf, '{')
		buf, _, err := appendMembers(buf, rv, ti, true)
		if err != nil {
			return nil, err
		}
		return append(buf, '}'), nil
	case kindAlternate:
		for _, br := range ti.branches {
			fv := rv.Field(br.index)
			if fv.IsNil() {
				continue
			}
			if br.ptr {
				fv = fv.Elem()
			}
			return appendValue(buf, fv, br.typ)
		}
		return nil, fmt.Errorf("schema: alternate %s has no branch set", ti.name)
	case kindList:
		buf = append(buf, '[')
		for i := range rv.Len() {
			if i > 0 {
				buf = append(buf, ',', ' ')
			}
			var err error
			if buf, err = appendValue(buf, rv.Index(i), ti.elem); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	}
	return nil, fmt.Errorf("schema: cannot encode %s", ti.name)
}

// appendMembers writes the members of ti held in rv, and those of the
// variant its discriminator selects, without the braces.
func appendMembers(buf []byte, rv reflect.Value, ti *typeInfo, first bool) ([]byte, bool, error) {
	var err error
	for _, m := range ti.members {
		fv := rv.FieldByIndex(m.index)
		if m.optional && fv.IsNil() {
			continue
		}
		if m.ptr {
			if fv.IsNil() {
				return nil, first, fmt.Errorf("schema: required member %q is nil", m.name)
			}
			fv = fv.Elem()
		}
		if !first {
			buf = append(buf, ',', ' ')
		}
		first = false
		buf = append(buf, m.key...)
		buf = append(buf, ' ')
		if buf, err = appendValue(buf, fv, m.typ); err != nil {
			return nil, first, err
		}
	}
	if ti.tag == nil {
		return buf, first, nil
	}
	vr := ti.variantFor[rv.FieldByIndex(ti.tag.index).String()]
	if vr == nil {
		return buf, first, nil
	}
	fv := rv.FieldByIndex(vr.index)
	if fv.IsNil() {
		return buf, first, nil
	}
	return appendMembers(buf, fv.Elem(), vr.typ, first)
}

// appendGoAny encodes an interface or map with encoding/json, without
// its HTML escaping (QEMU has none).
func appendGoAny(buf []byte, rv reflect.Value) ([]byte, error) {
	if rv.IsNil() {
		if rv.Kind() == reflect.Map {
			return append(buf, '{', '}'), nil
		}
		return append(buf, "null"...), nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rv.Interface()); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return append(buf, bytes.TrimRight(b.Bytes(), "\n")...), nil
}
