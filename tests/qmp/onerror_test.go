package qmptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// enospcChain puts base on a 3 MiB tmpfs, so committing 8 MiB into it
// runs out of space: a real I/O error for the on-error policies.
func enospcChain(t *testing.T) string {
	t.Helper()
	requireQemuImg(t)
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("SKIPPING: cannot mount a small tmpfs for ENOSPC (%v: %s); needs root", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
	for _, cmd := range []string{
		"qemu-img create -q -f qcow2 small/base.qcow2 16M",
		"qemu-img create -q -f qcow2 -b small/base.qcow2 -F qcow2 mid.qcow2",
		"qemu-io -f qcow2 -c 'write -P 0x22 0 8M' mid.qcow2 >/dev/null",
		"qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
	} {
		RunShell(t, dir, cmd, 0)
	}
	return dir
}

// events reads messages until one satisfies stop, returning event names
// (JOB_STATUS_CHANGE as "status:<s>") and the last message.
func eventsUntil(t *testing.T, c *Client, stop func(map[string]any) bool) ([]string, map[string]any) {
	t.Helper()
	var seen []string
	for {
		m, raw, err := c.Next()
		if err != nil {
			t.Fatalf("%v (%q) after %v", err, raw, seen)
		}
		if _, ok := m["event"]; ok {
			seen = append(seen, eventLabel(m))
		}
		if stop(m) {
			return seen, m
		}
	}
}

// eventLabel names an event for sequence checks: JOB_STATUS_CHANGE as
// "status:<status>", others by name.
func eventLabel(m map[string]any) string {
	e, _ := m["event"].(string)
	if e == "JOB_STATUS_CHANGE" {
		return "status:" + m["data"].(map[string]any)["status"].(string)
	}
	return e
}

// startENOSPCCommit starts a commit into the too-small base with the given
// on-error policy.
func startENOSPCCommit(t *testing.T, policy string) (*Daemon, *Client) {
	t.Helper()
	dir := enospcChain(t)
	d := StartDaemon(t, blockdBin, dir)
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	addTop(t, c, dir)
	args := commitArgs(dir)
	args["on-error"] = policy
	if r, _ := c.Command(t, "block-commit", args); r["return"] == nil {
		t.Fatalf("block-commit: %v", r)
	}
	return d, c
}

// The sequences are qemu-storage-daemon 7.2's for the same images.
func TestOnErrorReport(t *testing.T) {
	d, c := startENOSPCCommit(t, "report")
	defer d.Stop(t)
	defer c.Close()
	seen, last := eventsUntil(t, c, func(m map[string]any) bool { return m["event"] == "BLOCK_JOB_COMPLETED" })
	data := last["data"].(map[string]any)
	if data["error"] != "No space left on device" {
		t.Fatalf("completed with %v", data)
	}
	want := "BLOCK_JOB_ERROR status:aborting BLOCK_JOB_COMPLETED"
	if got := strings.Join(seen, " "); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestOnErrorStopPausesThenCancels(t *testing.T) {
	d, c := startENOSPCCommit(t, "stop")
	defer d.Stop(t)
	defer c.Close()
	seen, last := eventsUntil(t, c, func(m map[string]any) bool {
		return m["event"] == "JOB_STATUS_CHANGE" && m["data"].(map[string]any)["status"] == "paused"
	})
	if strings.Join(seen, " ") != "BLOCK_JOB_ERROR status:paused" {
		t.Fatalf("events %v (%v)", seen, last)
	}
	time.Sleep(50 * time.Millisecond)
	r, _ := c.Command(t, "query-block-jobs", nil)
	jobs := r["return"].([]any)
	job := jobs[0].(map[string]any)
	if job["io-status"] != "nospace" || job["paused"] != true || job["status"] != "paused" {
		t.Fatalf("query-block-jobs %v", job)
	}
	r, evs := c.Command(t, "block-job-cancel", map[string]any{"device": "j1", "force": true})
	if r["return"] == nil {
		t.Fatalf("cancel: %v", r)
	}
	var names []string
	for _, e := range evs {
		names = append(names, eventLabel(e))
	}
	want := "status:running status:aborting BLOCK_JOB_CANCELLED status:concluded status:null"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("cancel events before the reply %q, want %q", got, want)
	}
}

// on-error=enospc stops on ENOSPC like stop (block_job_error_action).
func TestOnErrorEnospcStopsOnENOSPC(t *testing.T) {
	d, c := startENOSPCCommit(t, "enospc")
	defer d.Stop(t)
	defer c.Close()
	var errData map[string]any
	seen, _ := eventsUntil(t, c, func(m map[string]any) bool {
		if m["event"] == "BLOCK_JOB_ERROR" {
			errData = m["data"].(map[string]any)
		}
		return m["event"] == "JOB_STATUS_CHANGE" && m["data"].(map[string]any)["status"] == "paused"
	})
	if strings.Join(seen, " ") != "BLOCK_JOB_ERROR status:paused" || errData["action"] != "stop" {
		t.Fatalf("events %v, error %v", seen, errData)
	}
	r, _ := c.Command(t, "query-block-jobs", nil)
	if job := r["return"].([]any)[0].(map[string]any); job["io-status"] != "nospace" {
		t.Fatalf("query-block-jobs %v", job)
	}
	if r, _ := c.Command(t, "block-job-cancel", map[string]any{"device": "j1", "force": true}); r["return"] == nil {
		t.Fatalf("cancel: %v", r)
	}
}

// on-error=enospc reports any other error and the job ends with it: here
// the base image may not grow past the process's file size limit (EFBIG).
func TestOnErrorEnospcReportsOtherErrors(t *testing.T) {
	requireQemuImg(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("SKIPPING: prlimit (util-linux) not installed; cannot provoke EFBIG")
	}
	dir := t.TempDir()
	for _, cmd := range []string{
		"qemu-img create -q -f qcow2 base.qcow2 16M",
		"qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2",
		"qemu-io -f qcow2 -c 'write -P 0x22 0 8M' mid.qcow2 >/dev/null",
		"qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
	} {
		RunShell(t, dir, cmd, 0)
	}
	// prlimit execs blockd in its place, so signals reach blockd itself.
	wrapper := filepath.Join(dir, "blockd-fsize")
	script := "#!/bin/sh\nexec prlimit --fsize=3145728 " + blockdBin + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, wrapper, dir)
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	c.Negotiate(t)
	addTop(t, c, dir)
	args := commitArgs(dir)
	args["on-error"] = "enospc"
	if r, _ := c.Command(t, "block-commit", args); r["return"] == nil {
		t.Fatalf("block-commit: %v", r)
	}
	var errData map[string]any
	seen, last := eventsUntil(t, c, func(m map[string]any) bool {
		if m["event"] == "BLOCK_JOB_ERROR" {
			errData = m["data"].(map[string]any)
		}
		return m["event"] == "BLOCK_JOB_COMPLETED"
	})
	if want := "BLOCK_JOB_ERROR status:aborting BLOCK_JOB_COMPLETED"; strings.Join(seen, " ") != want {
		t.Fatalf("events %v, want %s", seen, want)
	}
	if errData["action"] != "report" || errData["operation"] != "write" {
		t.Fatalf("BLOCK_JOB_ERROR %v", errData)
	}
	if msg := last["data"].(map[string]any)["error"]; msg != "File too large" {
		t.Fatalf("completed with error %v", msg)
	}
}
