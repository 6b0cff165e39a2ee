// Package qemu owns the reference's small text conventions that several
// blockd packages share: sizes with suffixes (qemu_strtosz) and the
// well-formed identifiers of nodes, jobs and objects (id_wellformed),
// and base64 as qbase64_decode checks it (secrets, ringbuf-write).
// One copy, so that the command line, QMP and the tools agree.
package qemu

import (
	"errors"
	"math/bits"
	"strconv"
	"strings"
)

// Errors of Strtosz.
var (
	ErrInvalidSize = errors.New("invalid size")
	ErrSizeRange   = errors.New("size out of range")
)

// Strtosz parses a size as the reference's qemu_strtosz does, the whole
// string being the number: optional leading white space and '+', a
// decimal integer, an optional fraction, and an optional suffix B, K, M,
// G, T, P or E (any case, powers of 1024); a fraction needs a suffix
// other than B. "0x" starts a hexadecimal integer, which takes no
// fraction but (deprecated, still accepted by 7.2) a suffix. Quirks kept
// as the reference has them: "1." and "1.K" are 1 and 1024, "1.0B" is 1,
// "1.5e" is 1.5 EiB, and a fraction that rounds to 1.0 counts as 0.
func Strtosz(s string) (uint64, error) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	sign := ""
	if t != "" && (t[0] == '+' || t[0] == '-') {
		sign, t = t[:1], t[1:]
	}
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 || sign == "-" {
		return 0, ErrInvalidSize
	}
	val, err := strconv.ParseUint(t[:i], 10, 64)
	if err != nil {
		return 0, rangeOrInvalid(t[i:])
	}
	rest := t[i:]
	var valf uint64 // the fraction, 0.64 fixed point
	switch {
	case val == 0 && rest != "" && (rest[0] == 'x' || rest[0] == 'X'):
		// Reparsed as hexadecimal from the start: only a lone "0" may
		// precede the x.
		j := 1
		for j < len(rest) && isHex(rest[j]) {
			j++
		}
		if i != 1 || j == 1 {
			return 0, ErrInvalidSize
		}
		if val, err = strconv.ParseUint(rest[1:j], 16, 64); err != nil {
			return 0, rangeOrInvalid(rest[j:])
		}
		rest = rest[j:]
		if rest != "" && rest[0] == '.' {
			return 0, ErrInvalidSize
		}
	case rest != "" && rest[0] == '.':
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 1 {
			// No digit after '.': strtod fails and the reference skips
			// the '.' alone.
			rest = rest[1:]
			break
		}
		// strtod would take an exponent ("e3", "e+3", "E-1"), which the
		// reference refuses; a lone 'e' is the exa suffix.
		if k := j; k < len(rest) && (rest[k] == 'e' || rest[k] == 'E') {
			k++
			if k < len(rest) && (rest[k] == '+' || rest[k] == '-') {
				k++
			}
			if k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
				return 0, ErrInvalidSize
			}
		}
		f, _ := strconv.ParseFloat("0"+rest[:j], 64)
		if f < 1 {
			valf = uint64(f * 0x1p64)
		}
		rest = rest[j:]
	}
	mul := uint64(1)
	if rest != "" {
		idx := strings.IndexByte("BKMGTPE", upper(rest[0]))
		if idx < 0 || len(rest) != 1 {
			return 0, ErrInvalidSize
		}
		mul = 1 << (10 * idx)
	}
	if mul == 1 {
		if valf != 0 {
			return 0, ErrInvalidSize // a fraction needs a scale
		}
		return val, nil
	}
	// 64.64 fixed point times mul, rounded half up.
	hi, lo := bits.Mul64(val, mul)
	fhi, flo := bits.Mul64(valf, mul)
	var c uint64
	lo, c = bits.Add64(lo, fhi, 0)
	hi += c
	lo, c = bits.Add64(lo, flo>>63, 0)
	hi += c
	if hi != 0 {
		return 0, ErrSizeRange
	}
	return lo, nil
}

// rangeOrInvalid is the error for an integer that overflows: out of
// range, unless text follows it, which the reference then reports as
// invalid rather than reading a suffix.
func rangeOrInvalid(after string) error {
	if after != "" {
		return ErrInvalidSize
	}
	return ErrSizeRange
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// IDWellFormed is the reference's id_wellformed: a letter, then letters,
// digits, '-', '.' and '_'. Node names, job ids and object ids use it.
func IDWellFormed(id string) bool {
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

// ParseUintFull is QEMU's parse_uint_full in base 10: leading white space
// and a plus sign are allowed, a minus sign, anything after the digits
// and values above max are not.
func ParseUintFull(s string, max uint64) (uint64, bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	t = strings.TrimPrefix(t, "+")
	if t == "" || t[0] < '0' || t[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v > max {
		return 0, false
	}
	return v, true
}
