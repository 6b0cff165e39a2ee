package blkverify_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	_ "blockd/drivers/blkverify"
	_ "blockd/drivers/file"
	"blockd/internal/graphtest"
)

// Reads that agree pass, writes reach both images, and a difference
// fails the read with EIO instead of ending the process.
func TestBlkverify(t *testing.T) {
	e := graphtest.New(t)
	dir := t.TempDir()
	raw, test := filepath.Join(dir, "raw.img"), filepath.Join(dir, "test.img")
	for _, p := range []string{raw, test} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := `{"driver": "blkverify", "node-name": "v", "raw": {"driver": "file", "filename": "` + raw +
		`"}, "test": {"driver": "file", "node-name": "t", "filename": "` + test + `"}}`
	e.Must(t, "blockdev-add", args)
	v, tn := e.Node(t, "v"), e.Node(t, "t")
	buf := make([]byte, 4096)
	if err := v.IO().WriteAt([]byte("same"), 100, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.IO().ReadAt(buf, 0); err != nil || string(buf[100:104]) != "same" {
		t.Fatalf("read: %v %q", err, buf[100:104])
	}
	for _, p := range []string{raw, test} {
		if b, _ := os.ReadFile(p); string(b[100:104]) != "same" {
			t.Fatalf("%s not written", p)
		}
	}
	if err := tn.IO().WriteAt([]byte("diff"), 200, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.IO().ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of differing images: %v", err)
	}
	if err := v.IO().ReadAt(buf[:100], 0); err != nil {
		t.Fatalf("read of an agreeing range: %v", err)
	}
}
