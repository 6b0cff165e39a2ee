package qcow2

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockd/blockio"
)

// Images made by QEMU must read back through the engine exactly like
// qemu-img convert -O raw reads them.

// qemuWrites is a qemu-io workload touching every kind of cluster.
var qemuWrites = []string{
	"write -P 0xa1 0 1M",
	"write -P 0xb2 3M 65536",
	"write -P 0xc3 3100k 1000",
	"write -z 1M 512k",
	"write -z 200k 10k",
	"discard 2M 128k",
	"write -P 0xd4 8M 3M",
	"discard 9M 1M",
	"write -P 0xe5 31M 1M",
	"write -P 0xf6 12345 4321",
}

func checkAgainstQemu(t *testing.T, path string) {
	t.Helper()
	want := toRaw(t, path)
	img, done := openChain(t, path)
	defer done()
	got := readAll(t, img)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: engine read differs from qemu-img convert: %s", path, firstDiff(got, want))
	}
	// Unaligned reads across cluster boundaries.
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		off := rng.Int63n(int64(len(want)))
		n := rng.Int63n(min(int64(len(want))-off, 300000)) + 0
		buf := make([]byte, n)
		if err := img.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+n]) {
			t.Fatalf("read %d at %d: %s", n, off, firstDiff(buf, want[off:off+n]))
		}
	}
	// BlockStatus must cover the disk and agree with the data for Zero.
	size, _ := img.Size()
	for off := int64(0); off < size; {
		st, err := img.BlockStatus(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		if st.Length <= 0 {
			t.Fatalf("BlockStatus at %d: length %d", off, st.Length)
		}
		if st.Flags&blockio.StatusZero != 0 && !bytes.Equal(want[off:off+st.Length], make([]byte, st.Length)) {
			t.Fatalf("BlockStatus says zero at %d+%d, data is not", off, st.Length)
		}
		off += st.Length
	}
}

func TestQemuImagesReadBack(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, opts string }{
		{"default", ""},
		{"cluster512", "cluster_size=512"},
		{"cluster2M", "cluster_size=2M"},
		{"refcount1", "refcount_bits=1"},
		{"refcount64", "refcount_bits=64"},
		{"compat010", "compat=0.10"},
		{"extl2", "extended_l2=on"},
		{"extl2_128k", "extended_l2=on,cluster_size=128k"},
		{"lazy", "lazy_refcounts=on"},
		{"zstd", "compression_type=zstd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // own image; most of the time is qemu-img's
			path := filepath.Join(dir, tc.name+".qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if tc.opts != "" {
				args = append(args, "-o", tc.opts)
			}
			qemu(t, "qemu-img", append(args, path, "32M")...)
			cmds := append([]string(nil), qemuWrites...)
			if !strings.Contains(tc.opts, "compat=0.10") {
				// Compressed clusters need cluster-aligned writes.
				cs := "65536"
				switch {
				case strings.Contains(tc.opts, "512"):
					cs = "512"
				case strings.Contains(tc.opts, "2M"):
					cs = "2M"
				case strings.Contains(tc.opts, "128k"):
					cs = "128k"
				}
				cmds = append(cmds, "write -c -P 0x77 16M "+cs, "write -c -P 0x78 20M "+cs)
			}
			qemuIO(t, path, cmds...)
			checkAgainstQemu(t, path)
		})
	}
}

// TestQemuCompressedConvert reads images written by qemu-img convert -c,
// with real (compressible, non-uniform) data, zlib and zstd.
func TestQemuCompressedConvert(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	data := make([]byte, 8<<20)
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < len(data); i += 4096 {
		switch rng.Intn(4) {
		case 0: // zero
		case 1:
			rng.Read(data[i : i+4096]) // incompressible
		default:
			for j := i; j < i+4096; j++ {
				data[j] = byte(j / 7 % 13)
			}
		}
	}
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []string{"65536", "4096", "2M"} {
			path := filepath.Join(dir, ct+cs+".qcow2")
			qemu(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o",
				"compression_type="+ct+",cluster_size="+cs, raw, path)
			img, done := openChain(t, path)
			if got := readAll(t, img); !bytes.Equal(got, data) {
				t.Fatalf("%s: %s", path, firstDiff(got, data))
			}
			if info := img.Info(); info.CompressionType != ct {
				t.Fatalf("compression type %q, want %q", info.CompressionType, ct)
			}
			done()
		}
	}
}

// TestQemuBackingChains reads chains of three and more layers, with raw
// and qcow2 bases, backing files shorter than the overlay, partial-cluster
// writes in every layer and zeroed/discarded ranges hiding backing data.
func TestQemuBackingChains(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, baseFmt, opts string
		layers              int
	}{
		{"raw3", "raw", "", 3},
		{"qcow2_4", "qcow2", "", 4},
		{"qcow2_5_small", "qcow2", "cluster_size=4096", 5},
		{"extl2_3", "qcow2", "extended_l2=on", 3},
		{"v2_3", "qcow2", "compat=0.10", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // own chain; most of the time is qemu-img's
			base := filepath.Join(dir, tc.name+"-0."+tc.baseFmt)
			args := []string{"create", "-q", "-f", tc.baseFmt}
			if tc.baseFmt == "qcow2" && tc.opts != "" {
				args = append(args, "-o", tc.opts)
			}
			qemu(t, "qemu-img", append(args, base, "16M")...)
			qemu(t, "qemu-io", "-f", tc.baseFmt, "-c", "write -P 0x11 0 16M", base)
			prev, prevFmt := base, tc.baseFmt
			for l := 1; l < tc.layers; l++ {
				p := filepath.Join(dir, tc.name+"-"+string(rune('0'+l))+".qcow2")
				args := []string{"create", "-q", "-f", "qcow2", "-b", filepath.Base(prev), "-F", prevFmt}
				if tc.opts != "" {
					args = append(args, "-o", tc.opts)
				}
				// Each layer is 4 MiB larger than its backing file.
				qemu(t, "qemu-img", append(args, p, itoa(16+4*l)+"M")...)
				pat := itoa(0x20 + l)
				qemuIO(t, p,
					"write -P "+pat+" "+itoa(l*1000)+" 3000",
					"write -P "+pat+" "+itoa(l)+"M 70000",
					"write -z "+itoa(l+4)+"M 65536",
					"write -P "+pat+" "+itoa(14+l)+"M 2M",
				)
				prev, prevFmt = p, "qcow2"
			}
			checkAgainstQemu(t, prev)
		})
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	if i == 0 {
		return "0"
	}
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}
