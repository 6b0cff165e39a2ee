package tools

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"blockd/drivers/file"
	"blockd/drivers/qcow2"
)

// storedBits loads an image's bitmaps with the engine: name -> serialized
// bits, with the flags qemu-img info would print.
func storedBits(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := file.Open(file.Options{Filename: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := qcow2.Open(f, qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	list, err := img.LoadBitmaps()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range list {
		out[b.Name] = string(b.Bits.Bytes())
		if b.Enabled {
			out[b.Name+"/auto"] = "1"
		}
		if b.InUse {
			out[b.Name+"/in-use"] = "1"
		}
		out[b.Name+"/gran"] = fmt.Sprint(b.Granularity)
	}
	return out
}

// blockd img bitmap and qemu-img bitmap, given the same images and the
// same command lines, answer the same and leave the same bitmaps (names,
// flags, granularities and bits, read back by the engine) and images
// qemu-img check finds clean; qemu-img info prints the same of both.
func TestBitmapToolAgreesWithQemuImg(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mk := func(name string) (string, string) {
		a, s := filepath.Join(dir, name+".qcow2"), filepath.Join(dir, name+"-src.qcow2")
		mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", a, "16M")
		mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", s, "16M")
		mustQemu(t, dir, "qemu-img", "bitmap", "--add", s, "sb")
		mustQemu(t, dir, "qemu-io", "-c", "write 5M 1M", "-c", "write 15M 4k", s)
		mustQemu(t, dir, "qemu-img", "bitmap", "--add", "-g", "128k", a, "pre")
		mustQemu(t, dir, "qemu-io", "-c", "write 0 1M", a) // marks "pre"
		return a, s
	}
	qa, qs := mk("q")
	ba, bs := mk("b")
	steps := [][]string{
		{"--add", "$A", "b"},
		{"--add", "$A", "b"},
		{"--add", "-g", "1000", "$A", "c"},
		{"--add", "-g", "4k", "--disable", "$A", "c"},
		{"-b", "$S", "--merge", "sb", "$A", "c"},
		{"--merge", "pre", "--enable", "$A", "c"},
		{"--merge", "nope", "$A", "c"},
		{"--clear", "$A", "zz"},
		{"--remove", "$A", "b"},
		{"--clear", "$A", "pre"},
		{"$A", "b"},
		{"--add", "$A"},
		{"-g", "64k", "--clear", "$A", "pre"},
		{"-F", "qcow2", "--clear", "$A", "pre"},
		{"-b", "$S", "--clear", "$A", "pre"},
	}
	for _, st := range steps {
		sub := func(a, s string) []string {
			var out []string
			for _, x := range st {
				out = append(out, strings.NewReplacer("$A", a, "$S", s).Replace(x))
			}
			return out
		}
		want := qemuRun(dir, "qemu-img", append([]string{"bitmap"}, sub(qa, qs)...)...)
		got := img(t, append([]string{"bitmap"}, sub(ba, bs)...)...)
		norm := func(s, a string) string {
			s = strings.ReplaceAll(s, "blockd img", "qemu-img")
			return strings.ReplaceAll(s, a, "$A")
		}
		if got.code != want.code || got.out != want.out || norm(got.err, ba) != norm(want.err, qa) {
			t.Errorf("bitmap %v:\nblockd img: %s\nqemu-img:   %s", st, got, want)
		}
	}
	qb, bb := storedBits(t, qa), storedBits(t, ba)
	if len(qb) == 0 || len(qb) != len(bb) {
		t.Fatalf("stored bitmaps differ: qemu-img %d entries, blockd %d", len(qb), len(bb))
	}
	t.Logf("%d stored bitmap facts compared", len(qb))
	for k, v := range qb {
		if bb[k] != v {
			t.Errorf("stored bitmap %s differs", k)
		}
	}
	for _, a := range []string{qa, ba} {
		mustQemu(t, dir, "qemu-img", "check", a)
	}
	wantInfo := strings.ReplaceAll(mustQemu(t, dir, "qemu-img", "info", "--output=json", qa), qa, "$A")
	gotInfo := strings.ReplaceAll(mustQemu(t, dir, "qemu-img", "info", "--output=json", ba), ba, "$A")
	cut := func(s string) string { // host allocation differs
		i, j := strings.Index(s, `"format-specific"`), strings.Index(s, `"dirty-flag"`)
		if i < 0 || j < i {
			t.Fatalf("unexpected qemu-img info output:\n%s", s)
		}
		return s[i:j]
	}
	if cut(gotInfo) != cut(wantInfo) {
		t.Errorf("qemu-img info differs:\nblockd's image: %s\nqemu-img's:     %s", cut(gotInfo), cut(wantInfo))
	}
	if g, w := mustImg(t, "info", ba), mustQemu(t, dir, "qemu-img", "info", ba); g != w {
		t.Errorf("blockd img info differs from qemu-img info:\n%s\n---\n%s", g, w)
	}
}

// Resizing an image keeps its bitmaps, resized as qemu-img resizes them
// (grown clean, shrunk cut), stored with tables of the new size.
func TestBitmapsFollowResize(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	var imgs []string
	for _, name := range []string{"q.qcow2", "b.qcow2"} {
		p := filepath.Join(dir, name)
		mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
		mustQemu(t, dir, "qemu-img", "bitmap", "--add", "-g", "4k", p, "bm")
		mustQemu(t, dir, "qemu-io", "-c", "write 0 64k", "-c", "write 15M 1M", p)
		imgs = append(imgs, p)
	}
	for _, args := range [][]string{{"+8M"}, {"--shrink", "8M"}, {"+100M"}} {
		mustQemu(t, dir, "qemu-img", append([]string{"resize", imgs[0]}, args...)...)
		a := append([]string{"resize"}, args[:len(args)-1]...)
		mustImg(t, append(a, imgs[1], args[len(args)-1])...)
		q, b := storedBits(t, imgs[0]), storedBits(t, imgs[1])
		if len(q) == 0 || len(q) != len(b) {
			t.Fatalf("after resize %v: %d and %d stored facts", args, len(q), len(b))
		}
		for k, v := range q {
			if b[k] != v {
				t.Errorf("after resize %v: stored bitmap %s differs", args, k)
			}
		}
		mustQemu(t, dir, "qemu-img", "check", imgs[1])
	}
}
