package rbd

import (
	"strings"

	"blockd/schema"
)

// nextTok is qemu_rbd_next_tok: the text up to the first delim that a
// backslash does not escape, and the rest after it (ok false: no delim).
func nextTok(s string, delim byte) (tok, rest string, ok bool) {
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == delim:
			return s[:i], s[i+1:], true
		case s[i] == '\\' && i+1 < len(s):
			i++
		}
	}
	return s, "", false
}

// unescape is qemu_rbd_unescape: a backslash keeps the next character.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseFilename is qemu_rbd_parse_filename: the options of
// "rbd:pool/[namespace/]image[@snapshot][:conf=F][:id=U]". Other
// key=value pairs set Ceph options in QEMU, which blockd's nodes do not
// carry: they are refused.
func ParseFilename(name string) (*schema.BlockdevOptions, error) {
	rest, ok := strings.CutPrefix(name, "rbd:")
	if !ok {
		return nil, schema.Errorf("File name must start with 'rbd:'")
	}
	o := &schema.BlockdevOptionsRbd{}
	pool, rest, ok := nextTok(rest, '/')
	if !ok {
		return nil, schema.Errorf("Pool name is required")
	}
	o.Pool = unescape(pool)
	var image string
	var more bool
	if strings.Contains(rest, "@") {
		image, rest, _ = nextTok(rest, '@')
		var snap string
		snap, rest, more = nextTok(rest, ':')
		snap = unescape(snap)
		o.Snapshot = &snap
	} else {
		image, rest, more = nextTok(rest, ':')
	}
	ns := ""
	if strings.Contains(image, "/") {
		var n string
		n, image, _ = nextTok(image, '/')
		ns = unescape(n)
	}
	o.Namespace = &ns
	o.Image = unescape(image)
	for more {
		var key, val string
		var hasVal bool
		key, rest, hasVal = nextTok(rest, '=')
		key = unescape(key)
		if !hasVal {
			return nil, schema.Errorf("conf option %s has no value", key)
		}
		val, rest, more = nextTok(rest, ':')
		val = unescape(val)
		switch key {
		case "conf":
			o.Conf = &val
		case "id":
			o.User = &val
		default:
			return nil, schema.Errorf("blockd does not support Ceph options in rbd: filenames ('%s')", key)
		}
	}
	return &schema.BlockdevOptions{Driver: "rbd", Rbd: o}, nil
}
