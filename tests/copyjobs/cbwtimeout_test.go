package copyjobs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	qmptest "blockd/tests/qmp"
)

// cbw-timeout on a copy-before-write filter whose target is slow: a
// throttle node over the target image, in a group that writes 16 KiB/s.
// A first guest write's copy fits the group's empty bucket and fills it,
// so the copy before a second write waits about four seconds: longer
// than a one-second cbw-timeout. The outcomes are checked on blockd and,
// when installed, compared with qemu-storage-daemon's.

const (
	cbwImageSize = 4 << 20
	cbwOld       = 0x11    // the image at the point in time
	cbwSlowOff   = 1 << 20 // the second write, whose copy outlasts the timeout
)

// cbwTimeoutOutcome is what a guest and a fleecing reader see.
type cbwTimeoutOutcome struct {
	SlowWrite string // "ok", or qemu-io's failure line
	Snapshot  string // reading the whole snapshot export as the point in time
	Bitmaps   string // dirty-bitmap counts of the filter and the source after the slow write
}

// qemuIO runs one qemu-io command on an NBD export and returns "ok" or
// the line saying why it failed.
func qemuIO(t *testing.T, uri, command string, readOnly bool) string {
	t.Helper()
	args := []string{"-f", "raw", "-c", command, uri}
	if readOnly {
		args = append([]string{"-r"}, args...)
	}
	out, err := exec.Command(qmptest.QemuTool(t, "qemu-io"), args...).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "failed") {
			return strings.TrimSpace(line)
		}
	}
	if err != nil {
		t.Fatalf("qemu-io %s: %v\n%s", command, err, out)
	}
	return "ok"
}

// bitmapCounts lists the dirty-bitmap counts query-named-block-nodes
// shows on the named nodes.
func bitmapCounts(t *testing.T, c *qmptest.Client, names ...string) string {
	t.Helper()
	nodes, _ := c.Ok(t, "query-named-block-nodes", map[string]any{"flat": true}).([]any)
	var out []string
	for _, name := range names {
		for _, n := range nodes {
			node, _ := n.(map[string]any)
			if node["node-name"] != name {
				continue
			}
			bitmaps, _ := node["dirty-bitmaps"].([]any)
			var counts []string
			for _, b := range bitmaps {
				counts = append(counts, fmt.Sprint(b.(map[string]any)["count"]))
			}
			out = append(out, name+":"+strings.Join(counts, ","))
		}
	}
	return strings.Join(out, " ")
}

// runCbwTimeout runs the scenario on bin with the filter's extra options
// and returns what was seen and the directory holding the images, after
// the daemon exited.
func runCbwTimeout(t *testing.T, bin string, cbwOpts map[string]any) (cbwTimeoutOutcome, string) {
	t.Helper()
	slow := map[string]any{"driver": "throttle", "node-name": "tgt", "throttle-group": "slow",
		"file": map[string]any{"driver": "qcow2", "node-name": "tgt-image",
			"file": map[string]any{"driver": "file", "filename": "tgt.qcow2"}}}
	return runCbw(t, bin, slow, cbwOpts, true)
}

// runCbw is the scenario with the target node tgt (named "tgt", over
// tgt.qcow2); fillFirst makes the first guest write (0x22 at 0) before
// the one at cbwSlowOff whose copy is watched.
func runCbw(t *testing.T, bin string, tgt, cbwOpts map[string]any, fillFirst bool) (cbwTimeoutOutcome, string) {
	t.Helper()
	dir := t.TempDir()
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", fmt.Sprint(cbwImageSize))
	run(t, dir, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P %#x 0 %d", cbwOld, cbwImageSize), "src.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "tgt.qcow2", fmt.Sprint(cbwImageSize))
	d := qmptest.StartDaemon(t, bin, dir)
	c := qmptest.Dial(t, d.Sock)
	defer c.Close()
	c.Ok(t, "qmp_capabilities", nil)
	sock := filepath.Join(dir, "nbd.sock")
	cbw := map[string]any{"driver": "copy-before-write", "node-name": "cbw", "file": "src", "target": "tgt"}
	for k, v := range cbwOpts {
		cbw[k] = v
	}
	for _, cmd := range []struct {
		name string
		args map[string]any
	}{
		{"object-add", map[string]any{"qom-type": "throttle-group", "id": "slow", "limits": map[string]any{"bps-write": 16 << 10}}},
		{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "src",
			"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "src.qcow2")}}},
		{"blockdev-add", tgt},
		{"blockdev-add", cbw},
		{"blockdev-add", map[string]any{"driver": "snapshot-access", "node-name": "acc", "file": "cbw"}},
		{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": sock}}}},
		{"block-export-add", map[string]any{"type": "nbd", "id": "guest", "node-name": "cbw", "writable": true}},
		{"block-export-add", map[string]any{"type": "nbd", "id": "fleece", "node-name": "acc"}},
	} {
		c.Ok(t, cmd.name, cmd.args)
	}
	guest := "nbd+unix:///cbw?socket=" + sock
	fleece := "nbd+unix:///acc?socket=" + sock
	// Fills the throttle group's bucket: the next copy has to wait.
	if fillFirst {
		if got := qemuIO(t, guest, "write -P 0x22 0 64k", false); got != "ok" {
			t.Fatalf("first guest write: %s", got)
		}
	}
	var o cbwTimeoutOutcome
	o.SlowWrite = qemuIO(t, guest, fmt.Sprintf("write -P 0x33 %d 64k", cbwSlowOff), false)
	o.Bitmaps = bitmapCounts(t, c, "cbw", "src")
	o.Snapshot = qemuIO(t, fleece, fmt.Sprintf("read -P %#x 0 %d", cbwOld, cbwImageSize), true)
	c.Ok(t, "quit", nil)
	if err := d.Wait(); err != nil {
		t.Fatalf("exit after quit: %v\n%s", err, d.Stderr())
	}
	return o, dir
}

// checkCbwImages checks both images after the daemon exited: consistent,
// the source holding the writes that went through, and the target the
// point-in-time data of the slow write's cluster, whose copy went on
// after the write stopped waiting for it.
func checkCbwImages(t *testing.T, dir string, slowWriteLanded bool) {
	t.Helper()
	run(t, dir, "qemu-img", "check", "-q", "src.qcow2")
	run(t, dir, "qemu-img", "check", "-q", "tgt.qcow2")
	model := bytes.Repeat([]byte{cbwOld}, cbwImageSize)
	copy(model, bytes.Repeat([]byte{0x22}, 64<<10))
	if slowWriteLanded {
		copy(model[cbwSlowOff:], bytes.Repeat([]byte{0x33}, 64<<10))
	}
	if err := os.WriteFile(filepath.Join(dir, "model.raw"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", "src.qcow2", "model.raw")
	run(t, dir, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P %#x %d 64k", cbwOld, cbwSlowOff), "tgt.qcow2")
}

func TestCbwTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts map[string]any
		want cbwTimeoutOutcome // Bitmaps compared with the reference only
	}{
		// The write fails (ETIMEDOUT, which NBD carries as EINVAL, as
		// the reference's server maps it); the snapshot stays readable.
		{"break-guest-write", map[string]any{"cbw-timeout": 1},
			cbwTimeoutOutcome{SlowWrite: "write failed: Invalid argument", Snapshot: "ok"}},
		// The write goes on; the snapshot is broken everywhere (EACCES,
		// as EINVAL on the wire).
		{"break-snapshot", map[string]any{"cbw-timeout": 1, "on-cbw-error": "break-snapshot"},
			cbwTimeoutOutcome{SlowWrite: "ok", Snapshot: "read failed: Invalid argument"}},
		// 0 is no timeout: the write waits for its slow copy.
		{"no-timeout", map[string]any{"cbw-timeout": 0},
			cbwTimeoutOutcome{SlowWrite: "ok", Snapshot: "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, dir := runCbwTimeout(t, blockdBin, tc.opts)
			if got.SlowWrite != tc.want.SlowWrite || got.Snapshot != tc.want.Snapshot {
				t.Fatalf("slow write %q, snapshot read %q; want %q, %q",
					got.SlowWrite, got.Snapshot, tc.want.SlowWrite, tc.want.Snapshot)
			}
			checkCbwImages(t, dir, got.SlowWrite == "ok")
			qsd, err := exec.LookPath("qemu-storage-daemon")
			if err != nil {
				t.Logf("qemu-storage-daemon not installed: outcome not compared with the reference")
				return
			}
			ref, refDir := runCbwTimeout(t, qsd, tc.opts)
			if ref != got {
				t.Fatalf("blockd: %+v\nreference: %+v", got, ref)
			}
			checkCbwImages(t, refDir, ref.SlowWrite == "ok")
		})
	}
}
