package tools

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAmendAgainstQemu runs the same `amend` command lines through
// qemu-img and blockd on twin images and requires the same exit code,
// the same error text and the same image afterwards (qemu-img info's
// size and format-specific data, qemu-img compare, qemu-img check).
func TestAmendAgainstQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	mk := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		mustQemu(t, dir, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "1M")...)
		mustQemu(t, dir, "qemu-io", "-c", "write -P 0x5c 0 768k", p)
		return p
	}
	infoOf := func(p string) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(mustQemu(t, dir, "qemu-img", "info", "--output=json", p)), &m); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal([]any{m["virtual-size"], m["format-specific"], m["backing-filename"]})
		return string(b)
	}
	for _, c := range []struct {
		create []string
		opts   []string
	}{
		{nil, []string{"-o", "lazy_refcounts=on"}},
		{[]string{"-o", "lazy_refcounts=on"}, []string{"-o", "lazy_refcounts=off"}},
		{nil, []string{"-o", "size=4M"}},
		{nil, []string{"-o", "size=512k"}},
		{nil, []string{"-o", "size=2M,lazy_refcounts=on", "-o", "compat=1.1,refcount_bits=16"}},
		{nil, []string{"-o", "size=0"}},
		{[]string{"-o", "compat=0.10"}, []string{"-o", "lazy_refcounts=on"}},
		{[]string{"-o", "compat=0.10"}, []string{"-o", "compat=v2,size=3M"}},
		{nil, []string{"-o", "lazy_refcounts=maybe"}},
		{nil, []string{"-o", "size=x"}},
		{nil, []string{"-o", "cluster_size=4k"}},
		{nil, []string{"-o", "preallocation=full"}},
		{nil, []string{"-o", "foo=1"}},
		{nil, []string{"-o", "compat=2"}},
		{nil, []string{"-o", "refcount_bits=3"}},
		{nil, []string{"-o", "refcount_bits=8"}},
		{nil, []string{"-o", "refcount_bits=1,lazy_refcounts=on"}},
		{nil, []string{"-o", "refcount_bits=64,size=4M"}},
		{[]string{"-o", "refcount_bits=2"}, []string{"-o", "refcount_bits=32"}},
		{[]string{"-o", "cluster_size=512"}, []string{"-o", "refcount_bits=1"}},
		{[]string{"-o", "compat=0.10"}, []string{"-o", "refcount_bits=8"}},
		{nil, []string{"-o", "encrypt.new-secret=x"}},
		{nil, []string{"-o", "data_file=x"}},
		{nil, []string{"-o", "data_file_raw=on"}},
		{nil, []string{"-o", "backing_file=x.qcow2"}},
		{nil, []string{}},
		{nil, []string{"-o", "help"}},
	} {
		name := strings.Join(append(append([]string{}, c.create...), c.opts...), " ")
		a, b := mk("a.qcow2", c.create...), mk("b.qcow2", c.create...)
		want := qemuRun(dir, "qemu-img", append(append([]string{"amend", "-f", "qcow2"}, c.opts...), a)...)
		got := img(t, append(append([]string{"amend", "-f", "qcow2"}, c.opts...), b)...)
		if got.code != want.code || got.out != want.out ||
			strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
			t.Errorf("amend %s:\nblockd: %v\nqemu-img: %v", name, got, want)
		}
		if ia, ib := infoOf(a), infoOf(b); ia != ib {
			t.Errorf("amend %s: images differ\nqemu-img's: %s\nblockd's:   %s", name, ia, ib)
		}
		mustQemu(t, dir, "qemu-img", "check", b)
		mustQemu(t, dir, "qemu-img", "compare", a, b)
		os.Remove(a)
		os.Remove(b)
	}
	// Formats without amendment, and what blockd does not change.
	raw := filepath.Join(dir, "r.raw")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "raw", raw, "1M")
	want := qemuRun(dir, "qemu-img", "amend", "-f", "raw", "-o", "size=2M", raw)
	got := img(t, "amend", "-f", "raw", "-o", "size=2M", raw)
	if got.code != want.code || strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
		t.Errorf("amend raw:\nblockd: %v\nqemu-img: %v", got, want)
	}
	q := mk("c.qcow2")
	if r := img(t, "amend", "-f", "qcow2", "-o", "compat=0.10", q); r.code != 1 || !strings.Contains(r.err, "blockd img amend cannot change") {
		t.Errorf("amend -o compat=0.10: %v", r)
	}
	mustQemu(t, dir, "qemu-img", "check", q)

	// A snapshot makes refcounts 2: 1 bit is refused with the first
	// cluster that does not fit, 2 bits are enough.
	a, b := mk("a.qcow2"), mk("b.qcow2")
	for _, p := range []string{a, b} {
		mustQemu(t, dir, "qemu-img", "snapshot", "-c", "s", p)
	}
	for _, width := range []string{"1", "2"} {
		want := qemuRun(dir, "qemu-img", "amend", "-f", "qcow2", "-o", "refcount_bits="+width, a)
		got := img(t, "amend", "-f", "qcow2", "-o", "refcount_bits="+width, b)
		if got.code != want.code || strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
			t.Errorf("amend refcount_bits=%s with a snapshot:\nblockd: %v\nqemu-img: %v", width, got, want)
		}
		if ia, ib := infoOf(a), infoOf(b); ia != ib {
			t.Errorf("amend refcount_bits=%s with a snapshot: images differ\nqemu-img's: %s\nblockd's:   %s", width, ia, ib)
		}
		mustQemu(t, dir, "qemu-img", "check", b)
		mustQemu(t, dir, "qemu-img", "compare", a, b)
		for _, p := range []string{a, b} {
			mustQemu(t, dir, "qemu-img", "convert", "-l", "snapshot.name=s", "-O", "raw", p, p+".s.raw")
		}
		mustQemu(t, dir, "qemu-img", "compare", "-f", "raw", "-F", "raw", a+".s.raw", b+".s.raw")
	}
}
