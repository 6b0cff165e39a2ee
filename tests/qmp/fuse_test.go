package qmptest

import (
	"os"
	"path/filepath"
	"testing"

	"blockd/internal/needtool"
)

// requireFuse skips loudly (fails under BLOCKD_REQUIRE_QEMU=1) without a
// usable /dev/fuse and fusermount3.
func requireFuse(t *testing.T) {
	t.Helper()
	needtool.Find(t, "fusermount3")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		needtool.Missing(t, "/dev/fuse unusable ("+err.Error()+")")
	}
	f.Close()
}

// The FUSE export through the daemon: block-export-add's refusals, a
// writable export written with dd and read back, the node held by it,
// block-export-del unmounting, and a read-only export refusing writes,
// observed the same on blockd and qemu-storage-daemon.
func TestFuseExportLikeReference(t *testing.T) {
	requireFuse(t)
	needtool.Find(t, "dd", "cmp", "stat")
	setup := func(t *testing.T, dir string) {
		qcow2Setup(t, dir)
		for _, f := range []string{"mp", "data"} {
			b := []byte{}
			if f == "data" {
				b = make([]byte, 1<<20)
				for i := range b {
					b[i] = byte(i * 7)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	compareWithReference(t, setup, func(s *session) {
		mp := filepath.Join(s.Dir, "mp")
		fuse := func(id, mountpoint string, writable bool) map[string]any {
			return map[string]any{"type": "fuse", "id": id, "node-name": "q", "mountpoint": mountpoint, "writable": writable}
		}
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "q", "file": fileRef(filepath.Join(s.Dir, "img.qcow2"))})
		s.Err("block-export-add", fuse("e", filepath.Join(s.Dir, "nope"), true),
			"Failed to stat '"+filepath.Join(s.Dir, "nope")+"': No such file or directory")
		s.Err("block-export-add", fuse("e", filepath.Join(s.Dir, "d"), true),
			"'"+filepath.Join(s.Dir, "d")+"' is not a regular file")
		s.OK("block-export-add", fuse("e", mp, true))
		s.Err("block-export-add", fuse("e2", mp, false), "There already is a FUSE export on '"+mp+"'")
		s.OK("query-block-exports", nil)
		s.ToolOK("stat", "-c", "%s %a %F", mp)
		s.ToolOK("dd", "if=data", "of="+mp, "bs=64k", "seek=3", "conv=notrunc,fsync", "status=none")
		s.ToolOK("cmp", "-i", "0:196608", "-n", "1048576", "data", mp)
		s.Err("blockdev-del", map[string]any{"node-name": "q"}, "Node q is in use")
		s.OK("block-export-del", map[string]any{"id": "e"})
		s.ToolOK("stat", "-c", "%s", mp)
		s.OK("block-export-add", fuse("ro", mp, false))
		s.ToolOK("stat", "-c", "%s %a", mp)
		s.Tool("dd", "if=data", "of="+mp, "bs=64k", "count=1", "conv=notrunc", "status=none")
		s.ToolOK("cmp", "-i", "0:196608", "-n", "1048576", "data", mp)
		s.OK("block-export-del", map[string]any{"id": "ro"})
		s.OK("query-block-exports", nil)
	})
}
