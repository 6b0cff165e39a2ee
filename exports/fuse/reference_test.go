package fuse

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/blockio"
	"blockd/drivers/qcow2"
	"blockd/internal/needtool"
)

// referenceOps are shell commands run on an export of a 1 MiB raw image
// ($MP is the mountpoint, $SRC a file of random data); each one's exit
// status and output are what the two exports are compared on. A zero
// range with keep-size starting past the end is left out: the reference
// fails it with EIO, blockd does nothing and succeeds (differences.md).
// Operations marked "# shrinks" are not run on qcow2: blockd's qcow2
// engine does not shrink images (differences.md).
var referenceOps = []string{
	`stat -c '%s %a %h %F' "$MP"`,
	`dd if="$SRC" of="$MP" bs=4k count=3 seek=10 conv=notrunc status=none`,
	`dd if=/dev/zero of="$MP" bs=4k count=1 seek=256 conv=notrunc status=none`,
	`dd if=/dev/zero of="$MP" bs=4k count=2 seek=255 conv=notrunc status=none; stat -c %s "$MP"`,
	`truncate -s 2M "$MP" && stat -c %s "$MP"`,
	`truncate -s 1M "$MP" && stat -c %s "$MP" # shrinks`,
	`fallocate -p -o 40k -l 8k "$MP"`,
	`fallocate -z -o 44k -l 100 "$MP"`,
	`fallocate -o 0 -l 64k "$MP"`,
	`fallocate -o 1M -l 64k "$MP" && stat -c %s "$MP"`,
	`fallocate -z -o 2M -l 64k "$MP" && stat -c %s "$MP"`,
	`fallocate -z -n -o 2M -l 1M "$MP" && stat -c %s "$MP"`,
	`fallocate -c -o 0 -l 4k "$MP"`,
	`fallocate -i -o 0 -l 4k "$MP"`,
	`chmod 640 "$MP" && stat -c %a "$MP"`,
	`chmod 600 "$MP" && stat -c %a "$MP"`,
	`chown 1:2 "$MP" && stat -c '%u %g' "$MP"`,
	`chown 0:0 "$MP" && stat -c '%u %g' "$MP"`,
	`touch "$MP"`,
	`ls "$MP/x"`,
	`rm "$MP"`,
	`dd if="$SRC" of="$MP" bs=64k count=1 seek=40 conv=notrunc status=none; stat -c %s "$MP"`,
	`sync "$MP" && sha256sum < "$MP"`,
}

// TestSameAsReference runs referenceOps on blockd's export and on
// qemu-storage-daemon's export of identical images (raw writable, qcow2
// writable and growable, raw read-only) and requires the same results and
// the same image contents afterwards.
func TestSameAsReference(t *testing.T) {
	requireFuse(t)
	qsd := needtool.Find(t, "qemu-storage-daemon", "qemu-img", "dd", "fallocate", "truncate", "cmp")[0]
	for _, cfg := range []struct {
		name               string
		qcow2              bool
		writable, growable bool
	}{
		{"raw", false, true, false},
		{"qcow2-growable", true, true, true},
		{"raw-readonly", false, false, false},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			seed := randBytes(t, 1<<20)
			src := filepath.Join(t.TempDir(), "src")
			writeFile(t, src, randBytes(t, 64<<10))
			results := map[string][]string{}
			sums := map[string][32]byte{}
			for _, who := range []string{"blockd", "qemu-storage-daemon"} {
				dir := t.TempDir()
				img := filepath.Join(dir, "disk.raw")
				writeFile(t, img, seed)
				if cfg.qcow2 {
					raw := img
					img = filepath.Join(dir, "disk.qcow2")
					run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img)
				}
				mp := mountpoint(t, dir)
				var stop func()
				if who == "blockd" {
					f := openFile(t, img, !cfg.writable)
					var dev blockio.Device = f
					var q *qcow2.Image
					if cfg.qcow2 {
						var err error
						if q, err = qcow2.Open(f, qcow2.OpenOptions{ReadOnly: !cfg.writable}); err != nil {
							t.Fatal(err)
						}
						dev = q
					}
					e, err := Mount(dev, Options{Mountpoint: mp, Writable: cfg.writable, Growable: cfg.growable})
					if err != nil {
						t.Fatal(err)
					}
					stop = func() {
						_ = e.Unmount()
						if q != nil {
							_ = q.Close()
						}
					}
				} else {
					st0, _ := os.Stat(mp)
					args := []string{"--blockdev", "file,node-name=f,discard=unmap,filename=" + img}
					node := "f"
					if cfg.qcow2 {
						args = append(args, "--blockdev", "qcow2,node-name=q,discard=unmap,file=f")
						node = "q"
					}
					args = append(args, "--export", fmt.Sprintf("type=fuse,id=e,node-name=%s,writable=%s,growable=%s,mountpoint=%s",
						node, onOff(cfg.writable), onOff(cfg.growable), mp))
					cmd := exec.Command(qsd, args...)
					cmd.Stderr = os.Stderr
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					stop = func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
					for i := 0; ; i++ { // mounted when the mountpoint changes identity
						if st, err := os.Stat(mp); err == nil && !os.SameFile(st0, st) {
							break
						}
						if i == 1000 {
							stop()
							t.Fatal("qemu-storage-daemon did not mount its export")
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
				for _, op := range referenceOps {
					if cfg.qcow2 && strings.HasSuffix(op, "# shrinks") {
						results[who] = append(results[who], "skipped")
						continue
					}
					cmd := exec.Command("sh", "-c", op)
					cmd.Env = append(os.Environ(), "MP="+mp, "IMG="+img, "SRC="+src, "LC_ALL=C")
					out, err := cmd.CombinedOutput()
					rc := 0
					if ee, ok := err.(*exec.ExitError); ok {
						rc = ee.ExitCode()
					}
					res := fmt.Sprintf("rc=%d %s", rc, strings.ReplaceAll(strings.ReplaceAll(string(out), mp, "$MP"), img, "$IMG"))
					results[who] = append(results[who], res)
				}
				stop()
				if cfg.qcow2 {
					run(t, "qemu-img", "check", "-q", img)
					raw := filepath.Join(dir, "out.raw")
					run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw)
					img = raw
				}
				b, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				sums[who] = sha256.Sum256(b)
			}
			for i, op := range referenceOps {
				t.Logf("%s: %q", op, results["blockd"][i])
				if g, w := results["blockd"][i], results["qemu-storage-daemon"][i]; g != w {
					t.Errorf("%s\n  blockd:              %q\n  qemu-storage-daemon: %q", op, g, w)
				}
			}
			if sums["blockd"] != sums["qemu-storage-daemon"] {
				t.Error("the images differ after the same operations")
			}
		})
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
