package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SyntaxError words the syntax error of text that is not valid JSON the
// way QEMU's JSON parser does for the common cases; clients match on the
// error class, people read the text.
func SyntaxError(msg []byte) string {
	var v any
	err := json.Unmarshal(msg, &v)
	var se *json.SyntaxError
	text := "expecting value"
	if errors.As(err, &se) {
		m := se.Error()
		switch {
		case strings.Contains(m, "after object key:value pair"):
			text = "expected separator in dict"
		case strings.Contains(m, "after object key"):
			text = "missing : in object pair"
		case strings.Contains(m, "looking for beginning of object key string"):
			text = "key is not a string in object"
		case strings.Contains(m, "after array element"):
			text = "expected separator in list"
		}
	}
	return "JSON parse error, " + text
}

// Check applies to syntactically valid JSON (json.Valid) the rules the
// reference's JSON parser adds: no duplicate key in any object, strings
// are valid UTF-8 and their \u escapes name valid characters (no lone
// surrogates, no U+FFFE/U+FFFF-style noncharacters), and numbers fit a
// double. It returns "" or the reference's error text for the first
// problem in the text; "number out of range" is blockd's own, because the
// reference echoes such numbers as "inf", which is not JSON.
func Check(msg []byte) string {
	c := checker{data: msg}
	c.value(0)
	return c.err
}

type checker struct {
	data []byte
	pos  int
	err  string
}

func (c *checker) fail(format string, a ...any) {
	if c.err == "" {
		c.err = "JSON parse error, " + fmt.Sprintf(format, a...)
	}
}

func (c *checker) space() {
	for c.pos < len(c.data) {
		switch c.data[c.pos] {
		case ' ', '\t', '\r', '\n':
			c.pos++
		default:
			return
		}
	}
}

func (c *checker) value(depth int) {
	c.space()
	if c.err != "" || c.pos >= len(c.data) {
		return
	}
	switch b := c.data[c.pos]; {
	case b == '{':
		c.pos++
		seen := map[string]struct{}{}
		for {
			c.space()
			if c.err != "" || c.pos >= len(c.data) {
				return
			}
			if c.data[c.pos] == '}' {
				c.pos++
				return
			}
			if c.data[c.pos] == ',' {
				c.pos++
				c.space()
			}
			key := c.str()
			if c.err != "" {
				return
			}
			if _, dup := seen[key]; dup {
				c.fail("duplicate key")
				return
			}
			seen[key] = struct{}{}
			c.space()
			c.pos++ // ':'
			c.value(depth + 1)
		}
	case b == '[':
		c.pos++
		for {
			c.space()
			if c.err != "" || c.pos >= len(c.data) {
				return
			}
			switch c.data[c.pos] {
			case ']':
				c.pos++
				return
			case ',':
				c.pos++
			}
			c.value(depth + 1)
		}
	case b == '"':
		c.str()
	case b == '-' || b >= '0' && b <= '9':
		start := c.pos
		for c.pos < len(c.data) && isNumberByte(c.data[c.pos]) {
			c.pos++
		}
		f, err := strconv.ParseFloat(string(c.data[start:c.pos]), 64)
		if err != nil && math.IsInf(f, 0) {
			c.fail("number out of range")
		}
	default: // true, false, null
		for c.pos < len(c.data) && c.data[c.pos] >= 'a' && c.data[c.pos] <= 'z' {
			c.pos++
		}
	}
}

func isNumberByte(b byte) bool {
	return b >= '0' && b <= '9' || b == '-' || b == '+' || b == '.' || b == 'e' || b == 'E'
}

// str checks the string at c.pos and returns its value.
func (c *checker) str() string {
	start := c.pos
	c.pos++ // opening quote
	simple := true
	for c.pos < len(c.data) {
		b := c.data[c.pos]
		switch {
		case b == '"':
			c.pos++
			if simple {
				return string(c.data[start+1 : c.pos-1])
			}
			var s string
			_ = json.Unmarshal(c.data[start:c.pos], &s)
			return s
		case b == '\\':
			simple = false
			if c.data[c.pos+1] != 'u' {
				c.pos += 2
				continue
			}
			r := hex4(c.data[c.pos+2 : c.pos+6])
			esc := string(c.data[c.pos : c.pos+6])
			c.pos += 6
			if r >= 0xd800 && r <= 0xdbff {
				// A high surrogate must be followed by an escaped low one.
				if c.pos+6 <= len(c.data) && c.data[c.pos] == '\\' && c.data[c.pos+1] == 'u' {
					if lo := hex4(c.data[c.pos+2 : c.pos+6]); lo >= 0xdc00 && lo <= 0xdfff {
						pair := string(c.data[c.pos-6 : c.pos+6])
						c.pos += 6
						if !validCodepoint(0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)) {
							c.fail("%s is not a valid Unicode character", pair)
							return ""
						}
						continue
					}
				}
				c.fail("%s is not a valid Unicode character", esc)
				return ""
			}
			if !validCodepoint(r) {
				c.fail("%s is not a valid Unicode character", esc)
				return ""
			}
		case b < utf8.RuneSelf:
			c.pos++
		default:
			simple = false
			r, size := utf8.DecodeRune(c.data[c.pos:])
			if r == utf8.RuneError && size <= 1 || !validCodepoint(r) {
				c.fail("invalid UTF-8 sequence in string")
				return ""
			}
			c.pos += size
		}
	}
	return ""
}

func hex4(b []byte) rune {
	v, _ := strconv.ParseUint(string(b), 16, 32)
	return rune(v)
}

// validCodepoint is the reference's test for a character a string may
// hold: not a surrogate, not above U+10FFFF, not a noncharacter.
func validCodepoint(r rune) bool {
	switch {
	case r > 0x10ffff, r >= 0xd800 && r <= 0xdfff:
		return false
	case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
		return false
	}
	return true
}
