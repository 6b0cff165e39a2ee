package nbdtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	qmptest "blockd/tests/qmp"
)

// Filters exported over an overlay whose data is in its backing file:
// reads through them return the backing data (a filter is not a layer of
// the chain, so its child's unallocated ranges are not holes), NBD block
// status says data, and copy-on-read leaves the overlay allocated as
// qemu-storage-daemon's does.
func TestFiltersOverOverlayLikeReference(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo", "qemu-storage-daemon")
	filters := map[string]map[string]any{
		"copy-on-read": {"driver": "copy-on-read"},
		"throttle":     {"driver": "throttle", "throttle-group": "g"},
		"compress":     {"driver": "compress"},
	}
	for name, filter := range filters {
		t.Run(name, func(t *testing.T) {
			observe := func(bin, sub string) string {
				dir := filepath.Join(t.TempDir(), sub)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
				run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base)
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
				sock := filepath.Join(dir, "nbd.sock")
				d, c := qmptest.StartSession(t, bin, dir, "--object", "throttle-group,id=g",
					"--nbd-server", "addr.type=unix,addr.path="+sock)
				args := map[string]any{"node-name": "f", "file": map[string]any{"driver": "qcow2", "node-name": "top",
					"file": map[string]any{"driver": "file", "filename": top}}}
				for k, v := range filter {
					args[k] = v
				}
				c.Ok(t, "blockdev-add", args)
				c.Ok(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "f", "writable": true})
				uri := "nbd+unix:///f?socket=" + sock
				run(t, "qemu-io", "-f", "raw", "-c", "read -P 0x11 70000 512", "-c", "read -P 0x11 300000 4096",
					"-c", "read -P 0x11 1048000 100000", uri)
				nbdMap := run(t, "nbdinfo", "--map", uri)
				c.DeleteExport(t, "e")
				c.Ok(t, "blockdev-del", map[string]any{"node-name": "f"})
				d.Stop(t)
				return "nbdinfo --map:\n" + nbdMap + "qemu-img map:\n" + strings.ReplaceAll(run(t, "qemu-img", "map", "--output=json", top), dir, "$DIR")
			}
			got, want := observe(blockdBin, "blockd"), observe("qemu-storage-daemon", "ref")
			if got != want {
				t.Errorf("blockd:\n%s\nqemu-storage-daemon:\n%s", got, want)
			}
		})
	}
}
