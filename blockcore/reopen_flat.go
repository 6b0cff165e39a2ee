package blockcore

import (
	"blockd/internal/qdict"
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"blockd/schema"
)

// flatOpts is an option dictionary flattened as QEMU's qdict_flatten makes
// it for a reopen: nested objects become "parent.member" keys, leaves keep
// their JSON type (string, bool, json.Number, nil for null). Keys keep
// their insertion order, from which ordered() derives QDict's iteration
// order: the order in which QEMU finds the first offending option.
type flatOpts struct {
	keys []string
	vals map[string]any
}

func newFlat() *flatOpts { return &flatOpts{vals: map[string]any{}} }

// flattenOptions flattens a node's options (nil gives an empty dict).
func flattenOptions(o *schema.BlockdevOptions) *flatOpts {
	f := newFlat()
	if o == nil {
		return f
	}
	b, err := schema.Marshal(o)
	if err != nil {
		return f
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	_ = f.readObject(dec, "")
	return f
}

// readObject reads one JSON object (its '{' not yet consumed) into f.
func (f *flatOpts) readObject(dec *json.Decoder, prefix string) error {
	if _, err := dec.Token(); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := prefix + tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) > 2 && raw[0] == '{' {
			sub := json.NewDecoder(bytes.NewReader(raw))
			sub.UseNumber()
			if err := f.readObject(sub, key+"."); err != nil {
				return err
			}
			continue
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return err
		}
		f.set(key, v)
	}
	_, err := dec.Token()
	return err
}

func (f *flatOpts) has(key string) bool { _, ok := f.vals[key]; return ok }

func (f *flatOpts) get(key string) (any, bool) { v, ok := f.vals[key]; return v, ok }

// set adds or replaces a key; a replaced key keeps its place.
func (f *flatOpts) set(key string, v any) {
	if _, ok := f.vals[key]; !ok {
		f.keys = append(f.keys, key)
	}
	f.vals[key] = v
}

// reinsert puts a key back as the newest entry (qemu_opts_to_qdict after
// qemu_opts_absorb_qdict took it out).
func (f *flatOpts) reinsert(key string, v any) {
	f.del(key)
	f.set(key, v)
}

func (f *flatOpts) setDefault(key string, v any) {
	if !f.has(key) {
		f.set(key, v)
	}
}

// copyDefault is qdict_copy_default: take the parent's value if unset.
func (f *flatOpts) copyDefault(from *flatOpts, key string) {
	if v, ok := from.get(key); ok {
		f.setDefault(key, v)
	}
}

func (f *flatOpts) del(key string) {
	if _, ok := f.vals[key]; !ok {
		return
	}
	delete(f.vals, key)
	f.keys = slices.DeleteFunc(f.keys, func(k string) bool { return k == key })
}

func (f *flatOpts) clone() *flatOpts {
	c := &flatOpts{keys: slices.Clone(f.keys), vals: make(map[string]any, len(f.vals))}
	for k, v := range f.vals {
		c.vals[k] = v
	}
	return c
}

// equal says whether f and o hold the same keys in the same order with
// the same values.
func (f *flatOpts) equal(o *flatOpts) bool {
	if !slices.Equal(f.keys, o.keys) {
		return false
	}
	for k, v := range f.vals {
		w := o.vals[k]
		switch v.(type) {
		case string, bool, json.Number, nil:
			if v != w {
				return false
			}
		default: // lists
			if !reflect.DeepEqual(v, w) {
				return false
			}
		}
	}
	return true
}

// join adds the keys of old that f does not have (qdict_join without
// overwrite).
func (f *flatOpts) join(old *flatOpts) {
	for _, k := range old.keys {
		f.setDefault(k, old.vals[k])
	}
}

// extract removes the keys under prefix (which ends in ".") and returns
// them without it (qdict_extract_subqdict).
func (f *flatOpts) extract(prefix string) *flatOpts {
	sub := newFlat()
	for _, k := range slices.Clone(f.keys) {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			sub.set(rest, f.vals[k])
			f.del(k)
		}
	}
	return sub
}

// dropChild removes a child's reference and its inline options.
func (f *flatOpts) dropChild(name string) {
	f.del(name)
	f.extract(name + ".")
}

// ordered lists the keys in QDict iteration order.
func (f *flatOpts) ordered() []string {
	var d qdict.Dict
	for _, k := range f.keys {
		d = append(d, qdict.Entry{Key: k})
	}
	out := make([]string, 0, len(d))
	for _, e := range d.Ordered() {
		out = append(out, e.Key)
	}
	return out
}

// boolOpt reads a boolean option as QemuOpts would: a JSON bool or the
// strings "on"/"off" that inherited defaults use.
func (f *flatOpts) boolOpt(key string, def bool) bool {
	switch v := f.vals[key].(type) {
	case bool:
		return v
	case string:
		return v == "on" || v == "true"
	}
	return def
}

func (f *flatOpts) strOpt(key, def string) string {
	if v, ok := f.vals[key].(string); ok {
		return v
	}
	return def
}

func (f *flatOpts) intOpt(key string) (int64, bool) {
	switch v := f.vals[key].(type) {
	case json.Number:
		n, err := v.Int64()
		return n, err == nil
	}
	return 0, false
}

// stringified is how QemuOpts gives an option back after absorbing it: as
// a string, which then only equals an old value that was a string too.
func stringified(v any) any {
	switch x := v.(type) {
	case bool:
		if x {
			return "on"
		}
		return "off"
	case json.Number:
		return string(x)
	}
	return v
}

// sameOption is qobject_is_equal for flattened leaves.
func sameOption(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	}
	return false
}

// unflatten rebuilds the nested JSON object (qdict_crumple), for decoding
// the options a reopened node keeps.
func (f *flatOpts) unflatten() json.RawMessage {
	root := map[string]any{}
	for _, k := range f.keys {
		parts := strings.Split(k, ".")
		m := root
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = f.vals[k]
	}
	b, _ := json.Marshal(root)
	return b
}
