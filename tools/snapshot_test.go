package tools

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotSubcommand: `blockd img snapshot` lists what qemu-img lists,
// creates snapshots qemu-img sees and deletes QEMU's, with qemu-img check
// clean after each step and qemu-img's texts for a missing snapshot.
func TestSnapshotSubcommand(t *testing.T) {
	requireQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", p, "1M"},
		{"snapshot", "-c", "q1", p},
	} {
		if r := qemuRun(dir, "qemu-img", args...); r.code != 0 {
			t.Fatalf("qemu-img %v: %v", args, r)
		}
	}
	if r := img(t, "snapshot", "-c", "b1", p); r.code != 0 || r.out != "" {
		t.Fatalf("snapshot -c: %v", r)
	}
	ref := qemuRun(dir, "qemu-img", "snapshot", "-l", p)
	got := img(t, "snapshot", "-l", p)
	if got.code != 0 || got.out != ref.out || !strings.Contains(got.out, " b1 ") {
		t.Fatalf("snapshot -l:\n%v\nqemu-img:\n%v", got, ref)
	}
	if r := qemuRun(dir, "qemu-img", "check", p); r.code != 0 {
		t.Fatalf("qemu-img check after snapshot -c: %v", r)
	}
	if r := img(t, "snapshot", "-d", "q1", p); r.code != 0 {
		t.Fatalf("snapshot -d: %v", r)
	}
	want := qemuRun(dir, "qemu-img", "snapshot", "-d", "nope", p)
	r := img(t, "snapshot", "-d", "nope", p)
	if r.code != want.code || strings.TrimPrefix(r.err, "blockd img: ") != strings.TrimPrefix(want.err, "qemu-img: ") {
		t.Fatalf("deleting a missing snapshot: %v\nqemu-img: %v", r, want)
	}
	if r := qemuRun(dir, "qemu-img", "snapshot", "-d", "b1", p); r.code != 0 {
		t.Fatalf("qemu-img deleting blockd's snapshot: %v", r)
	}
	if r := qemuRun(dir, "qemu-img", "check", p); r.code != 0 {
		t.Fatalf("qemu-img check after deletes: %v", r)
	}
	if r := img(t, "snapshot", "-l", p); r.code != 0 || r.out != "" {
		t.Fatalf("empty list: %v", r)
	}
}
