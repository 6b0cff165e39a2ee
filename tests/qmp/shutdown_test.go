package qmptest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Shutting down while a commit runs cancels it and leaves every image
// consistent, with the chain as it was.
func TestShutdownWithRunningJob(t *testing.T) {
	for _, how := range []string{"quit", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			chain(t, dir)
			runShell(t, dir, "qemu-io -f qcow2 -c 'write -P 0x44 1M 4M' mid.qcow2 >/dev/null", 0)
			d := StartDaemon(t, blockdBin, dir)
			c := Dial(t, d.Sock)
			defer c.Close()
			negotiate(t, c)
			addTop(t, c, dir)
			args := commitArgs(dir)
			args["speed"] = 4096 // far from done when we stop
			if r, _ := c.Command(t, "block-commit", args); r["return"] == nil {
				t.Fatalf("block-commit: %v", r)
			}
			// The job is cancelled on the way out, and says so: for quit,
			// before the reply, as qemu-storage-daemon does.
			var seen []string
			if how == "quit" {
				r, evs := c.Command(t, "quit", nil)
				if r["return"] == nil {
					t.Fatalf("quit: %v", r)
				}
				for _, e := range evs {
					seen = append(seen, e["event"].(string))
				}
				if !strings.Contains(strings.Join(seen, " "), "BLOCK_JOB_CANCELLED") {
					t.Errorf("events before quit's reply: %v", seen)
				}
			} else {
				_ = d.cmd.Process.Signal(syscall.SIGTERM)
			}
			for {
				m, _, err := c.Next()
				if err != nil {
					break
				}
				if m["event"] != nil {
					seen = append(seen, m["event"].(string))
				}
			}
			if err := d.Wait(); err != nil {
				t.Fatalf("exit: %v\n%s", err, d.Stderr())
			}
			if !strings.Contains(strings.Join(seen, " "), "BLOCK_JOB_CANCELLED") {
				t.Errorf("events before exit: %v", seen)
			}
			for _, img := range []string{"base.qcow2", "mid.qcow2", "top.qcow2"} {
				if out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img)).CombinedOutput(); err != nil {
					t.Errorf("%s after shutdown: %v\n%s", img, err, out)
				}
			}
			out, err := exec.Command("qemu-img", "info", filepath.Join(dir, "top.qcow2")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "backing file: mid.qcow2") {
				t.Errorf("top's backing changed by a cancelled commit: %s", out)
			}
		})
	}
}
