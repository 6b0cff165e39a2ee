package tools

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// mapShape is qemu-img map's extents without host offsets (which
// clusters compress differs between the two encoders).
func mapShape(t *testing.T, dir, img string) string {
	t.Helper()
	var ext []map[string]any
	out := mustQemu(t, dir, "qemu-img", "map", "--output=json", "-f", "qcow2", img)
	if err := json.Unmarshal([]byte(out), &ext); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	// Merge neighbours that only differed by their offset.
	var shape []string
	var last string
	var start, end float64
	for _, e := range ext {
		key := fmt.Sprint(e["data"], e["zero"], e["present"], e["depth"])
		if key == last && e["start"].(float64) == end {
			end += e["length"].(float64)
			continue
		}
		if last != "" {
			shape = append(shape, fmt.Sprint(start, end, last))
		}
		last, start, end = key, e["start"].(float64), e["start"].(float64)+e["length"].(float64)
	}
	shape = append(shape, fmt.Sprint(start, end, last))
	return fmt.Sprint(shape)
}

// TestQemuConvertCompressed compares convert -c with qemu-img convert -c:
// same messages and exit codes, outputs that read as the source, pass
// qemu-img check, have the same allocation and a similar size.
func TestQemuConvertCompressed(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	// Text, random and zero clusters, a sub-cluster hole, and a size that
	// ends in a partial cluster.
	const size = 3<<20 + 1024
	src := make([]byte, size)
	rng := rand.New(rand.NewSource(7))
	for off := 0; off < size; {
		line := fmt.Appendf(nil, "line %d of the source: %d\n", off, rng.Intn(1000))
		off += copy(src[off:], line)
	}
	rng.Read(src[1<<20 : 1<<20+192<<10])
	clear(src[2<<20 : 2<<20+256<<10])
	clear(src[2<<20+300<<10 : 2<<20+310<<10])
	if err := os.WriteFile(p("src.raw"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("base.qcow2"), "4M")
	mustQemu(t, dir, "qemu-io", "-c", "write -P 1 0 4M", p("base.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", p("top.qcow2"))
	mustQemu(t, dir, "qemu-io", "-c", "write -P 2 1M 64k", "-c", "write -P 3 2M 1000", "-c", "write -z 3M 64k", p("top.qcow2"))

	out := p("out")
	for _, tc := range []struct {
		src  string
		opts []string
	}{
		{"src.raw", []string{"-c", "-O", "qcow2"}},
		{"src.raw", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}},
		{"src.raw", []string{"-c", "-O", "qcow2", "-o", "cluster_size=4k"}},
		{"src.raw", []string{"-c", "-O", "qcow2", "-S", "0"}},
		{"src.raw", []string{"-c", "-p", "-O", "qcow2", "-o", "compat=0.10"}},
		{"top.qcow2", []string{"-c", "-O", "qcow2"}},
		{"top.qcow2", []string{"-c", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2"}},
	} {
		args := append(append([]string{"convert"}, tc.opts...), p(tc.src), out)
		name := fmt.Sprint(tc.src, tc.opts)
		sameAsQemu(t, dir, args, out)
		if r := qemuRun(dir, "qemu-img", "compare", p(tc.src), out+".b"); r.code != 0 {
			t.Errorf("%s: output differs from the source: %s", name, r)
		}
		if r := qemuRun(dir, "qemu-img", "check", out+".b"); r.code != 0 {
			t.Errorf("%s: check: %s", name, r)
		}
		if b, q := mapShape(t, dir, out+".b"), mapShape(t, dir, out+".q"); b != q {
			t.Errorf("%s: maps differ:\nblockd:   %s\nqemu-img: %s", name, b, q)
		}
		bs, _ := os.Stat(out + ".b")
		qs, _ := os.Stat(out + ".q")
		t.Logf("%s: blockd %d bytes, qemu-img %d bytes", name, bs.Size(), qs.Size())
		if bs.Size() > qs.Size()*11/10+64<<10 {
			t.Errorf("%s: blockd's output is %d bytes, qemu-img's %d", name, bs.Size(), qs.Size())
		}
		os.Remove(out + ".b")
		os.Remove(out + ".q")
	}
	// zstd images are created as qemu-img creates them.
	z := p("z.qcow2")
	sameAsQemu(t, dir, []string{"create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", z, "1G"}, z)
	if b, q := readFile(t, z+".b"), readFile(t, z+".q"); string(b) != string(q) {
		t.Errorf("zstd image differs from qemu-img's")
	}
	sameAsQemu(t, dir, []string{"create", "-q", "-f", "qcow2", "-o", "compat=0.10,compression_type=zstd", z, "1G"}, z)

	// Refusals.
	sameAsQemu(t, dir, []string{"convert", "-c", "-O", "raw", p("src.raw"), out}, out)
	sameAsQemu(t, dir, []string{"convert", "-c", "-C", "-O", "qcow2", p("src.raw"), out}, out)
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", p("n.raw"), "4M")
	sameAsQemu(t, dir, []string{"convert", "-n", "-c", "-O", "raw", p("src.raw"), p("n.raw")})
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
