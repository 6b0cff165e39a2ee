package rbd

import (
	"encoding/json"
	"testing"
)

// rbd: filenames as qemu_rbd_parse_filename splits them, escapes
// included, and the refusals.
func TestParseFilename(t *testing.T) {
	for _, tc := range []struct{ name, want, err string }{
		{"rbd:rbd/img", `{"pool":"rbd","namespace":"","image":"img"}`, ""},
		{"rbd:p/ns/img@snap:conf=/etc/c.conf:id=admin", `{"pool":"p","namespace":"ns","image":"img","conf":"/etc/c.conf","snapshot":"snap","user":"admin"}`, ""},
		{`rbd:p\/x/im\:g:conf=/a\:b`, `{"pool":"p/x","namespace":"","image":"im:g","conf":"/a:b"}`, ""},
		{"rbd:img", "", "Pool name is required"},
		{"rbd:p/img:conf", "", "conf option conf has no value"},
		{"rbd:p/img:rbd_cache=false", "", "blockd does not support Ceph options in rbd: filenames ('rbd_cache')"},
	} {
		o, err := ParseFilename(tc.name)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := json.Marshal(o.Rbd)
		var a, b map[string]any
		_ = json.Unmarshal(got, &a)
		_ = json.Unmarshal([]byte(tc.want), &b)
		ga, _ := json.Marshal(clean(a))
		gb, _ := json.Marshal(b)
		if string(ga) != string(gb) {
			t.Errorf("%s: %s, want %s", tc.name, ga, gb)
		}
	}
}

// clean keeps the members that are set, under their QAPI names.
func clean(m map[string]any) map[string]any {
	names := map[string]string{"Pool": "pool", "Namespace": "namespace", "Image": "image", "Conf": "conf", "Snapshot": "snapshot", "User": "user"}
	out := map[string]any{}
	for k, v := range m {
		if n, ok := names[k]; ok && v != nil {
			out[n] = v
		}
	}
	return out
}
