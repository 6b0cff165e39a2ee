package schema

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// A small JSON tree. encoding/json cannot tell 1 from 1.0, loses member
// order and silently accepts duplicate keys; QEMU's visitors need the
// first two and its parser rejects the third. The input is checked with
// json.Valid first (which also bounds the nesting depth), so the parser
// below only has to split valid text, not diagnose it.

type jkind uint8

const (
	jInvalid jkind = iota
	jNull
	jBool
	jInt   // number literal without fraction or exponent
	jFloat // number literal with fraction or exponent
	jStr
	jObj
	jArr
)

type jval struct {
	kind   jkind
	b      bool
	s      string // string value, or the number literal
	raw    []byte // the value's text, for 'any'
	fields []jfield
	elems  []jval
	index  map[string]int // key -> fields index, for large objects
}

type jfield struct {
	key  string
	val  jval
	used bool // consumed by a member visit; leftovers are unexpected
}

// errDuplicateKey carries QEMU's parser text for {"a":1,"a":2}.
var errDuplicateKey = Errorf("JSON parse error, duplicate key")

// parseJSON parses one JSON value.
func parseJSON(data []byte) (*jval, error) {
	if !json.Valid(data) {
		return nil, Errorf("JSON parse error, invalid JSON syntax")
	}
	p := parser{data: data}
	v := new(jval)
	if err := p.value(v); err != nil {
		return nil, err
	}
	return v, nil
}

type parser struct {
	data []byte
	pos  int
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(v *jval) error {
	p.skipSpace()
	start := p.pos
	var err error
	switch c := p.data[p.pos]; c {
	case '{':
		err = p.object(v)
	case '[':
		err = p.array(v)
	case '"':
		v.kind = jStr
		v.s = p.str()
	case 't':
		v.kind, v.b = jBool, true
		p.pos += 4
	case 'f':
		v.kind = jBool
		p.pos += 5
	case 'n':
		v.kind = jNull
		p.pos += 4
	default:
		p.number(v)
	}
	v.raw = p.data[start:p.pos]
	return err
}

func (p *parser) object(v *jval) error {
	v.kind = jObj
	p.pos++ // {
	p.skipSpace()
	if p.data[p.pos] == '}' {
		p.pos++
		return nil
	}
	for {
		p.skipSpace()
		key := p.str()
		if v.has(key) {
			return errDuplicateKey
		}
		p.skipSpace()
		p.pos++ // :
		v.fields = append(v.fields, jfield{key: key})
		if err := p.value(&v.fields[len(v.fields)-1].val); err != nil {
			return err
		}
		if v.index != nil || len(v.fields) > 8 {
			v.reindex()
		}
		p.skipSpace()
		c := p.data[p.pos]
		p.pos++ // , or }
		if c == '}' {
			return nil
		}
	}
}

// has reports whether the object already holds key.
func (v *jval) has(key string) bool {
	if v.index != nil {
		_, ok := v.index[key]
		return ok
	}
	for i := range v.fields {
		if v.fields[i].key == key {
			return true
		}
	}
	return false
}

func (v *jval) reindex() {
	if v.index == nil {
		v.index = make(map[string]int, 2*len(v.fields))
		for i := range v.fields {
			v.index[v.fields[i].key] = i
		}
		return
	}
	n := len(v.fields) - 1
	v.index[v.fields[n].key] = n
}

// field returns the member key of an object, or nil.
func (v *jval) field(key string) *jfield {
	if v.index != nil {
		if i, ok := v.index[key]; ok {
			return &v.fields[i]
		}
		return nil
	}
	for i := range v.fields {
		if v.fields[i].key == key {
			return &v.fields[i]
		}
	}
	return nil
}

func (p *parser) array(v *jval) error {
	v.kind = jArr
	v.elems = []jval{} // present, even if empty
	p.pos++            // [
	p.skipSpace()
	if p.data[p.pos] == ']' {
		p.pos++
		return nil
	}
	for {
		v.elems = append(v.elems, jval{})
		if err := p.value(&v.elems[len(v.elems)-1]); err != nil {
			return err
		}
		p.skipSpace()
		c := p.data[p.pos]
		p.pos++ // , or ]
		if c == ']' {
			return nil
		}
	}
}

// str reads a string token at p.pos and returns its value.
func (p *parser) str() string {
	start := p.pos
	p.pos++ // "
	simple := true
	for {
		c := p.data[p.pos]
		if c == '"' {
			break
		}
		if c == '\\' {
			simple = false
			p.pos++ // skip the escaped byte; \uXXXX digits are plain
		} else if c >= utf8.RuneSelf {
			simple = false
		}
		p.pos++
	}
	p.pos++ // "
	body := p.data[start+1 : p.pos-1]
	if simple {
		return string(body)
	}
	var s string
	// Valid JSON: cannot fail. Invalid UTF-8 becomes U+FFFD.
	_ = json.Unmarshal(p.data[start:p.pos], &s)
	return s
}

func (p *parser) number(v *jval) {
	start := p.pos
	v.kind = jInt
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case '.', 'e', 'E':
			v.kind = jFloat
		case '-', '+', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			v.s = string(p.data[start:p.pos])
			return
		}
		p.pos++
	}
	v.s = string(p.data[start:p.pos])
}

// AppendJSONString appends s as a JSON string the way QEMU writes it:
// control characters, DEL and all non-ASCII characters are \u escapes
// (UTF-16 surrogate pairs above the BMP); invalid UTF-8 becomes U+FFFD.
func AppendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	u := func(dst []byte, r rune) []byte {
		return append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = u(dst, rune(c))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r >= 0x10000 {
			r -= 0x10000
			dst = u(dst, 0xd800+(r>>10))
			dst = u(dst, 0xdc00+(r&0x3ff))
			continue
		}
		dst = u(dst, r) // includes U+FFFD for invalid bytes
	}
	return append(dst, '"')
}

// appendFloat writes a double as QEMU does ("%.17g").
func appendFloat(dst []byte, f float64) []byte {
	return strconv.AppendFloat(dst, f, 'g', 17, 64)
}
