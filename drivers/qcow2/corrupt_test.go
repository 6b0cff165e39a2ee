package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"blockd/blockio"
)

// Damaged images must give clear errors: never a panic, never a huge
// allocation.

// sampleImage returns a small valid image with some data.
func sampleImage(t testing.TB, o CreateOptions) []byte {
	t.Helper()
	dev := &memDev{}
	if o.Size == 0 {
		o.Size = 4 << 20
	}
	if err := Create(dev, o); err != nil {
		t.Fatal(err)
	}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.WriteAt(pattern(100000, 3), 5000, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteAt(pattern(65536, 4), 3<<20, 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return dev.bytes()
}

func be32(b []byte, off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }
func be64(b []byte, off int, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }

func TestDamagedHeaders(t *testing.T) {
	good := sampleImage(t, CreateOptions{})
	fsz := uint64(len(good))
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		want   string
		rw     bool
	}{
		{"truncated header", func(b []byte) []byte { return b[:50] }, "Could not read qcow2 header", false},
		{"empty file", func(b []byte) []byte { return b[:0] }, "not in qcow2 format", false},
		{"bad magic", func(b []byte) []byte { be32(b, 0, 0x12345678); return b }, "Image is not in qcow2 format", false},
		{"version 4", func(b []byte) []byte { be32(b, 4, 4); return b }, "Unsupported qcow2 version 4", false},
		{"version 1", func(b []byte) []byte { be32(b, 4, 1); return b }, "Unsupported qcow2 version 1", false},
		{"cluster_bits 30", func(b []byte) []byte { be32(b, 20, 30); return b }, "Unsupported cluster size: 2^30", false},
		{"cluster_bits 8", func(b []byte) []byte { be32(b, 20, 8); return b }, "Unsupported cluster size: 2^8", false},
		{"header too short", func(b []byte) []byte { be32(b, 100, 96); return b }, "qcow2 header too short", false},
		{"header beyond cluster", func(b []byte) []byte { be32(b, 100, 1<<20); return b }, "qcow2 header exceeds cluster size", false},
		{"L1 past end of file", func(b []byte) []byte { be64(b, 40, (fsz+1<<20)&^0xffff); return b }, "Active L1 table lies beyond the end of the file", false},
		{"L1 unaligned", func(b []byte) []byte { be64(b, 40, 3*65536+512); return b }, "Active L1 table offset invalid", false},
		{"L1 at offset 0", func(b []byte) []byte { be64(b, 40, 0); return b }, "Active L1 table offset invalid", false},
		{"huge L1 size", func(b []byte) []byte { be32(b, 36, 0x7fffffff); return b }, "Active L1 table too large", false},
		{"L1 too small", func(b []byte) []byte { be64(b, 24, 1<<40); return b }, "L1 table is too small", false},
		{"absurd size", func(b []byte) []byte { be64(b, 24, 1<<63-1); return b }, "Image is too big", false},
		{"refcount table offset 0", func(b []byte) []byte { be64(b, 48, 0); return b }, "Reference count table offset invalid", false},
		{"refcount table unaligned", func(b []byte) []byte { be64(b, 48, 65536+8); return b }, "Reference count table offset invalid", false},
		{"no refcount table", func(b []byte) []byte { be32(b, 56, 0); return b }, "Image does not contain a reference count table", false},
		{"huge refcount table", func(b []byte) []byte { be32(b, 56, 1<<30); return b }, "Reference count table too large", false},
		{"refcount table past EOF", func(b []byte) []byte { be64(b, 48, 1<<40); return b }, "Reference count table lies beyond the end of the file", false},
		{"refcount order 7", func(b []byte) []byte { be32(b, 96, 7); return b }, "Reference count entry width too large", false},
		{"snapshot table huge", func(b []byte) []byte { be32(b, 60, 1<<20); return b }, "Snapshot table too large", false},
		{"snapshot table bad", func(b []byte) []byte { be32(b, 60, 3); be64(b, 64, 1<<30); return b }, "Failed to read snapshot table", false},
		{"unknown incompatible bit", func(b []byte) []byte { be64(b, 72, 1<<40); return b }, "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000", false},
		{"named incompatible bit", renameFeature, "Unsupported qcow2 feature(s): shiny new feature", false},
		{"encrypted", func(b []byte) []byte { be32(b, 32, 2); return b }, "encrypted images are not supported", false},
		{"external data file", func(b []byte) []byte { be64(b, 72, incompatDataFile); return b }, "external data files are not supported", false},
		{"corrupt bit rw", func(b []byte) []byte { be64(b, 72, incompatCorrupt); return b }, "Image is corrupt; cannot be opened read/write", true},
		{"compression bit without type", func(b []byte) []byte { be64(b, 72, incompatCompression); return b }, "Compression type incompatible feature bit must not be set", false},
		{"zstd without compression bit", func(b []byte) []byte { b[104] = 1; return b }, "Compression type incompatible feature bit must be set", false},
		{"unknown compression type", func(b []byte) []byte { b[104] = 9; return b }, "unknown compression type: 9", false},
		{"backing offset beyond cluster", func(b []byte) []byte { be64(b, 8, 1<<20); return b }, "Invalid backing file offset", false},
		{"backing name too long", func(b []byte) []byte { be64(b, 8, 4096); be32(b, 16, 5000); return b }, "Backing file name too long", false},
		{"extension too large", func(b []byte) []byte { be32(b, 112+4, 0xffffff); return b }, "Header extension too large", false},
		{"extended L2 with small clusters", func(b []byte) []byte { be64(b, 72, incompatExtL2); be32(b, 20, 12); return b }, "Unsupported subcluster size: 128", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(append([]byte(nil), good...))
			_, err := Open(&memDev{b: b}, OpenOptions{ReadOnly: !tc.rw})
			if err == nil {
				t.Fatalf("Open succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// renameFeature turns the feature table's "extended L2 entries" entry into
// an unknown feature bit 20 named "shiny new feature" and sets that bit.
func renameFeature(b []byte) []byte {
	exts, _ := parseExtensions(b[:65536], 112, 65536)
	for _, e := range exts {
		if e.magic != extFeatureTable {
			continue
		}
		for p := e.data; len(p) >= 48; p = p[48:] {
			if p[0] == 0 && p[1] == 4 {
				p[1] = 20
				copy(p[2:48], append([]byte("shiny new feature"), make([]byte, 46)...))
			}
		}
	}
	be64(b, 72, 1<<20)
	return b
}

// l2EntryOffset finds the file offset of the L2 entry for guest offset
// off in an image with 64 KiB clusters.
func l2EntryOffset(t *testing.T, b []byte, off int64) int64 {
	l1off := int64(binary.BigEndian.Uint64(b[40:]))
	l2 := int64(binary.BigEndian.Uint64(b[l1off:]) & l1eOffsetMask)
	if l2 == 0 {
		t.Fatal("no L2 table")
	}
	return l2 + (off>>16)*8
}

func TestOverlapDetection(t *testing.T) {
	b := sampleImage(t, CreateOptions{})
	l1off := binary.BigEndian.Uint64(b[40:])
	// Point the data cluster at guest 3 MiB at the L1 table.
	pos := l2EntryOffset(t, b, 3<<20)
	be64(b, int(pos), l1off|oflagCopied)
	dev := &memDev{b: b}
	var events []string
	img, err := Open(dev, OpenOptions{OnCorrupt: func(msg string, off, size int64, fatal bool) {
		events = append(events, msg)
		if !fatal || off != int64(l1off) {
			t.Errorf("event %q offset %d fatal %v", msg, off, fatal)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = img.WriteAt(make([]byte, 4096), 3<<20, 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write over L1: %v", err)
	}
	if len(events) != 1 || events[0] != "Preventing invalid write on metadata (overlaps with active L1 table)" {
		t.Fatalf("events %q", events)
	}
	if err := img.WriteAt(make([]byte, 512), 0, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("further write: %v", err)
	}
	if !bytes.Equal(dev.bytes()[l1off:l1off+8], b[l1off:l1off+8]) {
		t.Fatal("L1 table was overwritten")
	}
	if !img.Info().Corrupt {
		t.Fatal("image not marked corrupt")
	}
	img.Close()
	if _, err := Open(dev, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "Image is corrupt") {
		t.Fatalf("reopen rw: %v", err)
	}
	// Repair: the double reference is a refcount corruption; afterwards
	// the image opens read-write and the cluster is copied on write.
	img, err = Open(dev, OpenOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := img.Check(true)
	if err != nil || res.CorruptionsFixed == 0 || res.Corruptions != 0 {
		t.Fatalf("Check(true): %+v %v", res, err)
	}
	img.Close()
	img, err = Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.WriteAt(pattern(4096, 9), 3<<20, 0); err != nil {
		t.Fatalf("write after repair: %v", err)
	}
	if res, err := img.Check(false); err != nil || res.Corruptions+res.Leaks != 0 {
		t.Fatalf("after repair: %+v %v", res, err)
	}
	img.Close()
}

func TestUnalignedEntries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, b []byte)
		want   string
	}{
		{"L2 table unaligned", func(t *testing.T, b []byte) {
			l1off := binary.BigEndian.Uint64(b[40:])
			e := binary.BigEndian.Uint64(b[l1off:])
			be64(b, int(l1off), e+512)
		}, "L2 table offset"},
		{"data cluster unaligned", func(t *testing.T, b []byte) {
			pos := l2EntryOffset(t, b, 3<<20)
			e := binary.BigEndian.Uint64(b[pos:])
			be64(b, int(pos), e+1024)
		}, "Cluster allocation offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := sampleImage(t, CreateOptions{})
			tc.mutate(t, b)
			// Read-only: an error for the affected read, the image stays
			// usable and is not modified.
			fired := 0
			img, err := Open(&memDev{b: b, ro: true}, OpenOptions{ReadOnly: true,
				OnCorrupt: func(string, int64, int64, bool) { fired++ }})
			if err != nil {
				t.Fatal(err)
			}
			err = img.ReadAt(make([]byte, 4096), 3<<20)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("read: %v", err)
			}
			if fired != 1 {
				t.Fatalf("OnCorrupt fired %d times", fired)
			}
			if _, err := img.BlockStatus(0, 4096); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatal(err)
			}
			// Read-write: fatal, the corrupt bit is set.
			dev := &memDev{b: append([]byte(nil), b...)}
			img, err = Open(dev, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := img.ReadAt(make([]byte, 4096), 3<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: %v", err)
			}
			if err := img.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("access after fatal corruption: %v", err)
			}
			if binary.BigEndian.Uint64(dev.bytes()[72:])&incompatCorrupt == 0 {
				t.Fatal("corrupt bit not set on disk")
			}
		})
	}
}

// FuzzOpen feeds arbitrary bytes as an image: header and table parsing,
// a few reads, block status, a write and a check must not panic.
func FuzzOpen(f *testing.F) {
	for _, o := range []CreateOptions{{Size: 1 << 20}, {Size: 1 << 20, ClusterSize: 512},
		{Size: 1 << 20, ExtendedL2: true, ClusterSize: 16384}, {Size: 1 << 20, Compat: "0.10", ClusterSize: 4096}} {
		b := sampleImageFuzz(f, o)
		f.Add(b)
		c := append([]byte(nil), b...)
		be32(c, 36, 0x7fffffff)
		f.Add(c)
	}
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4<<20 {
			return
		}
		dev := &memDev{b: append([]byte(nil), data...), limit: 64 << 20}
		img, err := Open(dev, OpenOptions{L2CacheSize: 1 << 20, RefcountCacheSize: 1 << 20})
		if err != nil {
			return
		}
		size, _ := img.Size()
		buf := make([]byte, 8192)
		for _, off := range []int64{0, size / 2, size - 8192} {
			if off >= 0 && off+8192 <= size {
				_ = img.ReadAt(buf, off)
				_, _ = img.BlockStatus(off, 8192)
			}
		}
		if size >= 4096 && len(data) < 1<<20 {
			_ = img.WriteAt(buf[:4096], size/3&^511, 0)
			_ = img.WriteZeroes(0, min(size, 1<<20), blockio.MayUnmap)
			_, _ = img.Check(false)
		}
		_ = img.Close()
	})
}

func sampleImageFuzz(f *testing.F, o CreateOptions) []byte {
	dev := &memDev{}
	if err := Create(dev, o); err != nil {
		f.Fatal(err)
	}
	img, err := Open(dev, OpenOptions{})
	if err != nil {
		f.Fatal(err)
	}
	_ = img.WriteAt(pattern(20000, 1), 1000, 0)
	_ = img.Close()
	return dev.bytes()
}
