package copyjobs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	qmptest "blockd/tests/qmp"
)

// The reference's copy-before-write iotest, its on-cbw-error cases: the
// copy of old data before a guest write fails (blkdebug fails the
// target's first data write with EIO). break-guest-write fails the
// guest write and keeps the snapshot; break-snapshot lets the write
// through and breaks the snapshot. Checked on blockd and compared with
// qemu-storage-daemon.
func TestCbwErrorPolicies(t *testing.T) {
	failing := map[string]any{"driver": "qcow2", "node-name": "tgt", "file": map[string]any{
		"driver":       "blkdebug",
		"inject-error": []any{map[string]any{"event": "write_aio", "errno": 5, "once": true}},
		"image":        map[string]any{"driver": "file", "filename": "tgt.qcow2"}}}
	for _, tc := range []struct {
		name string
		opts map[string]any
		want cbwTimeoutOutcome
	}{
		{"break-guest-write", map[string]any{},
			cbwTimeoutOutcome{SlowWrite: "write failed: Input/output error", Snapshot: "ok"}},
		{"break-snapshot", map[string]any{"on-cbw-error": "break-snapshot"},
			cbwTimeoutOutcome{SlowWrite: "ok", Snapshot: "read failed: Invalid argument"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, dir := runCbw(t, blockdBin, failing, tc.opts, false)
			if got.SlowWrite != tc.want.SlowWrite || got.Snapshot != tc.want.Snapshot {
				t.Fatalf("guest write %q, snapshot read %q; want %q, %q",
					got.SlowWrite, got.Snapshot, tc.want.SlowWrite, tc.want.Snapshot)
			}
			checkCbwErrorImages(t, dir, got.SlowWrite == "ok")
			ref, refDir := runCbw(t, qmptest.QemuTool(t, "qemu-storage-daemon"), failing, tc.opts, false)
			if ref != got {
				t.Fatalf("blockd: %+v\nreference: %+v", got, ref)
			}
			checkCbwErrorImages(t, refDir, ref.SlowWrite == "ok")
		})
	}
}

// checkCbwErrorImages: both images consistent, and the source holds the
// guest write exactly when it went through.
func checkCbwErrorImages(t *testing.T, dir string, written bool) {
	t.Helper()
	run(t, dir, "qemu-img", "check", "-q", "src.qcow2")
	run(t, dir, "qemu-img", "check", "-q", "tgt.qcow2")
	model := bytes.Repeat([]byte{cbwOld}, cbwImageSize)
	if written {
		copy(model[cbwSlowOff:], bytes.Repeat([]byte{0x33}, 64<<10))
	}
	if err := os.WriteFile(filepath.Join(dir, "model.raw"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", "src.qcow2", "model.raw")
}
