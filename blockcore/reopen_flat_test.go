package blockcore

import (
	"encoding/json"
	"slices"
	"testing"

	"blockd/schema"
)

func decodeOpts(t *testing.T, js string) *schema.BlockdevOptions {
	t.Helper()
	var o schema.BlockdevOptions
	if err := schema.Decode(json.RawMessage(js), &o); err != nil {
		t.Fatal(err)
	}
	return &o
}

func TestFlattenOptions(t *testing.T) {
	o := decodeOpts(t, `{"driver": "qcow2", "node-name": "q", "cache": {"direct": true},
		"file": {"driver": "file", "filename": "/x"}, "backing": null, "cache-size": 65536}`)
	f := flattenOptions(o)
	want := map[string]any{
		"driver": "qcow2", "node-name": "q", "cache.direct": true,
		"file.driver": "file", "file.filename": "/x", "backing": nil, "cache-size": json.Number("65536"),
	}
	if len(f.vals) != len(want) || len(f.keys) != len(want) {
		t.Fatalf("keys %v", f.keys)
	}
	for k, v := range want {
		if got, ok := f.get(k); !ok || got != v {
			t.Errorf("%s: got %#v want %#v", k, got, v)
		}
	}
	sub := f.extract("file.")
	if f.has("file.driver") || sub.strOpt("filename", "") != "/x" || sub.strOpt("driver", "") != "file" {
		t.Fatalf("extract: %v / %v", f.keys, sub.keys)
	}
	back := newFlat()
	if err := json.Unmarshal(withoutChildren(f.clone()).unflatten(), &map[string]any{}); err != nil {
		t.Fatal(err)
	}
	back.join(f)
	if !slices.Equal(back.keys, f.keys) {
		t.Fatalf("join order %v vs %v", back.keys, f.keys)
	}
}

// The first offending option QEMU names is the first in QDict order: for
// an inline definition given for a child added by name, "file.driver"
// comes before "file.filename" (as qemu-storage-daemon answers).
func TestFlatOrderIsQDictOrder(t *testing.T) {
	f := newFlat()
	f.set("file.filename", "/x")
	f.set("file.driver", "file")
	if got := f.ordered(); got[0] != "file.driver" {
		t.Fatalf("order %v", got)
	}
}

func TestOptionEquality(t *testing.T) {
	cases := []struct {
		newV, oldV any
		same       bool
	}{
		{"a", "a", true},
		{stringified(true), true, false}, // force-share never compares equal
		{stringified(json.Number("8")), json.Number("8"), false},
		{json.Number("4096"), json.Number("4096"), true},
		{json.Number("4096"), json.Number("8192"), false},
		{true, true, true},
		{nil, nil, true},
		{"x", nil, false},
	}
	for _, c := range cases {
		if got := sameOption(c.newV, c.oldV); got != c.same {
			t.Errorf("sameOption(%#v, %#v) = %v", c.newV, c.oldV, got)
		}
	}
}

func TestQcow2JoinOptions(t *testing.T) {
	old := newFlat()
	old.set("l2-cache-size", json.Number("1"))
	old.set("refcount-cache-size", json.Number("2"))
	opts := newFlat()
	opts.set("cache-size", json.Number("3"))
	qcow2JoinOptions(opts, old)
	if opts.has("l2-cache-size") || opts.has("refcount-cache-size") || !opts.has("cache-size") {
		t.Fatalf("a new total must replace the old split: %v", opts.keys)
	}
	old = newFlat()
	old.set("cache-size", json.Number("3"))
	opts = newFlat()
	opts.set("l2-cache-size", json.Number("1"))
	opts.set("refcount-cache-size", json.Number("2"))
	qcow2JoinOptions(opts, old)
	if opts.has("cache-size") {
		t.Fatalf("a complete new split drops the old total: %v", opts.keys)
	}
}

func TestInheritOptions(t *testing.T) {
	parent := newFlat()
	parent.set("read-only", true)
	parent.set("cache.direct", true)
	file := newFlat()
	inheritOptions(RoleImage, file, parent)
	if !file.boolOpt("read-only", false) || !file.boolOpt("cache.direct", false) || file.strOpt("discard", "") != "unmap" {
		t.Fatalf("file child %v", file.vals)
	}
	parent.set("read-only", false)
	backing := newFlat()
	inheritOptions(RoleBacking, backing, parent)
	if !backing.boolOpt("read-only", false) {
		t.Fatal("a backing child is read-only unless told otherwise")
	}
}
