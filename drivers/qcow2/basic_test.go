package qcow2

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"blockd/blockio"
)

func newImageFile(t testing.TB, path string, o CreateOptions) {
	t.Helper()
	fd, err := createFileDev(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := Create(fd, o); err != nil {
		t.Fatalf("Create: %v", err)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i>>9)
	}
	return b
}

func TestCreateWriteRead(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []CreateOptions{
		{Size: 24 << 20},
		{Size: 24 << 20, ClusterSize: 512},
		{Size: 24 << 20, ClusterSize: 4096, RefcountBits: 1},
		{Size: 24 << 20, ClusterSize: 2 << 20, RefcountBits: 64},
		{Size: 24 << 20, Compat: "0.10"},
		{Size: 24 << 20, ExtendedL2: true, ClusterSize: 32768},
		{Size: 24 << 20, LazyRefcounts: true},
	} {
		name := fmt.Sprintf("cs%d_rb%d_%s_ext%v_lazy%v", tc.ClusterSize, tc.RefcountBits, tc.Compat, tc.ExtendedL2, tc.LazyRefcounts)
		t.Run(name, func(t *testing.T) {
			t.Parallel() // own image
			path := filepath.Join(dir, name+".qcow2")
			newImageFile(t, path, tc)
			img, fd := openImage(t, path, OpenOptions{})
			writes := []struct {
				off int64
				n   int
			}{{0, 4096}, {100000, 70000}, {5 << 20, 1 << 20}, {23 << 20, 1 << 20}, {1000, 10}, {13 << 20, 3 << 20}}
			for i, w := range writes {
				if err := img.WriteAt(pattern(w.n, byte(i+1)), w.off, 0); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			if err := img.WriteZeroes(14<<20, 1<<20, blockio.MayUnmap); err != nil {
				t.Fatal(err)
			}
			if err := img.Discard(16<<20-65536, 2<<20); err != nil {
				t.Fatal(err)
			}
			want := readAll(t, img)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			fd.Close()
			requireQemu(t)
			assertClean(t, path)
			if got := toRaw(t, path); !bytes.Equal(got, want) {
				t.Fatalf("qemu-img convert differs from engine reads: %s", firstDiff(got, want))
			}
			img, fd = openImage(t, path, OpenOptions{ReadOnly: true})
			defer fd.Close()
			defer img.Close()
			if got := readAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("reopened content differs: %s", firstDiff(got, want))
			}
		})
	}
}

// TestRefcountTableGrowth fills an image whose refcount table covers only
// 2 MiB (512-byte clusters, 64-bit refcounts), so the table is replaced
// several times and many refcount blocks are created.
func TestRefcountTableGrowth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grow.qcow2")
	newImageFile(t, path, CreateOptions{Size: 16 << 20, ClusterSize: 512, RefcountBits: 64})
	img, fd := openImage(t, path, OpenOptions{})
	want := make([]byte, 16<<20)
	for off := int64(0); off < 16<<20; off += 1 << 20 {
		p := pattern(1<<20, byte(off>>20))
		copy(want[off:], p)
		if err := img.WriteAt(p, off, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, img); !bytes.Equal(got, want) {
		t.Fatal(firstDiff(got, want))
	}
	if n := img.Info(); n.VirtualSize != 16<<20 {
		t.Fatal(n)
	}
	img.mu.Lock()
	clusters := img.hdr.refcountTableClusters
	img.mu.Unlock()
	if clusters < 2 {
		t.Fatalf("refcount table still %d cluster(s)", clusters)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	requireQemu(t)
	assertClean(t, path)
}
