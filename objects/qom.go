package objects

import (
	"context"
	"encoding/json"
	"strings"

	"blockd/internal/ghash"
	"blockd/schema"
)

// The QOM composition tree: "/" with the containers "objects" (what
// object-add creates) and "chardevs", and qom-list, qom-get, qom-set,
// qom-list-types and qom-list-properties over it, with the reference's
// orders and texts.

// qomNode is an object in the tree. Children are child<...> properties
// of their parent; order keeps their hash table's slot order.
type qomNode struct {
	name     string
	class    *Class
	inst     any
	parent   *qomNode
	children map[string]*qomNode
	order    *ghash.Table
	uses     int // pins taken with Use
}

func newNode(name, class string) *qomNode {
	return &qomNode{name: name, class: lookupClass(class), children: map[string]*qomNode{}, order: ghash.New()}
}

func (n *qomNode) add(c *qomNode) {
	c.parent = n
	n.children[c.name] = c
	n.order.Insert(c.name)
}

// remove is object_unparent: the child's slot becomes a tombstone and
// the table keeps its size until the next insertion.
func (n *qomNode) remove(name string) {
	delete(n.children, name)
	n.order.IterRemove(name)
}

// path is object_get_canonical_path.
func (n *qomNode) path() string {
	if n.parent == nil {
		return "/"
	}
	var parts []string
	for k := n; k.parent != nil; k = k.parent {
		parts = append([]string{k.name}, parts...)
	}
	return "/" + strings.Join(parts, "/")
}

// resolve is object_resolve_path: an absolute path walks from the root
// (empty components are skipped); any other path is partial and must
// match below exactly one object of the tree.
func (r *Registry) resolve(path string) (n *qomNode, ambiguous bool) {
	parts := strings.Split(path, "/")
	if parts[0] == "" && len(parts) > 1 {
		return walk(r.root, parts[1:]), false
	}
	return resolvePartial(r.root, parts)
}

func walk(n *qomNode, parts []string) *qomNode {
	for _, p := range parts {
		if p == "" {
			continue
		}
		c := n.children[p]
		if c == nil {
			return nil
		}
		n = c
	}
	return n
}

// resolvePartial is object_resolve_partial_path: the object the parts
// lead to from n or from any object below it, if there is one only.
func resolvePartial(n *qomNode, parts []string) (*qomNode, bool) {
	found := walk(n, parts)
	for _, name := range n.order.Keys() {
		f, amb := resolvePartial(n.children[name], parts)
		if amb {
			return nil, true
		}
		if f != nil {
			if found != nil {
				return nil, true
			}
			found = f
		}
	}
	return found, false
}

// listing is what qom-list shows of n: the class's properties, then the
// children in reverse hash order.
func (n *qomNode) listing() []ObjectPropertyInfo {
	out := []ObjectPropertyInfo{}
	for _, p := range n.class.listedProps() {
		out = append(out, ObjectPropertyInfo{Name: p.Name, Type: p.Type})
	}
	keys := n.order.Keys()
	for i := len(keys) - 1; i >= 0; i-- {
		out = append(out, ObjectPropertyInfo{Name: keys[i], Type: "child<" + n.children[keys[i]].class.Name + ">"})
	}
	return out
}

func notFound(path string) error {
	return schema.ClassErrorf("DeviceNotFound", "Device '%s' not found", path)
}

func (r *Registry) qomList(path string) ([]ObjectPropertyInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, amb := r.resolve(path)
	if n == nil {
		if amb {
			return nil, schema.Errorf("Path '%s' is ambiguous", path)
		}
		return nil, notFound(path)
	}
	return n.listing(), nil
}

func (r *Registry) qomGet(path, prop string) (schema.Any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, _ := r.resolve(path)
	if n == nil {
		return nil, notFound(path)
	}
	var v any
	if c := n.children[prop]; c != nil {
		v = c.path()
	} else {
		p := n.class.prop(prop)
		switch {
		case p == nil:
			return nil, schema.Errorf("Property '%s.%s' not found", n.class.Name, prop)
		case p.Name == "type":
			v = n.class.Name
		case p.Get == nil:
			return nil, schema.Errorf("Property '%s.%s' is not readable", n.class.Name, prop)
		default:
			v = p.Get(n.inst)
		}
	}
	if err, ok := v.(error); ok {
		return nil, err
	}
	b, err := schema.Marshal(v)
	if err != nil {
		return nil, err
	}
	return schema.Any(b), nil
}

func (r *Registry) qomSet(path, prop string, value json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, _ := r.resolve(path)
	if n == nil {
		return notFound(path)
	}
	if n.children[prop] != nil {
		// A child property has no setter.
		return schema.Errorf("Property '%s.%s' is not writable", n.class.Name, prop)
	}
	p := n.class.prop(prop)
	if p == nil {
		return schema.Errorf("Property '%s.%s' not found", n.class.Name, prop)
	}
	if p.Set == nil {
		return schema.Errorf("Property '%s.%s' is not writable", n.class.Name, prop)
	}
	return p.Set(n.inst, prop, value)
}

func qomListTypes(implements *string, abstract bool) []ObjectTypeInfo {
	var base *Class
	if implements != nil {
		if base = lookupClass(*implements); base == nil {
			return []ObjectTypeInfo{}
		}
	}
	out := []ObjectTypeInfo{}
	for _, c := range sortedClasses() {
		if c.Abstract && !abstract {
			continue
		}
		if base != nil && !c.is(base.Name) {
			continue
		}
		info := ObjectTypeInfo{Name: c.Name}
		if c.Abstract {
			t := true
			info.Abstract = &t
		}
		if c.Parent != "" {
			p := c.Parent
			info.Parent = &p
		}
		out = append(out, info)
	}
	return out
}

func qomListProperties(typename string) ([]ObjectPropertyInfo, error) {
	c := lookupClass(typename)
	if c == nil {
		return nil, schema.ClassErrorf("DeviceNotFound", "Class '%s' not found", typename)
	}
	if !c.is("object") {
		return nil, schema.Errorf("Parameter 'typename' expects a QOM type")
	}
	out := []ObjectPropertyInfo{}
	for _, p := range c.listedProps() {
		out = append(out, ObjectPropertyInfo{Name: p.Name, Type: p.Type})
	}
	return out, nil
}

func (r *Registry) registerQOM(reg *schema.Registry) {
	schema.Define(reg, "qom-list", func(_ context.Context, a *QomListArgs) ([]ObjectPropertyInfo, error) {
		return r.qomList(a.Path)
	})
	schema.Define(reg, "qom-get", func(_ context.Context, a *QomGetArgs) (schema.Any, error) {
		return r.qomGet(a.Path, a.Property)
	})
	schema.Define(reg, "qom-set", func(_ context.Context, a *QomSetArgs) (schema.Empty, error) {
		return schema.Empty{}, r.qomSet(a.Path, a.Property, a.Value)
	})
	schema.Define(reg, "qom-list-types", func(_ context.Context, a *QomListTypesArgs) ([]ObjectTypeInfo, error) {
		return qomListTypes(a.Implements, a.Abstract != nil && *a.Abstract), nil
	})
	schema.Define(reg, "qom-list-properties", func(_ context.Context, a *QomListPropertiesArgs) ([]ObjectPropertyInfo, error) {
		return qomListProperties(a.Typename)
	})
}

// AddChild puts an object that object-add does not create (a chardev)
// into the tree under container ("chardevs"), with the reference's text
// for a taken name. inst is what the class's property accessors get.
func (r *Registry) AddChild(container, name, class string, inst any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cont := r.root.children[container]
	if _, dup := cont.children[name]; dup {
		return schema.Errorf("attempt to add duplicate property '%s' to object (type 'container')", name)
	}
	n := newNode(name, class)
	n.inst = inst
	cont.add(n)
	return nil
}

// RemoveChild takes an object added with AddChild out of the tree.
func (r *Registry) RemoveChild(container, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.root.children[container].remove(name)
}

// Children lists the names under container in the order qom-list shows
// them (reverse hash order), which is also the order the reference's
// object_child_foreach users list them in when they prepend
// (query-chardev).
func (r *Registry) Children(container string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := r.root.children[container].order.Keys()
	out := make([]string, 0, len(keys))
	for i := len(keys) - 1; i >= 0; i-- {
		out = append(out, keys[i])
	}
	return out
}

// Inst returns the state of the object name under container (nil when
// there is none).
func (r *Registry) Inst(container, name string) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.root.children[container].children[name]; n != nil {
		return n.inst
	}
	return nil
}
