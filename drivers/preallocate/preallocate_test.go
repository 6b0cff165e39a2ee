package preallocate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"blockd/drivers/file"
	_ "blockd/drivers/preallocate"
	"blockd/drivers/qcow2"
	"blockd/internal/graphtest"
)

const mib = 1 << 20

// Under a writable qcow2 node the file grows ahead of the data in
// prealloc-size steps, the node reports the data's end, and closing the
// node cuts the file back; under a read-only parent nothing is
// preallocated.
func TestPreallocateUnderQcow2(t *testing.T) {
	e := graphtest.New(t)
	path := filepath.Join(t.TempDir(), "a.qcow2")
	if err := file.Create(file.CreateOptions{Filename: path}); err != nil {
		t.Fatal(err)
	}
	f, err := file.Open(file.Options{Filename: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := qcow2.Create(f, qcow2.CreateOptions{Size: 64 * mib}); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	call := func(name, args string) { t.Helper(); e.Must(t, name, args) }
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	call("blockdev-add", `{"driver": "qcow2", "node-name": "q", "file": {"driver": "preallocate", "node-name": "p",
		"prealloc-align": 1048576, "prealloc-size": 4194304, "file": {"driver": "file", "filename": "`+path+`"}}}`)
	q, p := e.Node(t, "q"), e.Node(t, "p")
	if err := q.IO().WriteAt(bytes.Repeat([]byte{0x5a}, 2*mib), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := q.IO().Flush(); err != nil {
		t.Fatal(err)
	}
	dataEnd, err := p.IO().Size()
	if err != nil {
		t.Fatal(err)
	}
	grown := size()
	// The first write past the end preallocated 4 MiB beyond itself,
	// rounded to 1 MiB; the later ones fitted in.
	if grown <= dataEnd || grown < 4*mib || grown%mib != 0 {
		t.Fatalf("file %d bytes for %d bytes of data: not preallocated by 4 MiB in 1 MiB steps", grown, dataEnd)
	}
	if dataEnd <= before || dataEnd > before+3*mib {
		t.Fatalf("data end %d (file was %d)", dataEnd, before)
	}
	buf := make([]byte, mib)
	if err := q.IO().ReadAt(buf, mib); err != nil || buf[0] != 0x5a || buf[mib-1] != 0x5a {
		t.Fatalf("read back: %v", err)
	}
	call("blockdev-del", `{"node-name": "q"}`)
	if got := size(); got != dataEnd {
		t.Fatalf("after close the file is %d bytes, want the data's end %d", got, dataEnd)
	}

	// A read-only qcow2 parent does not resize: no preallocation.
	call("blockdev-add", `{"driver": "qcow2", "node-name": "q", "read-only": true, "file": {"driver": "preallocate",
		"file": {"driver": "file", "filename": "`+path+`"}}}`)
	if err := (func() error { _, err := os.Stat(path); return err })(); err != nil || size() != dataEnd {
		t.Fatalf("a read-only user changed the file: %d", size())
	}
}
