package schema

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Struct tags. A member is declared as
//
//	Field T `qapi:"member-name[,optional][,features=deprecated|unstable]"`
//
// a flat union's discriminator as `qapi:"driver,discriminator"`, a variant
// as `qapi:",variant=file|host_device"` on a *Struct field, and a base as
// an embedded struct (untagged, or tagged `qapi:",base"`). Untagged
// fields are not part of the wire format.

type tagOpts struct {
	name          string
	optional      bool
	discriminator bool
	base          bool
	variants      []string
	features      []string
}

func parseTag(tag string) (tagOpts, error) {
	parts := strings.Split(tag, ",")
	o := tagOpts{name: parts[0]}
	for _, p := range parts[1:] {
		switch {
		case p == "optional":
			o.optional = true
		case p == "discriminator":
			o.discriminator = true
		case p == "base":
			o.base = true
		case strings.HasPrefix(p, "variant="):
			o.variants = strings.Split(strings.TrimPrefix(p, "variant="), "|")
		case strings.HasPrefix(p, "features="):
			o.features = strings.Split(strings.TrimPrefix(p, "features="), "|")
		default:
			return o, fmt.Errorf("unknown qapi tag option %q", p)
		}
	}
	return o, nil
}

func newMember(name string, index []int) *member {
	key := AppendJSONString(nil, name)
	return &member{name: name, key: append(key, ':'), index: index}
}

func (b *builder) fillObject(ti *typeInfo, t reflect.Type) error {
	ti.kind = kindObject
	var base, own []*member
	for i := range t.NumField() {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("qapi")
		if tag == "-" {
			continue
		}
		o, err := parseTag(tag)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		if f.Anonymous && (!hasTag || o.base) {
			ms, tag, err := b.baseMembers(f, i)
			if err != nil {
				return err
			}
			base = append(base, ms...)
			if tag != nil {
				if ti.tag != nil {
					return fmt.Errorf("two discriminators")
				}
				ti.tag = tag
			}
			continue
		}
		if !hasTag || !f.IsExported() {
			continue
		}
		if o.variants != nil {
			if err := b.addVariant(ti, f, i, o.variants); err != nil {
				return err
			}
			continue
		}
		m, err := b.newFieldMember(f, i, o)
		if err != nil {
			return err
		}
		if o.discriminator {
			if ti.tag != nil {
				return fmt.Errorf("two discriminators")
			}
			ti.tag = m
		}
		own = append(own, m)
	}
	ti.members = append(base, own...)
	return ti.checkObject()
}

// baseMembers returns the members an embedded base contributes, with
// their field index paths rooted at the embedding struct.
func (b *builder) baseMembers(f reflect.StructField, i int) ([]*member, *member, error) {
	if f.Type.Kind() != reflect.Struct {
		return nil, nil, fmt.Errorf("embedded base %s must be a struct value", f.Name)
	}
	bt, err := b.build(f.Type)
	if err != nil {
		return nil, nil, err
	}
	if bt.kind != kindObject || len(bt.variants) > 0 {
		return nil, nil, fmt.Errorf("embedded base %s must be a plain struct", f.Name)
	}
	var tag *member
	ms := make([]*member, len(bt.members))
	for j, m := range bt.members {
		c := *m
		c.index = append([]int{i}, m.index...)
		ms[j] = &c
		if m == bt.tag {
			tag = &c
		}
	}
	return ms, tag, nil
}

func (b *builder) newFieldMember(f reflect.StructField, i int, o tagOpts) (*member, error) {
	if o.name == "" {
		return nil, fmt.Errorf("field %s: empty member name", f.Name)
	}
	m := newMember(o.name, []int{i})
	m.optional, m.features = o.optional, o.features
	ft := f.Type
	if ft.Kind() == reflect.Pointer {
		m.ptr, ft = true, ft.Elem()
	}
	if m.optional && !m.ptr && !nilable(ft) {
		return nil, fmt.Errorf("optional member %q must be a pointer, slice or map", o.name)
	}
	mt, err := b.build(ft)
	if err != nil {
		return nil, err
	}
	m.typ = mt
	if o.discriminator && (mt.kind != kindEnum || m.optional || m.ptr) {
		return nil, fmt.Errorf("discriminator %q must be a required enum value", o.name)
	}
	return m, nil
}

func nilable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Interface:
		return true
	}
	return false
}

func (b *builder) addVariant(ti *typeInfo, f reflect.StructField, i int, cases []string) error {
	ft := f.Type
	if ft.Kind() != reflect.Pointer || ft.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("variant field %s must be a pointer to a struct", f.Name)
	}
	vt, err := b.build(ft.Elem())
	if err != nil {
		return err
	}
	if vt.kind != kindObject {
		return fmt.Errorf("variant field %s must be an object type", f.Name)
	}
	v := &variant{cases: cases, index: []int{i}, typ: vt}
	if ti.variantFor == nil {
		ti.variantFor = map[string]*variant{}
	}
	for _, c := range cases {
		if _, dup := ti.variantFor[c]; dup {
			return fmt.Errorf("variant %q declared twice", c)
		}
		ti.variantFor[c] = v
	}
	ti.variants = append(ti.variants, v)
	return nil
}

// checkObject rejects declarations QAPI would reject: clashing member
// names and variants for values the discriminator does not have.
func (ti *typeInfo) checkObject() error {
	seen := map[string]bool{}
	for _, m := range ti.members {
		if seen[m.name] {
			return fmt.Errorf("member %q declared twice", m.name)
		}
		seen[m.name] = true
	}
	if len(ti.variants) > 0 && ti.tag == nil {
		return fmt.Errorf("variants without a discriminator")
	}
	for c := range ti.variantFor {
		if !slices.Contains(ti.tag.typ.values, c) {
			return fmt.Errorf("variant %q is not a value of %s", c, ti.tag.typ.name)
		}
	}
	for _, v := range ti.variants {
		for _, m := range v.typ.members {
			if seen[m.name] {
				return fmt.Errorf("variant member %q clashes with a base member", m.name)
			}
		}
	}
	return nil
}
