package tools

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Sizes are parsed like QEMU's qemu_strtosz (util/cutils.c), which both
// qemu-img and qemu-io use: a decimal number with an optional fraction
// and a binary suffix (B, K, M, G, T, P, E; case does not matter), or a
// hexadecimal number without fraction or suffix.

var (
	errSizeInvalid = errors.New("invalid size")
	errSizeRange   = errors.New("size out of range")
)

func suffixMul(c byte) uint64 {
	switch c {
	case 'b', 'B':
		return 1
	case 'k', 'K':
		return 1 << 10
	case 'm', 'M':
		return 1 << 20
	case 'g', 'G':
		return 1 << 30
	case 't', 'T':
		return 1 << 40
	case 'p', 'P':
		return 1 << 50
	case 'e', 'E':
		return 1 << 60
	}
	return 0
}

// parseSize is qemu_strtosz with no end pointer: the whole string must be
// consumed. It returns errSizeInvalid or errSizeRange.
func parseSize(s string) (uint64, error) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
		i++
	}
	start := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		if s[i] == '-' {
			return 0, errSizeInvalid
		}
		i++
	}
	d := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == d {
		return 0, errSizeInvalid
	}
	val, err := strconv.ParseUint(s[d:i], 10, 64)
	if err != nil {
		return 0, errSizeRange
	}
	rest := s[i:]
	if val == 0 && len(rest) > 0 && (rest[0] == 'x' || rest[0] == 'X') && s[start:i] == "0" {
		h := rest[1:]
		j := 0
		for j < len(h) && strings.IndexByte("0123456789abcdefABCDEF", h[j]) >= 0 {
			j++
		}
		if j == 0 || j != len(h) {
			return 0, errSizeInvalid
		}
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return 0, errSizeRange
		}
		return v, nil
	}
	var valf uint64
	if len(rest) > 0 && rest[0] == '.' {
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j < len(rest) && (rest[j] == 'e' || rest[j] == 'E') && suffixMul(rest[j]) != 0 &&
			j+1 < len(rest) && (rest[j+1] >= '0' && rest[j+1] <= '9' || rest[j+1] == '+' || rest[j+1] == '-') {
			return 0, errSizeInvalid // an exponent
		}
		if j > 1 {
			f, err := strconv.ParseFloat("0"+rest[:j], 64)
			if err != nil {
				return 0, errSizeInvalid
			}
			valf = uint64(f * 0x1p64)
			if f >= 1 {
				valf = math.MaxUint64
			}
		}
		rest = rest[j:]
	}
	mul := uint64(1)
	if len(rest) > 0 {
		if mul = suffixMul(rest[0]); mul == 0 {
			return 0, errSizeInvalid
		}
		rest = rest[1:]
	}
	if rest != "" {
		return 0, errSizeInvalid
	}
	if mul == 1 {
		if valf != 0 {
			return 0, errSizeInvalid // a fraction needs a scale
		}
		return val, nil
	}
	// 64.64 fixed point times mul, rounded half up, as QEMU computes it.
	hi, lo := bits.Mul64(val, mul)
	fhi, flo := bits.Mul64(valf, mul)
	lo, carry := bits.Add64(lo, fhi, 0)
	hi += carry
	lo, carry = bits.Add64(lo, flo>>63, 0)
	hi += carry
	if hi != 0 {
		return 0, errSizeRange
	}
	return lo, nil
}

// parseSizeMax is parseSize limited to max (qemu-img's cvtnum_full).
func parseSizeMax(s string, max uint64) (int64, error) {
	v, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, errSizeRange
	}
	return int64(v), nil
}
