package blockcore

import (
	"testing"

	"blockd/internal/qdict"
)

// The expected strings are qemu-storage-daemon 7.2's json: filenames for
// the same nodes (query-named-block-nodes).
func TestQdictOrderMatchesQEMU(t *testing.T) {
	file := qdict.Dict{}.Set("driver", "file").Set("filename", "/tmp/t.qcow2")
	cases := []struct {
		d    qdict.Dict
		want string
	}{
		{qdict.Dict{}.Set("offset", 512).Set("driver", "raw").Set("file", qdict.Dict{}.Set("driver", "file").Set("filename", "/tmp/b.qcow2")),
			`{"offset": 512, "driver": "raw", "file": {"driver": "file", "filename": "/tmp/b.qcow2"}}`},
		{qdict.Dict{}.Set("driver", "qcow2").Set("file", file).Set("backing", nil),
			`{"backing": null, "driver": "qcow2", "file": {"driver": "file", "filename": "/tmp/t.qcow2"}}`},
	}
	for _, c := range cases {
		if b := encodeQdict(c.d); string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
		}
	}
}
