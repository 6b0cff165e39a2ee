package qcow2

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"blockd/blockio"
)

// The engine's writes must leave images that qemu-img check finds clean
// and that compare equal to the same operations done by qemu-io.

type ioOp struct {
	kind    string // write, zero, zerou (may unmap), discard
	off, n  int64
	pattern byte
}

func (o ioOp) qemuCmd() string {
	switch o.kind {
	case "write":
		return fmt.Sprintf("write -P %d %d %d", o.pattern, o.off, o.n)
	case "zero":
		return fmt.Sprintf("write -z %d %d", o.off, o.n)
	case "zerou":
		return fmt.Sprintf("write -z -u %d %d", o.off, o.n)
	default:
		return fmt.Sprintf("discard %d %d", o.off, o.n)
	}
}

func (o ioOp) apply(t testing.TB, img *Image) {
	t.Helper()
	var err error
	switch o.kind {
	case "write":
		buf := make([]byte, o.n)
		for i := range buf {
			buf[i] = o.pattern
		}
		err = img.WriteAt(buf, o.off, 0)
	case "zero":
		err = img.WriteZeroes(o.off, o.n, 0)
	case "zerou":
		err = img.WriteZeroes(o.off, o.n, blockio.MayUnmap)
	default:
		err = img.Discard(o.off, o.n)
	}
	if err != nil {
		t.Fatalf("%s %d+%d: %v", o.kind, o.off, o.n, err)
	}
}

var mixedOps = []ioOp{
	{"write", 0, 1 << 20, 1},
	{"write", 3 << 20, 65536, 2},
	{"write", 3<<20 + 1000, 3000, 3},
	{"zero", 1 << 20, 512 << 10, 0},
	{"zero", 200 << 10, 10 << 10, 0},
	{"zerou", 100 << 10, 128 << 10, 0},
	{"discard", 2 << 20, 128 << 10, 0},
	{"write", 8 << 20, 3 << 20, 4},
	{"discard", 9 << 20, 1 << 20, 0},
	{"write", 31 << 20, 1 << 20, 5},
	{"write", 12345, 4321, 6},
	{"write", 9<<20 + 512, 512, 7},
	{"zerou", 8 << 20, 64 << 10, 0},
	{"write", 20<<20 - 700, 1400, 8},
}

// TestEngineMatchesQemuIO runs the same operations through the engine and
// through qemu-io, on fresh images and on top of QEMU-made backing files.
func TestEngineMatchesQemuIO(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, opts string
		backing    bool
	}{
		{"default", "", false},
		{"backing", "", true},
		{"c4k_backing", "cluster_size=4096", true},
		{"c512", "cluster_size=512", false},
		{"rb1", "refcount_bits=1", false},
		{"rb64", "refcount_bits=64", false},
		{"v2_backing", "compat=0.10", true},
		{"extl2_backing", "extended_l2=on", true},
		{"lazy", "lazy_refcounts=on", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mk := func(name string) string {
				p := filepath.Join(dir, tc.name+"-"+name+".qcow2")
				args := []string{"create", "-q", "-f", "qcow2"}
				if tc.opts != "" {
					args = append(args, "-o", tc.opts)
				}
				if tc.backing {
					base := filepath.Join(dir, tc.name+"-base.qcow2")
					if _, err := os.Stat(base); err != nil {
						qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "24M")
						qemuIO(t, base, "write -P 0x55 0 4M", "write -c -P 0x66 4M 64k", "write -P 0x56 5M 19M")
					}
					args = append(args, "-b", base, "-F", "qcow2")
				}
				qemu(t, "qemu-img", append(args, p, "32M")...)
				return p
			}
			ours, theirs := mk("ours"), mk("theirs")
			var cmds []string
			for _, o := range mixedOps {
				cmds = append(cmds, o.qemuCmd())
			}
			qemuIO(t, theirs, cmds...)

			img, done := openChainRW(t, ours)
			for _, o := range mixedOps {
				o.apply(t, img)
			}
			done()
			assertClean(t, ours)
			qemuCompare(t, ours, "qcow2", theirs, "qcow2")
		})
	}
}

// openChainRW opens an image read-write with its backing chain read-only.
func openChainRW(t testing.TB, path string) (*Image, func()) {
	t.Helper()
	img, fd := openImage(t, path, OpenOptions{})
	name, format := img.BackingFile()
	closeBacking := func() {}
	if name != "" {
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		if format == "raw" {
			rd, err := openFileDev(name, true)
			if err != nil {
				t.Fatal(err)
			}
			img.SetBacking(rd)
			closeBacking = func() { rd.Close() }
		} else {
			b, c := openChain(t, name)
			img.SetBacking(b)
			closeBacking = c
		}
	}
	return img, func() {
		if err := img.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		fd.Close()
		closeBacking()
	}
}

// TestWriteOverCompressedAndSnapshots overwrites clusters that are
// compressed or shared with an internal snapshot (copy-on-write of data
// clusters and of L2 tables) and checks the result, including that the
// snapshot still holds the old data.
func TestWriteOverCompressedAndSnapshots(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, opts := range []string{"", "extended_l2=on", "compression_type=zstd", "cluster_size=4096"} {
		name := strings.NewReplacer("=", "_", ",", "_").Replace(opts)
		t.Run("o"+name, func(t *testing.T) {
			p := filepath.Join(dir, "snap"+name+".qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if opts != "" {
				args = append(args, "-o", opts)
			}
			qemu(t, "qemu-img", append(args, p, "16M")...)
			cs := "65536"
			if strings.Contains(opts, "4096") {
				cs = "4096"
			}
			qemuIO(t, p, "write -P 0x10 0 4M", "write -c -P 0x20 4M "+cs, "write -c -P 0x21 6M "+cs)
			before := toRaw(t, p)
			qemu(t, "qemu-img", "snapshot", "-c", "s1", p)
			theirs := filepath.Join(dir, "theirs"+name+".qcow2")
			copyFile(t, p, theirs)

			ops := []ioOp{
				{"write", 100, 1000, 0x31},        // shared data cluster, partial
				{"write", 4<<20 + 10, 100, 0x32},  // compressed, partial
				{"write", 6 << 20, 65536, 0x33},   // compressed, whole (64k)
				{"write", 1 << 20, 2 << 20, 0x34}, // shared, whole clusters
				{"zerou", 3 << 20, 65536, 0},
				{"discard", 2 << 20, 65536, 0},
			}
			img, done := openChainRW(t, p)
			for _, o := range ops {
				o.apply(t, img)
			}
			done()
			var cmds []string
			for _, o := range ops {
				cmds = append(cmds, o.qemuCmd())
			}
			qemuIO(t, theirs, cmds...)
			assertClean(t, p)
			qemuCompare(t, p, "qcow2", theirs, "qcow2")
			// The snapshot is untouched.
			snapRaw := filepath.Join(dir, "snap"+name+".raw")
			qemu(t, "qemu-img", "convert", "-O", "raw", "-l", "snapshot.name=s1", p, snapRaw)
			got, err := os.ReadFile(snapRaw)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(before) {
				t.Fatalf("snapshot changed: %s", firstDiff(got, before))
			}
		})
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var _ = strconv.Itoa
