package tools

import (
	"blockd/internal/qdict"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// qemu-img prints its JSON from a QObject: dictionaries come out in the
// order QDict iterates its keys (by tdb_hash bucket, the newest key first
// within a bucket), pretty-printed with four spaces. Scripts diff these
// outputs, so blockd prints the same bytes. Members are added in the
// order of the QAPI type's fields, which is the order the QAPI visitor
// inserts them.

// prettyJSON is qobject_to_json_pretty.
func prettyJSON(v any) string {
	var b strings.Builder
	writeJSON(&b, v, 0)
	return b.String()
}

func writeJSON(b *strings.Builder, v any, level int) {
	indent := func(l int) {
		b.WriteByte('\n')
		b.WriteString(strings.Repeat("    ", l))
	}
	switch x := v.(type) {
	case qdict.Dict:
		b.WriteByte('{')
		for i, m := range x.Ordered() {
			if i > 0 {
				b.WriteByte(',')
			}
			indent(level + 1)
			b.WriteString(quoteJSON(m.Key))
			b.WriteString(": ")
			writeJSON(b, m.Val, level+1)
		}
		if len(x) > 0 {
			indent(level)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			indent(level + 1)
			writeJSON(b, e, level+1)
		}
		if len(x) > 0 {
			indent(level)
		}
		b.WriteByte(']')
	case string:
		b.WriteString(quoteJSON(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case nil:
		b.WriteString("null")
	default:
		panic(fmt.Sprintf("qjson: unsupported %T", v))
	}
}

// quoteJSON escapes a string as QEMU's to_json does: printable ASCII as
// is, the usual backslash escapes, everything else as \uXXXX (UTF-16,
// upper-case hex).
func quoteJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		s = s[n:]
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r >= 0x20 && r <= 0x7e:
			b.WriteRune(r)
		case r > 0xffff:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04X\u%04X`, 0xd800|(r>>10), 0xdc00|(r&0x3ff))
		default:
			fmt.Fprintf(&b, `\u%04X`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
