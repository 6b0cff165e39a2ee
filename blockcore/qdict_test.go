package blockcore

import "testing"

// The expected strings are qemu-storage-daemon 7.2's json: filenames for
// the same nodes (query-named-block-nodes).
func TestQdictOrderMatchesQEMU(t *testing.T) {
	file := qdict{}.set("driver", "file").set("filename", "/tmp/t.qcow2")
	cases := []struct {
		d    qdict
		want string
	}{
		{qdict{}.set("offset", 512).set("driver", "raw").set("file", qdict{}.set("driver", "file").set("filename", "/tmp/b.qcow2")),
			`{"offset": 512, "driver": "raw", "file": {"driver": "file", "filename": "/tmp/b.qcow2"}}`},
		{qdict{}.set("driver", "qcow2").set("file", file).set("backing", nil),
			`{"backing": null, "driver": "qcow2", "file": {"driver": "file", "filename": "/tmp/t.qcow2"}}`},
	}
	for _, c := range cases {
		if b := c.d.encode(); string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
		}
	}
}
