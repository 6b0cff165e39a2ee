package schema

import (
	"context"
	"encoding/json"
	"math"
	"math/bits"
	"reflect"
	"strconv"
	"strings"

	"blockd/internal/qemu"
)

// Keyval decoding: options given as key=value on the command line
// (--blockdev driver=qcow2,file.filename=x) reach the visitors with every
// scalar still a string. QEMU decodes them with the keyval flavour of its
// input visitor, which converts strings the C way (strtoll with base 0,
// "on"/"off", qemu_strtosz) and has its own texts, and writes list
// elements as "name.0" instead of "name[0]". Structure checks (missing,
// unexpected, object/array, enums, alternates) are the same as for JSON.

type keyvalKey struct{}

// WithKeyval marks ctx so that Registry.Call decodes the arguments with
// keyval rules when keyval is true.
func WithKeyval(ctx context.Context, keyval bool) context.Context {
	return context.WithValue(ctx, keyvalKey{}, keyval)
}

func isKeyval(ctx context.Context) bool {
	kv, _ := ctx.Value(keyvalKey{}).(bool)
	return kv
}

// DecodeKeyval is Decode for arguments parsed from key=value syntax, whose
// scalars are all JSON strings.
func DecodeKeyval(args json.RawMessage, into any) error {
	return decode(args, into, true)
}

func isScalar(k kind) bool {
	switch k {
	case kindStr, kindEnum, kindBool, kindInt, kindIntN, kindUint64, kindUintN, kindSize, kindNumber:
		return true
	}
	return false
}

// keyvalScalar is qobject_input_get_keyval followed by the keyval
// type_* conversion for ti.
func (d *decoder) keyvalScalar(v *jval, ti *typeInfo, dst reflect.Value) error {
	switch v.kind {
	case jStr:
	case jObj, jArr:
		return Errorf("Parameters '%s.*' are unexpected", d.full())
	default:
		return Errorf("Internal error: parameter %s invalid", d.full())
	}
	s := v.s
	switch ti.kind {
	case kindStr:
		dst.SetString(s)
	case kindEnum:
		if _, ok := ti.valueSet[s]; !ok {
			return Errorf("Parameter '%s' does not accept value '%s'", d.short(), s)
		}
		dst.SetString(s)
	case kindBool:
		switch s {
		case "on", "yes", "true", "y":
			dst.SetBool(true)
		case "off", "no", "false", "n":
			dst.SetBool(false)
		default:
			return Errorf("Parameter '%s' expects 'on' or 'off'", d.full())
		}
	case kindInt, kindIntN:
		n, ok := strtoi64(s)
		if !ok {
			return Errorf("Parameter '%s' expects integer", d.full())
		}
		if ti.kind == kindIntN && (n < ti.min || n > ti.max) {
			return Errorf("Parameter '%s' expects %s", d.short(), ti.cname)
		}
		dst.SetInt(n)
	case kindUint64, kindUintN:
		u, ok := strtou64(s)
		if !ok {
			return Errorf("Parameter '%s' expects integer", d.full())
		}
		if ti.kind == kindUintN && u > ti.umax {
			return Errorf("Parameter '%s' expects %s", d.short(), ti.cname)
		}
		dst.SetUint(u)
	case kindSize:
		u, err := qemu.Strtosz(s)
		if err != nil {
			return Errorf("Parameter '%s' expects size", d.full())
		}
		dst.SetUint(u)
	case kindNumber:
		f, err := strconv.ParseFloat(strings.TrimLeft(s, cSpace), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return d.badType("number")
		}
		dst.SetFloat(f)
	}
	return nil
}

// cSpace is what C's isspace() skips before a number.
const cSpace = " \t\n\v\f\r"

// strtoMag parses like strtoumax with base 0 (leading space, sign, 0x
// hex, 0 octal) and requires the whole string to be consumed, as
// QEMU's qemu_strto* do when given no end pointer.
func strtoMag(s string) (mag uint64, neg, ok bool) {
	s = strings.TrimLeft(s, cSpace)
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	base := uint64(10)
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digitVal(s[2]) < 16:
		base, s = 16, s[2:]
	case len(s) > 0 && s[0] == '0':
		base = 8
	}
	if s == "" {
		return 0, false, false
	}
	for i := 0; i < len(s); i++ {
		dv := digitVal(s[i])
		if dv >= base {
			return 0, false, false
		}
		hi, lo := bits.Mul64(mag, base)
		lo, carry := bits.Add64(lo, dv, 0)
		if hi != 0 || carry != 0 {
			return 0, false, false // ERANGE
		}
		mag = lo
	}
	return mag, neg, true
}

func digitVal(c byte) uint64 {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0')
	case c >= 'a' && c <= 'z':
		return uint64(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return uint64(c-'A') + 10
	}
	return 99
}

// strtoi64 is qemu_strtoi64(s, NULL, 0, &n).
func strtoi64(s string) (int64, bool) {
	mag, neg, ok := strtoMag(s)
	switch {
	case !ok:
		return 0, false
	case neg && mag <= 1<<63:
		return int64(-mag), true
	case !neg && mag < 1<<63:
		return int64(mag), true
	}
	return 0, false
}

// strtou64 is qemu_strtou64(s, NULL, 0, &u): negative values wrap, like
// strtoull's.
func strtou64(s string) (uint64, bool) {
	mag, neg, ok := strtoMag(s)
	if neg {
		mag = -mag
	}
	return mag, ok
}
