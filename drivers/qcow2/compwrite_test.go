package qcow2

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"blockd/blockio"
)

// compressibleCluster is text-like data that deflates well and differs
// from cluster to cluster.
func compressibleCluster(n int, seed int) []byte {
	b := make([]byte, 0, n)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "cluster %d line %d: the quick brown fox %d\n", seed, i, (i*seed)%97)
	}
	return b[:n]
}

type mapEntry struct {
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
	Data   bool   `json:"data"`
	Offset *int64 `json:"offset"`
}

// qemuMap returns qemu-img map's extents.
func qemuMap(t testing.TB, img string) []mapEntry {
	t.Helper()
	var m []mapEntry
	out := qemu(t, "qemu-img", "map", "--output=json", "-f", "qcow2", img)
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	return m
}

// compressedAt reports whether qemu-img map shows guest offset off as
// compressed: data without a host offset (7.2 has no "compressed" key).
func compressedAt(m []mapEntry, off int64) bool {
	for _, e := range m {
		if off >= e.Start && off < e.Start+e.Length {
			return e.Data && e.Offset == nil
		}
	}
	return false
}

// TestCompressedWrites writes clusters compressed and checks them with
// qemu-img: content, consistency, the map's compressed flag, packing of
// several streams per host cluster, then normal writes over compressed
// clusters.
func TestCompressedWrites(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	// Small clusters get fewer of them: 96 exercise packing and the
	// patterns below as well as thousands, which the race detector makes
	// slow.
	for _, tc := range []struct {
		opts string
		size int64
	}{{"", 2 << 20}, {"compression_type=zstd", 2 << 20}, {"cluster_size=4096", 96 * 4096},
		{"extended_l2=on", 2 << 20}, {"cluster_size=512", 96 * 512}, {"refcount_bits=1", 2 << 20},
		{"compat=0.10", 2 << 20}, {"lazy_refcounts=on", 2 << 20}} {
		opts := tc.opts
		name := strings.NewReplacer("=", "_", ",", "_").Replace(opts)
		t.Run("o"+name, func(t *testing.T) {
			t.Parallel() // own image
			p := filepath.Join(dir, "c"+name+".qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if opts != "" {
				args = append(args, "-o", opts)
			}
			// The size leaves a partial last cluster (but for 512-byte
			// clusters, which 1536 bytes fill).
			size := tc.size + 1536
			qemu(t, "qemu-img", append(args, p, fmt.Sprint(size))...)
			img, fd := openImage(t, p, OpenOptions{})
			cs := img.ClusterSize()
			want := make([]byte, size)
			rng := rand.New(rand.NewSource(1))
			var compressedOffs, plainOffs, written []int64
			for off := int64(0); off < size; off += cs {
				n := min(cs, size-off)
				c := off / cs
				var data []byte
				switch {
				case c%7 == 3:
					data = make([]byte, n)
					rng.Read(data) // incompressible: written as a normal cluster
					plainOffs = append(plainOffs, off)
				case c%11 == 5:
					continue // left unallocated
				default:
					data = compressibleCluster(int(n), int(c))
					compressedOffs = append(compressedOffs, off)
				}
				copy(want[off:], data)
				written = append(written, off)
			}
			// Neighbouring clusters go in pairs, as one request.
			for i := 0; i < len(written); i++ {
				from, end := written[i], min(written[i]+cs, size)
				if i+1 < len(written) && written[i+1] == end {
					i++
					end = min(end+cs, size)
				}
				if err := img.WriteAt(want[from:end], from, blockio.Compressed); err != nil {
					t.Fatalf("compressed write at %d+%d: %v", from, end-from, err)
				}
			}
			// Refused: overwrite of an allocated cluster, partial clusters.
			before, _ := os.ReadFile(p)
			if err := img.WriteAt(want[:cs], 0, blockio.Compressed); !errors.Is(err, syscall.EIO) {
				t.Fatalf("compressed write over data: %v, want EIO", err)
			}
			if err := img.WriteAt(want[:cs/2], cs*5, blockio.Compressed); !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("half-cluster compressed write: %v, want EINVAL", err)
			}
			if err := img.WriteAt(want[:cs], cs*5+cs/2, blockio.Compressed); !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("unaligned compressed write: %v, want EINVAL", err)
			}
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, img); string(got) != string(want) {
				t.Fatalf("read back: %s", firstDiff(got, want))
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			fd.Close()
			after, _ := os.ReadFile(p)
			if len(after) != len(before) {
				t.Fatalf("refused writes changed the file size: %d -> %d", len(before), len(after))
			}
			raw := filepath.Join(dir, "c"+name+".raw")
			if err := os.WriteFile(raw, want, 0o644); err != nil {
				t.Fatal(err)
			}
			assertClean(t, p)
			qemuCompare(t, p, "qcow2", raw, "raw")
			m := qemuMap(t, p)
			for _, off := range compressedOffs {
				if !compressedAt(m, off) {
					t.Fatalf("cluster at %d not compressed in qemu-img map: %+v", off, m)
				}
			}
			for _, off := range plainOffs {
				if compressedAt(m, off) {
					t.Fatalf("incompressible cluster at %d shown compressed", off)
				}
			}
			chk := qemuImgCheck(t, p)
			var info struct {
				Compressed int64 `json:"compressed-clusters"`
			}
			_ = json.Unmarshal([]byte(chk.Out[:strings.LastIndex(chk.Out, "}")+1]), &info)
			if info.Compressed != int64(len(compressedOffs)) {
				t.Fatalf("qemu-img check counts %d compressed clusters, want %d", info.Compressed, len(compressedOffs))
			}
			if !strings.Contains(opts, "refcount_bits=1") {
				// Streams share host clusters: the file holds far less
				// than one host cluster per compressed cluster.
				st, _ := os.Stat(p)
				if st.Size() > size/2 {
					t.Fatalf("image is %d bytes for %d guest bytes: streams not packed", st.Size(), size)
				}
			}

			// Normal writes over compressed clusters (copy-on-write from
			// the compressed data), partial and whole.
			img, done := openChainRW(t, p)
			ops := []ioOp{
				{"write", compressedOffs[0] + 100, 200, 0x41},
				{"write", compressedOffs[1], cs, 0x42},
				{"zero", compressedOffs[2], cs, 0},
				{"discard", compressedOffs[3], cs, 0},
			}
			for _, o := range ops {
				o.apply(t, img)
			}
			done()
			var cmds []string
			for _, o := range ops {
				cmds = append(cmds, o.qemuCmd())
			}
			theirs := filepath.Join(dir, "c"+name+"-theirs.qcow2")
			cargs := []string{"convert", "-f", "raw", "-O", "qcow2"}
			if opts != "" {
				cargs = append(cargs, "-o", opts)
			}
			qemu(t, "qemu-img", append(cargs, raw, theirs)...)
			qemuIO(t, theirs, cmds...)
			assertClean(t, p)
			qemuCompare(t, p, "qcow2", theirs, "qcow2")
		})
	}
}
