package qmptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// qemu-storage-daemon 7.2 never sends BLOCK_IO_ERROR for an export: the
// event comes from a device's error policy (rerror/werror), and exports
// have none; an NBD or FUSE client just gets the errno. This runs both
// daemons with a file size limit (RLIMIT_FSIZE, so a write past 2 MiB
// fails with EFBIG, which NBD reports as ENOSPC, without a small file
// system to fill), writes past it through an NBD export and requires the
// same failure for the client and no event on the monitor.
func TestExportWriteErrorSendsNoEvent(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
			t.Fatalf("prlimit (util-linux) not found: %v", err)
		}
		t.Skipf("SKIP LOUDLY: prlimit (util-linux) not installed")
	}
	qemuIO := qemuTool(t, "qemu-io")
	run := func(name, bin string) []string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "r.raw"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(dir, "r.raw"), 8<<20); err != nil {
			t.Fatal(err)
		}
		wrap := filepath.Join(dir, "limited.sh")
		script := "#!/bin/sh\nexec " + prlimit + " --fsize=2097152 -- " + bin + ` "$@"` + "\n"
		if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		s := &session{t: t, tb: t, name: name, Dir: dir}
		s.d = StartDaemon(t, wrap, dir)
		s.c = Dial(t, s.d.Sock)
		defer func() {
			s.c.Close()
			s.d.Stop(t)
		}()
		if name == "qemu-storage-daemon" {
			negotiateReference(t, s.c)
		} else {
			s.c.Negotiate(t)
		}
		s.OK("blockdev-add", map[string]any{"driver": "raw", "node-name": "r",
			"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "r.raw")}})
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(dir, "nbd.sock")}}})
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "r", "writable": true})
		uri := "nbd+unix:///r?socket=" + filepath.Join(dir, "nbd.sock")
		out, _ := exec.Command(qemuIO, "-f", "raw", "-c", "write -P 1 0 1M", "-c", "write -P 2 4M 1M",
			"-c", "read -P 1 0 1M", "-c", "read -P 0 4M 1M", uri).CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "failed") || strings.Contains(l, "wrote") || strings.Contains(l, "read ") {
				s.observe("qemu-io: %s", l)
			}
		}
		if !strings.Contains(string(out), "write failed: No space left on device") {
			t.Errorf("[%s] the write past the limit did not fail with ENOSPC:\n%s", name, out)
		}
		_, evs := s.c.Command(t, "query-block-exports", nil)
		for _, e := range evs {
			s.observe("event %v", e["event"])
		}
		s.observe("%d events", len(evs))
		return s.log
	}
	got := run("blockd", blockdBin)
	for _, l := range got {
		if strings.HasPrefix(l, "event ") {
			t.Errorf("blockd sent %s for an export's failed write", l)
		}
	}
	ref := referenceDaemon(t)
	if ref == "" || t.Failed() {
		return
	}
	want := run("qemu-storage-daemon", ref)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("observations differ\nblockd:\n%s\nqemu-storage-daemon:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	t.Logf("observed by both:\n%s", strings.Join(got, "\n"))
}
