package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockd/blockio"
)

// insertExtension adds an unknown header extension right after the fixed
// v3 header of an image in b (shifting the rest of the extension area).
func insertExtension(t *testing.T, b []byte, magic uint32, data []byte) {
	t.Helper()
	hl := int(binary.BigEndian.Uint32(b[100:]))
	ext := make([]byte, 8+(len(data)+7)&^7)
	binary.BigEndian.PutUint32(ext, magic)
	binary.BigEndian.PutUint32(ext[4:], uint32(len(data)))
	copy(ext[8:], data)
	rest := append([]byte(nil), b[hl:65536-len(ext)]...)
	copy(b[hl:], ext)
	copy(b[hl+len(ext):], rest)
}

func TestSetBackingFilePreservesExtensions(t *testing.T) {
	b := sampleImage(t, CreateOptions{})
	unknown := []byte("opaque extension payload!")
	insertExtension(t, b, 0x12345678, unknown)
	dir := t.TempDir()
	path := filepath.Join(dir, "img.qcow2")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	img, fd := openImage(t, path, OpenOptions{})
	if err := img.SetBackingFile("base image.raw", "raw"); err != nil {
		t.Fatal(err)
	}
	if n, f := img.BackingFile(); n != "base image.raw" || f != "raw" {
		t.Fatalf("BackingFile() = %q %q", n, f)
	}
	if err := img.SetBackingFile(strings.Repeat("x", 1024), "raw"); err == nil {
		t.Fatal("a 1024-byte backing name was accepted")
	}
	img.Close()
	fd.Close()

	// The unknown extension survives byte for byte, and QEMU agrees with
	// the new header.
	raw, _ := os.ReadFile(path)
	h, err := parseFixedHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := parseHeaderCluster(h, raw[:65536]); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range h.exts {
		if e.magic == 0x12345678 {
			found = bytes.Equal(e.data, unknown)
		}
	}
	if !found || h.backingFile != "base image.raw" || h.backingFormat != "raw" {
		t.Fatalf("after rewrite: exts %v backing %q/%q", h.exts, h.backingFile, h.backingFormat)
	}
	requireQemu(t)
	info := qemu(t, "qemu-img", "info", "-U", path)
	if !strings.Contains(info, "backing file: base image.raw") || !strings.Contains(info, "backing file format: raw") {
		t.Fatalf("qemu-img info:\n%s", info)
	}
	img, fd = openImage(t, path, OpenOptions{})
	if err := img.SetBackingFile("", "qcow2"); err != nil {
		t.Fatal(err)
	}
	img.Close()
	fd.Close()
	assertClean(t, path)
	if info := qemu(t, "qemu-img", "info", path); strings.Contains(info, "backing file") {
		t.Fatalf("backing file not removed:\n%s", info)
	}
}

func TestTruncateGrow(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0x5a}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, co := range []CreateOptions{{}, {ClusterSize: 512}, {Compat: "0.10"}, {ExtendedL2: true}} {
		path := filepath.Join(dir, "grow.qcow2")
		co.Size, co.BackingFile, co.BackingFormat = 3<<20+512, base, "raw"
		newImageFile(t, path, co)
		img, done := openChainRW(t, path)
		if err := img.WriteAt(pattern(4608, 1), 3<<20-4096, 0); err != nil {
			t.Fatal(err)
		}
		if err := img.Truncate(1 << 30); err != nil {
			t.Fatal(err)
		}
		if err := img.Truncate(5000); err == nil {
			t.Fatal("unaligned size accepted")
		}
		// The new area reads as zeroes, not as the longer backing file.
		buf := make([]byte, 6<<20)
		if err := img.ReadAt(buf, 3<<20-4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:4608], pattern(4608, 1)) ||
			!bytes.Equal(buf[4608:], make([]byte, len(buf)-4608)) {
			t.Fatalf("content after growing (%+v)", co)
		}
		if err := img.WriteAt(pattern(4096, 2), 1<<30-4096, 0); err != nil {
			t.Fatal(err)
		}
		done()
		assertClean(t, path)
		if s := qemu(t, "qemu-img", "info", path); !strings.Contains(s, "virtual size: 1 GiB") {
			t.Fatalf("qemu-img info:\n%s", s)
		}
	}
}

func TestLazyRefcountsDirtyBit(t *testing.T) {
	dev := &memDev{}
	if err := Create(dev, CreateOptions{Size: 4 << 20, LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Info().Dirty {
		t.Fatal("dirty before any write")
	}
	if err := img.WriteAt(pattern(4096, 1), 0, 0); err != nil {
		t.Fatal(err)
	}
	if !img.Info().Dirty || binary.BigEndian.Uint64(dev.bytes()[72:])&incompatDirty == 0 {
		t.Fatal("dirty bit not set on disk by the first allocation")
	}
	// A crash now: another open repairs and clears it.
	crashed := &memDev{b: dev.bytes()}
	img2, err := Open(crashed, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img2.Info().Dirty {
		t.Fatal("dirty after repair")
	}
	if res, err := img2.Check(false); err != nil || res.Corruptions+res.Leaks != 0 {
		t.Fatalf("after repair: %+v %v", res, err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(dev.bytes()[72:])&incompatDirty != 0 {
		t.Fatal("Close left the dirty bit set")
	}
	// Lazy refcounts can be switched off at open; v2 refuses them.
	off := false
	img, err = Open(dev, OpenOptions{LazyRefcounts: &off})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(pattern(4096, 1), 1<<20, 0)
	if img.Info().Dirty {
		t.Fatal("dirty with lazy refcounts off")
	}
	img.Close()
	v2 := &memDev{}
	Create(v2, CreateOptions{Size: 1 << 20, Compat: "0.10"})
	on := true
	if _, err := Open(v2, OpenOptions{LazyRefcounts: &on}); err == nil {
		t.Fatal("lazy refcounts accepted on a v2 image")
	}
}

func TestInfoAndBlockStatus(t *testing.T) {
	dev := &memDev{}
	if err := Create(dev, CreateOptions{Size: 8 << 20, RefcountBits: 32, BackingFile: "b.img", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := img.Info()
	if in.Version != 3 || in.ClusterSize != 65536 || in.VirtualSize != 8<<20 || in.RefcountBits != 32 ||
		in.BackingFile != "b.img" || in.BackingFormat != "qcow2" || in.CompressionType != "zlib" || in.Dirty || in.Corrupt {
		t.Fatalf("Info: %+v", in)
	}
	img.WriteAt(pattern(3*65536, 1), 65536, 0)
	img.WriteZeroes(4*65536, 2*65536, 0)
	for _, c := range []struct {
		off, len, wantLen int64
		flags             blockio.StatusFlags
	}{
		{0, 8 << 20, 65536, 0},
		{65536, 8 << 20, 3 * 65536, blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid},
		{65536 + 100, 1000, 1000, blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid},
		{4 * 65536, 8 << 20, 2 * 65536, blockio.StatusZero | blockio.StatusAllocated},
		{6 * 65536, 8 << 20, 8<<20 - 6*65536, 0},
	} {
		st, err := img.BlockStatus(c.off, c.len)
		if err != nil {
			t.Fatal(err)
		}
		if st.Flags != c.flags || st.Length != c.wantLen {
			t.Fatalf("BlockStatus(%d, %d) = %+v, want flags %v length %d", c.off, c.len, st, c.flags, c.wantLen)
		}
		if st.Flags&blockio.StatusOffsetValid != 0 && st.HostOffset%65536 != c.off%65536 {
			t.Fatalf("host offset %d", st.HostOffset)
		}
	}
	if _, err := img.BlockStatus(8<<20, 1); !errors.Is(err, blockio.ErrOutOfRange) {
		t.Fatalf("past the end: %v", err)
	}
	img.Close()
	if err := img.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("read after Close")
	}
}

// Open reads the first page of the header cluster, and the whole cluster
// when what the header needs may lie beyond that page (a long extension
// pushing the backing file name out): either way it sees what a parse of
// the whole cluster sees.
func TestOpenHeaderBeyondFirstPage(t *testing.T) {
	for _, extLen := range []int{10, 5000} {
		b := sampleImage(t, CreateOptions{BackingFile: "base.qcow2", BackingFormat: "qcow2"})
		payload := bytes.Repeat([]byte{7}, extLen)
		insertExtension(t, b, 0x12345678, payload)
		// insertExtension shifted the backing file name with the rest.
		boff := binary.BigEndian.Uint64(b[8:]) + uint64(8+(extLen+7)&^7)
		binary.BigEndian.PutUint64(b[8:], boff)
		path := filepath.Join(t.TempDir(), "img.qcow2")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		img, fd := openImage(t, path, OpenOptions{ReadOnly: true})
		if n, f := img.BackingFile(); n != "base.qcow2" || f != "qcow2" {
			t.Errorf("extension of %d bytes: BackingFile() = %q %q", extLen, n, f)
		}
		want, err := parseFixedHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := parseHeaderCluster(want, b[:65536]); err != nil {
			t.Fatal(err)
		}
		if fits := want.fitsIn(b[:headerPrefix]); fits != (extLen < headerPrefix) {
			t.Errorf("extension of %d bytes: fitsIn = %v", extLen, fits)
		}
		if len(img.hdr.exts) != len(want.exts) || !bytes.Equal(img.hdr.exts[0].data, payload) {
			t.Errorf("extension of %d bytes: extensions %d, want %d", extLen, len(img.hdr.exts), len(want.exts))
		}
		img.Close()
		fd.Close()
	}
}
