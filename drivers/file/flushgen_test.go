package file

import (
	"path/filepath"
	"testing"

	"blockd/blockio"
)

// A flush syncs the file only when something changed it since the last
// successful flush: each kind of change (write, FUA write, zeroes,
// discard, truncate, creation) makes the next flush call fdatasync once.
func TestFlushSyncsOnlyAfterChanges(t *testing.T) {
	dir := t.TempDir()
	created, err := CreateOpen(CreateOptions{Filename: filepath.Join(dir, "c"), Size: 1 << 20, Preallocation: "full"})
	if err != nil {
		t.Fatal(err)
	}
	defer created.Close()
	f := mustOpen(t, Options{Filename: newImage(t, dir, 1<<20), DiscardUnmap: true})
	flushes := func(t *testing.T, f *File) uint64 {
		t.Helper()
		before := f.syncs.Load()
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
		return f.syncs.Load() - before
	}
	if n := flushes(t, created); n != 1 {
		t.Fatalf("flush after a preallocated creation: %d fdatasync calls, want 1", n)
	}
	if n := flushes(t, f); n != 0 {
		t.Fatalf("flush of an unchanged file: %d fdatasync calls, want 0", n)
	}
	changes := []struct {
		name string
		do   func() error
	}{
		{"write", func() error { return f.WriteAt(make([]byte, 512), 0, 0) }},
		{"zeroes", func() error { return f.WriteZeroes(4096, 4096, blockio.MayUnmap) }},
		{"discard", func() error { return f.Discard(0, 4096) }},
		{"truncate", func() error { return f.Truncate(2 << 20) }},
	}
	for _, c := range changes {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n := flushes(t, f); n != 1 {
			t.Fatalf("flush after %s: %d fdatasync calls, want 1", c.name, n)
		}
		if n := flushes(t, f); n != 0 {
			t.Fatalf("second flush after %s: %d fdatasync calls, want 0", c.name, n)
		}
	}
	// A FUA write syncs by itself; the flush after it has nothing left.
	before := f.syncs.Load()
	if err := f.WriteAt(make([]byte, 512), 0, blockio.FUA); err != nil {
		t.Fatal(err)
	}
	if n := f.syncs.Load() - before; n != 1 {
		t.Fatalf("FUA write: %d fdatasync calls, want 1", n)
	}
	if n := flushes(t, f); n != 0 {
		t.Fatalf("flush after a FUA write: %d fdatasync calls, want 0", n)
	}
}
