package tools

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
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
	infoOf := func(p string) string { return amendedInfo(t, dir, p) }
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
		{nil, []string{"-o", "compat=2,encrypt.new-secret=x"}},
		{nil, []string{"-o", "compat=2,lazy_refcounts=maybe"}},
		{nil, []string{"-o", "refcount_bits=3,data_file=x"}},
		{nil, []string{"-o", "refcount_bits=8,backing_file=x"}},
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
		// qemu-img takes seconds to widen narrow refcounts of 64k
		// clusters, a tenth of that with 4k ones.
		{[]string{"-o", "refcount_bits=2,cluster_size=4k"}, []string{"-o", "refcount_bits=32"}},
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

// amendedInfo is what an amend must leave the same as qemu-img's: qemu-img
// info's virtual size, format-specific data (compat, feature bits,
// refcount width, bitmaps), dirty flag, backing file and snapshot list
// (less the dates).
func amendedInfo(t *testing.T, dir, p string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(mustQemu(t, dir, "qemu-img", "info", "--output=json", p)), &m); err != nil {
		t.Fatal(err)
	}
	// Snapshot dates differ between twins made a moment apart.
	snaps, _ := m["snapshots"].([]any)
	for _, s := range snaps {
		if sm, ok := s.(map[string]any); ok {
			delete(sm, "date-sec")
			delete(sm, "date-nsec")
		}
	}
	b, _ := json.Marshal([]any{m["virtual-size"], m["format-specific"], m["dirty-flag"], m["backing-filename"], snaps})
	return string(b)
}

// qemuRepairLines are what qemu-img prints when it repairs an image left
// dirty by lazy refcounts as it opens it; blockd repairs silently.
var qemuRepairLines = regexp.MustCompile(`(?m)^(ERROR cluster \d+ refcount=\d+ reference=\d+|Rebuilding refcount structure|Repairing cluster \d+ refcount=\d+ reference=\d+)\n`)

// TestAmendCompatAgainstQemu changes compat both ways on twin images
// built by qemu-img and qemu-io, one amended by qemu-img and one by
// blockd: the same exit code and error text, the same qemu-img info, the
// same guest data (qemu-img compare), blockd's image clean for qemu-img
// check with every snapshot as it was, and a refused amend leaving
// blockd's file byte for byte as it was (unless the amend is one
// qemu-img carries out in part before refusing: changed).
func TestAmendCompatAgainstQemu(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	mustQemu(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	mustQemu(t, dir, "qemu-io", "-c", "write -P 0x77 0 4M", base)
	create := func(p, opts string, backed bool) {
		args := []string{"create", "-q", "-f", "qcow2"}
		if opts != "" {
			args = append(args, "-o", opts)
		}
		if backed {
			args = append(args, "-b", "base.qcow2", "-F", "qcow2")
		}
		mustQemu(t, dir, "qemu-img", append(args, p, "4M")...)
	}
	io := func(p string, cmds ...string) { mustQemu(t, dir, "qemu-io", ioArgs(p, cmds...)...) }
	qimg := func(args ...string) { mustQemu(t, dir, "qemu-img", args...) }
	// Data, a plain and a preallocated zero cluster, an unallocated rest.
	data := []string{"write -P 1 0 1M", "write -z 1M 512k", "write -P 2 2M 64k", "write -z 2M 64k"}
	// After a snapshot: the active layer's first cluster becomes a
	// preallocated zero cluster still used by the snapshot.
	afterSnap := []string{"write -z 0 64k", "write -P 5 1M 64k", "write -z 3M 64k"}
	image := func(opts string, backed bool, cmds ...string) func(p string) {
		return func(p string) {
			create(p, opts, backed)
			if len(cmds) > 0 {
				io(p, cmds...)
			}
		}
	}
	withSnapshot := func(opts string, backed bool) func(p string) {
		return func(p string) {
			image(opts, backed, data...)(p)
			qimg("snapshot", "-c", "s1", p)
			io(p, afterSnap...)
		}
	}
	for _, c := range []struct {
		name    string
		prep    func(p string)
		opts    string
		changed bool // refused after a step qemu-img keeps
		// qemu-img zeroes a cluster the active layer still reads: its
		// result is not the reference for the guest's data.
		qemuLosesData bool
	}{
		{"zero clusters", image("", false, data...), "compat=0.10", false, false},
		{"zero clusters over a backing file", image("", true, data...), "compat=0.10", false, false},
		{"512-byte clusters over a backing file", image("cluster_size=512", true, "write -z 0 8k", "write -P 3 8k 4k"), "compat=0.10", false, false},
		{"4k clusters", image("cluster_size=4k", false, data...), "compat=v2", false, false},
		{"snapshot sharing a zero cluster", withSnapshot("", false), "compat=0.10", false, false},
		{"snapshot over a backing file", withSnapshot("", true), "compat=0.10", false, false},
		{"snapshot's zero cluster the active layer reads", func(p string) {
			image("", false, "write -P 1 0 64k")(p)
			qimg("snapshot", "-c", "s1", p)
			io(p, "write -z 0 64k") // preallocated zero, the cluster still s1's data
			qimg("snapshot", "-c", "s2", p)
			io(p, "write -P 2 0 64k") // the active layer moves off it
			qimg("snapshot", "-a", "s1", p)
			qimg("snapshot", "-d", "s1", p) // now only s2's zero entry and the active layer use it
		}, "compat=0.10", false, true},
		{"snapshot of another size", func(p string) {
			image("", false, data...)(p)
			qimg("snapshot", "-c", "s1", p)
			qimg("resize", "-q", p, "8M")
		}, "compat=0.10", false, false},
		{"refcount_bits=64", image("refcount_bits=64", false, data...), "compat=0.10", false, false},
		{"refcount_bits=64 to 16", image("refcount_bits=64", false, data...), "compat=0.10,refcount_bits=16", false, false},
		{"refcount_bits=1 to 16", image("refcount_bits=1,cluster_size=4k", false, data...), "compat=0.10,refcount_bits=16", false, false},
		{"refcount_bits=8 at 0.10", image("", false, data...), "compat=0.10,refcount_bits=8", false, false},
		{"extended L2", image("extended_l2=on", false, data...), "compat=0.10", false, false},
		{"lazy refcounts", image("lazy_refcounts=on", false, data...), "compat=0.10", false, false},
		{"lazy refcounts kept on", image("lazy_refcounts=on", false, data...), "compat=0.10,lazy_refcounts=on", false, false},
		{"lazy refcounts turned on", image("", false, data...), "compat=0.10,lazy_refcounts=on", false, false},
		{"lazy refcounts turned off", image("lazy_refcounts=on", false, data...), "compat=0.10,lazy_refcounts=off", false, false},
		{"dirty", func(p string) {
			create(p, "lazy_refcounts=on", false)
			// Killed with its refcounts unwritten: the dirty bit stays set.
			qemuRun(dir, "qemu-io", ioArgs(p, "write -P 3 0 128k", "write -z 256k 64k", "sigraise 9")...)
		}, "compat=0.10", false, false},
		{"bitmaps", func(p string) {
			image("", false, data...)(p)
			qimg("bitmap", "--add", p, "b0")
			io(p, "write -P 9 3M 64k")
		}, "compat=0.10", false, false},
		{"zstd", image("compression_type=zstd", false, data...), "compat=0.10", false, false},
		{"zstd compressed", image("compression_type=zstd", false, append(data, "write -c 3M 64k")...), "compat=0.10", false, false},
		{"zlib compressed", image("", false, append(data, "write -c 3M 64k")...), "compat=0.10", false, false},
		{"grown", image("", false, data...), "compat=0.10,size=8M", false, false},

		{"v2", image("compat=0.10", false, data[0], data[2]), "compat=1.1", false, false},
		{"v2 4k clusters", image("compat=0.10,cluster_size=4k", false, data[0]), "compat=v3", false, false},
		{"v2 snapshot over a backing file", func(p string) {
			image("compat=0.10", true, data[0], data[2])(p)
			qimg("snapshot", "-c", "s1", p)
			io(p, "write -P 6 0 64k")
		}, "compat=1.1", false, false},
		{"v2 snapshot without extra data", func(p string) {
			image("compat=0.10", false, data[0])(p)
			qimg("snapshot", "-c", "s1", p)
			stripSnapshotExtra(t, p)
		}, "compat=1.1", false, false},
		{"v2 lazy refcounts", image("compat=0.10", false, data[0]), "compat=1.1,lazy_refcounts=on", false, false},
		{"v2 refcount_bits=8", image("compat=0.10", false, data[0]), "compat=1.1,refcount_bits=8", false, false},
		{"v2 backing file", image("compat=0.10", false, data[0]), "compat=1.1,backing_file=x", true, false},
	} {
		a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
		c.prep(a)
		before, err := os.ReadFile(a)
		if err != nil {
			t.Fatal(err)
		}
		orig := filepath.Join(dir, "orig.qcow2")
		for _, p := range []string{b, orig} {
			if err := os.WriteFile(p, before, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var snaps []string // each snapshot's data before the amend
		for _, s := range listSnapshots(t, dir, b) {
			snaps = append(snaps, snapshotData(t, dir, b, s))
		}
		want := qemuRun(dir, "qemu-img", "amend", "-f", "qcow2", "-o", c.opts, a)
		got := img(t, "amend", "-f", "qcow2", "-o", c.opts, b)
		want.err = qemuRepairLines.ReplaceAllString(want.err, "")
		if got.code != want.code || got.out != want.out ||
			strings.ReplaceAll(got.err, "blockd img", "qemu-img") != want.err {
			t.Errorf("%s, amend -o %s:\nblockd: %v\nqemu-img: %v", c.name, c.opts, got, want)
		}
		if ia, ib := amendedInfo(t, dir, a), amendedInfo(t, dir, b); ia != ib {
			t.Errorf("%s, amend -o %s: images differ\nqemu-img's: %s\nblockd's:   %s", c.name, c.opts, ia, ib)
		}
		if r := qemuRun(dir, "qemu-img", "check", b); r.code != 0 {
			t.Errorf("%s, amend -o %s: qemu-img check: %v", c.name, c.opts, r)
		}
		if r := qemuRun(dir, "qemu-img", "compare", a, b); r.code != 0 && !c.qemuLosesData {
			t.Errorf("%s, amend -o %s: qemu-img compare: %v", c.name, c.opts, r)
		}
		if r := qemuRun(dir, "qemu-img", "compare", orig, b); r.code != 0 {
			t.Errorf("%s, amend -o %s: the guest's data changed: %v", c.name, c.opts, r)
		}
		for i, s := range listSnapshots(t, dir, b) {
			if i < len(snaps) && snapshotData(t, dir, b, s) != snaps[i] {
				t.Errorf("%s, amend -o %s: snapshot %s changed", c.name, c.opts, s)
			}
		}
		if after, err := os.ReadFile(b); err != nil {
			t.Fatal(err)
		} else if got.code != 0 && !c.changed && !bytes.Equal(after, before) {
			t.Errorf("%s, amend -o %s: refused, but the image changed", c.name, c.opts)
		}
		for _, p := range []string{a, b, orig} {
			os.Remove(p)
		}
	}
}

// listSnapshots names p's internal snapshots.
func listSnapshots(t *testing.T, dir, p string) []string {
	t.Helper()
	var m struct{ Snapshots []struct{ Name string } }
	if err := json.Unmarshal([]byte(mustQemu(t, dir, "qemu-img", "info", "--output=json", p)), &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range m.Snapshots {
		out = append(out, s.Name)
	}
	return out
}

// snapshotData is a digest of what snapshot name of p holds.
func snapshotData(t *testing.T, dir, p, name string) string {
	t.Helper()
	raw := filepath.Join(dir, "snapshot.raw")
	defer os.Remove(raw)
	mustQemu(t, dir, "qemu-img", "convert", "-l", "snapshot.name="+name, "-O", "raw", p, raw)
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// stripSnapshotExtra rewrites the snapshot table of the v2 image p as
// QEMU before 1.1 wrote it: entries without extra data.
func stripSnapshotExtra(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	n, off := int(be.Uint32(b[60:])), int(be.Uint64(b[64:]))
	var table []byte
	r := off
	for i := 0; i < n; i++ {
		idLen, nameLen, extra := int(be.Uint16(b[r+12:])), int(be.Uint16(b[r+14:])), int(be.Uint32(b[r+36:]))
		h := append([]byte(nil), b[r:r+40]...)
		be.PutUint32(h[36:], 0)
		table = append(table, h...)
		table = append(table, b[r+40+extra:r+40+extra+idLen+nameLen]...)
		for len(table)%8 != 0 {
			table = append(table, 0)
		}
		r = (r+40+extra+idLen+nameLen-off+7)&^7 + off
	}
	copy(b[off:], table)
	clear(b[off+len(table) : min(r, len(b))])
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
