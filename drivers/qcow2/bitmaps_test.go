package qcow2

import (
	"path/filepath"
	"testing"

	"blockd/dirtybitmap"
)

// The engine's bitmap round trip: stored bitmaps load back with their
// bits, flags and granularities; a writable load flags them in use until
// they are stored; a writer that never loads them drops the extension;
// every step leaves a consistent image (Check).
func TestBitmapsStoreLoad(t *testing.T) {
	for _, cs := range []int64{512, 65536, 2 << 20} {
		path := filepath.Join(t.TempDir(), "a.qcow2")
		newImageFile(t, path, CreateOptions{Size: 40 << 20, ClusterSize: cs})
		check := func(img *Image) {
			t.Helper()
			res, err := img.Check(false)
			if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
				t.Fatalf("cluster %d: check %+v, %v", cs, res, err)
			}
		}
		img, fd := openImage(t, path, OpenOptions{})
		if l, err := img.LoadBitmaps(); err != nil || len(l) != 0 {
			t.Fatalf("fresh image: %v %v", l, err)
		}
		a := dirtybitmap.New(40<<20, 512)
		a.Mark(0, 1)
		a.Mark(7<<20, 3<<20)
		a.Mark(40<<20-1, 1)
		b := dirtybitmap.New(40<<20, 1<<20)
		c := dirtybitmap.New(40<<20, 65536)
		c.Mark(0, 40<<20) // all dirty: data clusters of ones
		list := []StoredBitmap{{Name: "a", Granularity: 512, Enabled: true, Bits: a},
			{Name: "b", Granularity: 1 << 20, Bits: b}, {Name: "c", Granularity: 65536, Enabled: true, Bits: c}}
		if err := img.StoreBitmaps(list); err != nil {
			t.Fatal(err)
		}
		check(img)
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		fd.Close()

		img, fd = openImage(t, path, OpenOptions{})
		got, err := img.LoadBitmaps()
		if err != nil || len(got) != 3 {
			t.Fatalf("load: %v, %v", got, err)
		}
		for i, g := range got {
			w := list[i]
			if g.Name != w.Name || g.Granularity != w.Granularity || g.Enabled != w.Enabled || g.InUse || !g.Bits.Equal(w.Bits) {
				t.Fatalf("cluster %d: bitmap %d loaded as %+v", cs, i, g)
			}
		}
		info, _ := img.Bitmaps()
		for _, bi := range info {
			if !bi.InUse {
				t.Fatalf("%s not flagged in use while open read-write", bi.Name)
			}
		}
		check(img)
		// Removing one and storing the others (one changed) again.
		if err := img.RemoveBitmap("b"); err != nil {
			t.Fatal(err)
		}
		a.Clear()
		if err := img.StoreBitmaps([]StoredBitmap{list[0], list[2]}); err != nil {
			t.Fatal(err)
		}
		check(img)
		img.Close()
		fd.Close()

		// A writer that does not load them leaves them invalid.
		img, fd = openImage(t, path, OpenOptions{})
		if err := img.WriteAt(make([]byte, 512), 0, 0); err != nil {
			t.Fatal(err)
		}
		img.Close()
		fd.Close()
		img, fd = openImage(t, path, OpenOptions{ReadOnly: true})
		if l, err := img.LoadBitmaps(); err != nil || len(l) != 0 {
			t.Fatalf("after a writer that ignored them: %d bitmaps, %v", len(l), err)
		}
		img.Close()
		fd.Close()
	}
}

// A crash while they are in use leaves them flagged: the next load
// reports them in use with clean bits, and storing the others keeps
// them as they are.
func TestBitmapsInUseAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.qcow2")
	newImageFile(t, path, CreateOptions{Size: 8 << 20})
	img, fd := openImage(t, path, OpenOptions{})
	bm := dirtybitmap.New(8<<20, 65536)
	bm.Mark(0, 1<<20)
	if err := img.StoreBitmaps([]StoredBitmap{{Name: "x", Granularity: 65536, Enabled: true, Bits: bm}}); err != nil {
		t.Fatal(err)
	}
	img.Close()
	fd.Close()
	img, fd = openImage(t, path, OpenOptions{})
	if _, err := img.LoadBitmaps(); err != nil {
		t.Fatal(err)
	}
	// Crash: the file is dropped without Close.
	fd.Close()
	img, fd = openImage(t, path, OpenOptions{})
	l, err := img.LoadBitmaps()
	if err != nil || len(l) != 1 || !l[0].InUse || l[0].Bits.Count() != 0 {
		t.Fatalf("after the crash: %+v, %v", l, err)
	}
	if err := img.StoreBitmaps(l); err != nil {
		t.Fatal(err)
	}
	img.Close()
	fd.Close()
	img, fd = openImage(t, path, OpenOptions{ReadOnly: true})
	defer fd.Close()
	defer img.Close()
	if l, _ := img.LoadBitmaps(); len(l) != 1 || !l[0].InUse {
		t.Fatalf("an in-use bitmap was stored over: %+v", l)
	}
}
