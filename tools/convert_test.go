package tools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockd/blockio"
)

// sameAsQemu runs the same img command with both tools and fails unless
// exit codes, stdout and stderr agree (stderr with the program name
// replaced). out maps an output file of blockd's run to qemu-img's, so the
// two runs write different files; the pairs are returned for comparison.
func sameAsQemu(t *testing.T, dir string, args []string, outputs ...string) {
	t.Helper()
	sameAsQemuExcept(t, dir, "", args, outputs...)
}

// sameAsQemuExcept is sameAsQemu where stdout may differ for the reason
// given in why (logged when it does).
func sameAsQemuExcept(t *testing.T, dir, why string, args []string, outputs ...string) {
	t.Helper()
	bArgs := append([]string{}, args...)
	qArgs := append([]string{}, args...)
	for i, a := range args {
		for _, o := range outputs {
			if a == o {
				bArgs[i], qArgs[i] = o+".b", o+".q"
			}
		}
	}
	want := qemuRun(dir, "qemu-img", qArgs...)
	got := img(t, bArgs...)
	if why != "" && got.out != want.out {
		t.Logf("KNOWN DIFFERENCE %v (%s):\nblockd img: %q\nqemu-img:   %q", args, why, got.out, want.out)
		got.out = want.out
	}
	if got.code != want.code || got.out != want.out ||
		strings.ReplaceAll(strings.ReplaceAll(got.err, "blockd img", "qemu-img"), ".b", ".q") != want.err {
		t.Errorf("%v:\nblockd img: %s\nqemu-img:   %s", args, got, want)
	}
}

// TestQemuConvert converts every image of the interop set (qcow2 variants,
// raw, a backing chain, qcow2 over raw) to qcow2 and raw with both tools,
// and three of them (a plain qcow2, the chain, raw) with the other option
// sets too: the outputs read the same as the source and as each other
// (qemu-img compare), have the same allocation map, and the progress
// output (-p) is the same bytes.
func TestQemuConvert(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	images := imageSet(t, dir, "q-",
		func(args ...string) { mustQemu(t, dir, "qemu-img", append([]string{"create", "-q"}, args...)...) },
		func(format, image string, cmds ...string) {
			mustQemu(t, dir, "qemu-io", append([]string{"-f", format}, ioArgs(image, cmds...)...)...)
		})
	out := filepath.Join(dir, "out")
	every := [][]string{{"-O", "qcow2"}, {"-O", "raw"}, {"-p", "-O", "qcow2"}}
	more := append(every, [][]string{{"-O", "qcow2", "-o", "cluster_size=4k,compat=0.10"},
		{"-O", "qcow2", "-S", "0"}, {"-U", "-O", "raw"}, {"-O", "qcow2", "-W", "-m", "16"},
		{"-O", "qcow2", "-m", "1", "-S", "64k"}}...)
	for _, src := range images {
		optSets := every
		switch filepath.Base(src) {
		case "q-default.qcow2", "q-top.qcow2", "q-disk.raw":
			optSets = more
		}
		for _, opts := range optSets {
			args := append(append([]string{"convert"}, opts...), src, out)
			why := ""
			if strings.HasSuffix(src, "extl2.qcow2") {
				why = "block status of a partly allocated extended-L2 cluster is one extent in blockd, " +
					"two in QEMU, so progress moves in different steps"
			}
			sameAsQemuExcept(t, dir, why, args, out)
			ofmt := opts[len(opts)-1]
			for i, o := range opts {
				if o == "-O" {
					ofmt = opts[i+1]
				}
			}
			name := filepath.Base(src) + " " + strings.Join(opts, " ")
			if r := qemuRun(dir, "qemu-img", "compare", "-F", ofmt, src, out+".b"); r.code != 0 {
				t.Errorf("%s: output differs from the source: %s", name, r)
			}
			if r := qemuRun(dir, "qemu-img", "compare", "-s", "-f", ofmt, "-F", ofmt, out+".b", out+".q"); r.code != 0 {
				t.Errorf("%s: outputs differ: %s", name, r)
			}
			bm := mustQemu(t, dir, "qemu-img", "map", "--output=json", "-f", ofmt, out+".b")
			qm := mustQemu(t, dir, "qemu-img", "map", "--output=json", "-f", ofmt, out+".q")
			// With -W writes land in completion order, in either tool.
			if bm != qm && opts[len(opts)-3] != "-W" {
				t.Errorf("%s: maps differ:\nblockd:\n%s\nqemu-img:\n%s", name, bm, qm)
			}
			if ofmt == "qcow2" {
				if r := qemuRun(dir, "qemu-img", "check", out+".b"); r.code != 0 {
					t.Errorf("%s: check: %s", name, r)
				}
			}
		}
	}
}

// TestQemuConvertOptions covers -B (only the top layer is copied onto a
// target with a backing file), -n into an existing image, concatenated
// sources and --target-image-opts, against qemu-img's results.
func TestQemuConvertOptions(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("base.qcow2"), "8M")
	mustQemu(t, dir, "qemu-io", "-c", "write -P 1 0 4M", p("base.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", p("top.qcow2"))
	mustQemu(t, dir, "qemu-io", "-c", "write -P 2 1M 64k", "-c", "write -z 2M 64k", "-c", "write -P 3 6M 1M", p("top.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", p("a.raw"), "3M")
	mustQemu(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 5 1M 4k", p("a.raw"))

	// -B: the target gets the backing file and only what top defines.
	sameAsQemu(t, dir, []string{"convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", p("top.qcow2"), p("o")}, p("o"))
	for _, o := range []string{p("o.b"), p("o.q")} {
		if r := qemuRun(dir, "qemu-img", "compare", p("top.qcow2"), o); r.code != 0 {
			t.Errorf("-B output %s differs: %s", o, r)
		}
	}
	if b, q := mustQemu(t, dir, "qemu-img", "map", "--output=json", p("o.b")),
		mustQemu(t, dir, "qemu-img", "map", "--output=json", p("o.q")); b != q {
		t.Errorf("-B maps differ:\n%s\n%s", b, q)
	}

	// Several sources are concatenated.
	sameAsQemu(t, dir, []string{"convert", "-O", "qcow2", p("a.raw"), p("top.qcow2"), p("cat")}, p("cat"))
	if r := qemuRun(dir, "qemu-img", "compare", "-s", p("cat.b"), p("cat.q")); r.code != 0 {
		t.Errorf("concatenation differs: %s", r)
	}

	// -n writes into an existing image (zeroes included), with the target
	// given by options or by name.
	for _, n := range []string{"n.b", "n.q"} {
		mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p(n), "8M")
		mustQemu(t, dir, "qemu-io", "-c", "write -P 9 0 8M", p(n))
	}
	mustImg(t, "convert", "-n", "--target-image-opts", p("top.qcow2"),
		"driver=qcow2,file.driver=file,file.filename="+p("n.b"))
	mustQemu(t, dir, "qemu-img", "convert", "-n", "-O", "qcow2", p("top.qcow2"), p("n.q"))
	for _, o := range []string{p("n.b"), p("n.q")} {
		if r := qemuRun(dir, "qemu-img", "compare", p("top.qcow2"), o); r.code != 0 {
			t.Errorf("-n output %s differs: %s", o, r)
		}
	}
}

// TestQemuConvertErrors: the common refusals print qemu-img's texts
// (convert -c: TestQemuConvertCompressed).
func TestQemuConvertErrors(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("a.qcow2"), "4M")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("small.qcow2"), "1M")
	for _, args := range [][]string{
		{"convert", "-O", "qcow2", p("missing.qcow2"), p("o")},
		{"convert", "-O", "vmdkx", p("a.qcow2"), p("o")},
		{"convert", "-O", "qcow2", "-o", "foo=1", p("a.qcow2"), p("o")},
		{"convert", "-O", "qcow2", p("a.qcow2")},
		{"convert", "-n", "-O", "qcow2", p("a.qcow2"), p("small.qcow2")},
		{"convert", "-n", "-o", "cluster_size=4k", p("a.qcow2"), p("o")},
		{"convert", "-S", "1000", p("a.qcow2"), p("o")},
		{"convert", "-m", "17", p("a.qcow2"), p("o")},
		{"convert", "-O", "raw", "-c", p("a.qcow2"), p("o")},
		{"convert", "-B", p("a.qcow2"), "-F", "qcow2", "-O", "qcow2", p("a.qcow2"), p("a.qcow2"), p("o")},
	} {
		sameAsQemu(t, dir, args, p("o"))
	}
	release := holdWithQemuIO(t, dir, p("a.qcow2"))
	defer release()
	sameAsQemu(t, dir, []string{"convert", "-O", "qcow2", p("a.qcow2"), p("o")}, p("o"))
	sameAsQemu(t, dir, []string{"convert", "-n", "-O", "qcow2", p("small.qcow2"), p("a.qcow2")})
}

// TestQemuMeasure: the same numbers and texts as qemu-img measure, for
// qcow2 and raw targets, with images and with --size, with creation
// options that change the figures and with the options it refuses, and
// the bitmaps size of sources with 0, 1 and several persistent bitmaps.
func TestQemuMeasure(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("m.qcow2"), "100M")
	mustQemu(t, dir, "qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 2 3000 1000", "-c", "write -z 10M 5M",
		"-c", "write -P 3 50M 70k", p("m.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", p("v2.qcow2"), "10M")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "m.qcow2", "-F", "qcow2", p("t.qcow2"))
	mustQemu(t, dir, "qemu-io", "-c", "write -P 9 20M 1M", p("t.qcow2"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", p("r.raw"), "10M")
	mustQemu(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 7 448k 192k", p("r.raw"))
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("b1.qcow2"), "100M")
	mustQemu(t, dir, "qemu-img", "bitmap", "--add", p("b1.qcow2"), "one")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p("b4.qcow2"), "3G")
	for _, b := range [][]string{{"-g", "512", "fine"}, {"-g", "4k", "b4k"}, {"-g", "16M", "a-much-longer-name-for-a-bitmap"},
		{"--disable", "off"}} {
		mustQemu(t, dir, "qemu-img", append([]string{"bitmap", "--add", p("b4.qcow2"), b[len(b)-1]}, b[:len(b)-1]...)...)
	}
	mustQemu(t, dir, "qemu-io", "-c", "write -P 4 1G 3M", p("b4.qcow2"))
	for _, a := range []string{
		"-O qcow2 b1.qcow2", "-O qcow2 -o cluster_size=4k b1.qcow2", "-O qcow2 b4.qcow2",
		"--output=json -O qcow2 -o cluster_size=512 b4.qcow2", "-O qcow2 -o cluster_size=2M b4.qcow2",
		"-O qcow2 -o compat=0.10 b4.qcow2", "-O raw b4.qcow2", "-O qcow2 -f raw b4.qcow2",
		"-O qcow2 m.qcow2", "-O raw m.qcow2", "--output=json -O qcow2 m.qcow2", "-O qcow2 v2.qcow2",
		"-O qcow2 t.qcow2", "-O qcow2 -o backing_file=x t.qcow2", "-O qcow2 r.raw", "--output=json -O raw r.raw",
		"-O qcow2 -o cluster_size=4k m.qcow2", "-O qcow2 -o cluster_size=2M,extended_l2=on m.qcow2",
		"-O qcow2 -o refcount_bits=1 --size 1T", "-O qcow2 -o refcount_bits=64,cluster_size=512 --size 100G",
		"-O qcow2 -o preallocation=full m.qcow2", "-O qcow2 -o preallocation=metadata m.qcow2",
		"-O qcow2 -o compat=0.10 m.qcow2", "-O qcow2 --size 1000", "-O raw --size 1000",
		"--output=json -O qcow2 --size 5G", "-O qcow2 -f raw m.qcow2",
		"-O qcow2 -o cluster_size=3k --size 1G", "-O qcow2 -o foo=1 --size 1G",
		"-O qcow2 -o extended_l2=on,cluster_size=4k --size 1G", "-O qcow2 --size 100P", "-O qcow2",
		"m.qcow2 t.qcow2", "-O qcow2 --size 1G m.qcow2", "-O qcow2 -o compat=0.10,refcount_bits=8 --size 1G",
		"-O qcow2 -o compat=0.9 --size 1G", "-O qcow2 nope", "-O qcow2 -o preallocation=bogus --size 1G",
		"-O qcow2 -o extended_l2=maybe --size 1G", "-O qcow2 -o refcount_bits=x --size 1G",
		"-O qcow2 -o cluster_size=x --size 1G", "-O vmdkx --size 1G", "--output=yaml --size 1G",
	} {
		args := append([]string{"measure"}, strings.Fields(a)...)
		for i := range args {
			if strings.HasSuffix(args[i], ".qcow2") || strings.HasSuffix(args[i], ".raw") || args[i] == "nope" {
				args[i] = p(args[i])
			}
		}
		sameAsQemu(t, dir, args)
	}
}

// Conversion parallelism follows the storage: only images whose every
// file goes through the page cache count as memory-bound.
func TestPageCachedImages(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.raw"), filepath.Join(dir, "top.qcow2")
	mustImg(t, "create", "-q", "-f", "raw", base, "1M")
	mustImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
	for _, c := range []struct {
		cache string
		want  bool
	}{{"writeback", true}, {"unsafe", true}, {"none", false}, {"directsync", false}} {
		mode, _ := parseCacheMode(c.cache)
		im, err := openImage(openOptions{filename: top, format: "qcow2", readOnly: true, cache: mode,
			perm: blockio.PermConsistentRead, shared: blockio.PermAll}, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		if got := im.pageCached(); got != c.want {
			t.Errorf("cache=%s: pageCached %v, want %v", c.cache, got, c.want)
		}
		im.close()
	}
}
