package schema

import (
	"blockd/internal/ghash"
	"blockd/internal/qdict"
)

// QEMU's QObject input visitor finds unexpected members (check_struct) by
// copying the object's keys, in QDict iteration order, into a GLib hash
// table, removing each member it visits, and reporting the first key left
// in the table's slot order. With several unexpected members, which one
// is named depends on that order, so it is reproduced (internal/ghash).

// firstUnexpected returns the key check_struct reports among keys (in
// JSON order) after the members in used (in visit order) were removed.
func firstUnexpected(keys []string, used []string) string {
	var d qdict.Dict
	for _, k := range keys {
		d = d.Set(k, nil)
	}
	t := ghash.New()
	for _, e := range d.Ordered() {
		t.Insert(e.Key)
	}
	for _, k := range used {
		t.Remove(k)
	}
	if left := t.Keys(); len(left) > 0 {
		return left[0]
	}
	return ""
}
