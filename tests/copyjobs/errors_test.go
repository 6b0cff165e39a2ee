package copyjobs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	qmptest "blockd/tests/qmp"
)

// Error injection without a test driver: the job's write side lives on
// a 3 MiB tmpfs, so copying 8 MiB into it fails with ENOSPC, a real I/O
// error. Each job runs with on-error (stream) or on-target-error (mirror,
// backup) report and then enospc, on blockd and, when installed, on
// qemu-storage-daemon: the event sequences and the error must be the
// same.

// smallFS mounts a 3 MiB tmpfs at dir/small, or skips (it needs root).
func smallFS(t *testing.T, dir string) {
	t.Helper()
	small := filepath.Join(dir, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("SKIPPING: cannot mount a small tmpfs for ENOSPC (%v: %s); needs root", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
}

// errorJob sets up images in dir and returns the commands that start a
// job whose I/O fails, with policy as its error policy.
type errorJob struct {
	name  string
	op    string   // BLOCK_JOB_ERROR's operation: stream reports its copy-on-read as a read
	setup []string // shell commands in dir
	start func(policy string) [][2]any
	// injected: the error comes from a blkdebug rule (once), not from a
	// small file system, so a stopped job is resumed and must finish.
	injected bool
	// verify runs in dir (shell) once a job finished without error and
	// the daemon is gone: the copy must be whole despite the error.
	verify string
}

var errorJobs = []errorJob{
	{
		name: "stream",
		op:   "read",
		setup: []string{
			"qemu-img create -q -f qcow2 base.qcow2 16M && qemu-io -f qcow2 -c 'write -P 0x11 0 8M' base.qcow2 >/dev/null",
			"qemu-img create -q -f qcow2 -b $PWD/base.qcow2 -F qcow2 small/top.qcow2",
		},
		start: func(policy string) [][2]any {
			return [][2]any{
				{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
					"file": map[string]any{"driver": "file", "filename": "small/top.qcow2"}}},
				{"block-stream", map[string]any{"job-id": "j", "device": "top", "on-error": policy}},
			}
		},
	},
	{
		name: "mirror",
		op:   "write",
		setup: []string{
			"qemu-img create -q -f qcow2 src.qcow2 16M && qemu-io -f qcow2 -c 'write -P 0x11 0 8M' src.qcow2 >/dev/null",
			"qemu-img create -q -f qcow2 small/dst.qcow2 16M",
		},
		start: func(policy string) [][2]any {
			return [][2]any{
				{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "src",
					"file": map[string]any{"driver": "file", "filename": "src.qcow2"}}},
				{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "dst",
					"file": map[string]any{"driver": "file", "filename": "small/dst.qcow2"}}},
				{"blockdev-mirror", map[string]any{"job-id": "j", "device": "src", "target": "dst", "sync": "full",
					"on-target-error": policy}},
			}
		},
	},
	{
		name: "backup",
		op:   "write",
		setup: []string{
			"qemu-img create -q -f qcow2 src.qcow2 16M && qemu-io -f qcow2 -c 'write -P 0x11 0 8M' src.qcow2 >/dev/null",
			"qemu-img create -q -f qcow2 small/dst.qcow2 16M",
		},
		start: func(policy string) [][2]any {
			return [][2]any{
				{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "src",
					"file": map[string]any{"driver": "file", "filename": "src.qcow2"}}},
				{"blockdev-add", map[string]any{"driver": "qcow2", "node-name": "dst",
					"file": map[string]any{"driver": "file", "filename": "small/dst.qcow2"}}},
				{"blockdev-backup", map[string]any{"job-id": "j", "device": "src", "target": "dst", "sync": "full",
					"on-target-error": policy}},
			}
		},
	},
}

// runErrorJob runs one job on bin and returns the event labels up to the
// job's end (report) or its pause (enospc, then cancelled), the first
// BLOCK_JOB_ERROR's data and the end's error text. ref is nil on blockd
// and the reference run's CrashAware on qemu-storage-daemon.
func runErrorJob(t *testing.T, bin string, job errorJob, policy string, ref *qmptest.CrashAware) (labels []string, jobErr map[string]any, text string) {
	t.Helper()
	dir := t.TempDir()
	if !job.injected {
		smallFS(t, dir)
	}
	for _, cmd := range job.setup {
		c := exec.Command("sh", "-c", cmd)
		c.Dir = dir
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
	d := qmptest.StartDaemon(t, bin, dir)
	// What fails from here on, fails through tb: for the reference, a
	// crash of the daemon is told apart.
	tb := testing.TB(t)
	if ref != nil {
		ref.D, tb = d, ref
	}
	defer ref.StopUnlessCrashed(t, d)
	c := qmptest.Dial(tb, d.Sock)
	defer c.Close()
	c.Command(tb, "qmp_capabilities", nil)
	var pending []map[string]any
	for _, cmd := range job.start(policy) {
		rep, evs := c.Command(tb, cmd[0].(string), cmd[1])
		if rep["error"] != nil {
			tb.Fatalf("%s: %v", cmd[0], rep["error"])
		}
		pending = append(pending, evs...)
	}
	next := func() map[string]any {
		if len(pending) > 0 {
			m := pending[0]
			pending = pending[1:]
			return m
		}
		m, raw, err := c.Next()
		if err != nil {
			tb.Fatalf("%v (%q) after %v", err, raw, labels)
		}
		return m
	}
	for {
		m := next()
		ev, _ := m["event"].(string)
		if ev == "" {
			continue
		}
		data, _ := m["data"].(map[string]any)
		label := ev
		if ev == "JOB_STATUS_CHANGE" {
			label = fmt.Sprintf("status:%v", data["status"])
		}
		labels = append(labels, label)
		switch {
		case ev == "BLOCK_JOB_ERROR" && jobErr == nil:
			jobErr = data
		case ev == "BLOCK_JOB_COMPLETED":
			e, failed := data["error"].(string)
			text += e
			if !failed && job.verify != "" {
				d.Stop(t)
				v := exec.Command("sh", "-c", job.verify)
				v.Dir = dir
				if out, err := v.CombinedOutput(); err != nil {
					t.Fatalf("after the job: %s: %v\n%s", job.verify, err, out)
				}
			}
			return labels, jobErr, text
		case ev == "BLOCK_JOB_READY":
			_, evs := c.Command(tb, "block-job-complete", map[string]any{"device": "j"})
			pending = append(pending, evs...)
		case label == "status:paused" && jobErr != nil && text == "":
			r, _ := c.Command(tb, "query-block-jobs", nil)
			if jobs, _ := r["return"].([]any); len(jobs) == 1 {
				j := jobs[0].(map[string]any)
				text = fmt.Sprintf("io-status %v", j["io-status"])
			}
			// Resumed past an injected error (it fires once), or
			// cancelled: read on until the job is gone.
			cmd, args := "block-job-cancel", map[string]any{"device": "j", "force": true}
			if job.injected {
				cmd, args = "block-job-resume", map[string]any{"device": "j"}
			}
			_, evs := c.Command(tb, cmd, args)
			pending = append(pending, evs...)
		case label == "status:null":
			return labels, jobErr, text
		}
	}
}

// squash drops the pause/resume pairs a drained section adds, which the
// reference shows or not depending on timing, and repeats of
// BLOCK_JOB_ERROR: the reference's mirror reports each failed request in
// flight, blockd the first.
func squash(labels []string) string {
	var out []string
	for i := 0; i < len(labels); i++ {
		if labels[i] == "status:paused" && i+1 < len(labels) && labels[i+1] == "status:running" {
			i++
			continue
		}
		if labels[i] == "BLOCK_JOB_ERROR" && len(out) > 0 && out[len(out)-1] == "BLOCK_JOB_ERROR" {
			continue
		}
		out = append(out, labels[i])
	}
	return strings.Join(out, " ")
}

func TestJobsReportENOSPC(t *testing.T) {
	for _, job := range errorJobs {
		t.Run(job.name, func(t *testing.T) {
			labels, jobErr, text := runErrorJob(t, blockdBin, job, "report", nil)
			if text != "No space left on device" {
				t.Fatalf("job ended with %q (events %v)", text, labels)
			}
			if jobErr == nil || jobErr["operation"] != job.op || jobErr["action"] != "report" {
				t.Fatalf("BLOCK_JOB_ERROR %v (events %v)", jobErr, labels)
			}
			compareWithReference(t, job, "report", labels, jobErr, text)
		})
	}
}

func TestJobsStopOnENOSPC(t *testing.T) {
	for _, job := range errorJobs {
		t.Run(job.name, func(t *testing.T) {
			labels, jobErr, text := runErrorJob(t, blockdBin, job, "enospc", nil)
			if text != "io-status nospace" {
				t.Fatalf("paused job shows %q (events %v)", text, labels)
			}
			if jobErr == nil || jobErr["operation"] != job.op || jobErr["action"] != "stop" {
				t.Fatalf("BLOCK_JOB_ERROR %v (events %v)", jobErr, labels)
			}
			if !strings.Contains(strings.Join(labels, " "), "BLOCK_JOB_CANCELLED") {
				t.Fatalf("no BLOCK_JOB_CANCELLED after the cancel: %v", labels)
			}
			compareWithReference(t, job, "enospc", labels, jobErr, text)
		})
	}
}

// blkdebugNode is a qcow2 node over a blkdebug filter that fails the
// first request of kind event ("read_aio" or "write_aio") touching the
// file's second MiB with EIO.
func blkdebugNode(name, file, event string) map[string]any {
	return map[string]any{"driver": "qcow2", "node-name": name, "file": map[string]any{
		"driver":       "blkdebug",
		"inject-error": []any{map[string]any{"event": event, "errno": 5, "sector": 2048, "once": true}},
		"image":        map[string]any{"driver": "file", "filename": file}}}
}

func qcow2Node(name, file string) map[string]any {
	return map[string]any{"driver": "qcow2", "node-name": name, "file": map[string]any{"driver": "file", "filename": file}}
}

const (
	eioSource = "qemu-img create -q -f qcow2 src.qcow2 16M && qemu-io -f qcow2 -c 'write -P 0x11 0 8M' src.qcow2 >/dev/null"
	eioTarget = "qemu-img create -q -f qcow2 dst.qcow2 16M"
	eioVerify = "qemu-img compare src.qcow2 dst.qcow2 && qemu-img check -q dst.qcow2"
)

// The reference's iotests that inject errors with blkdebug: 030 TestEIO
// (stream reading a failing backing file), 041 TestReadErrors and
// TestWriteErrors (mirror, failing source and target), and the same
// target failure for backup (055's error cases run through a guest).
var eioJobs = []errorJob{
	{
		name: "stream_backing_read", op: "read", injected: true,
		verify: "qemu-img compare top.qcow2 src.qcow2 && ! qemu-img info top.qcow2 | grep -q backing",
		setup:  []string{eioSource, "qemu-img create -q -f qcow2 -b $PWD/src.qcow2 -F qcow2 top.qcow2"},
		start: func(policy string) [][2]any {
			top := qcow2Node("top", "top.qcow2")
			top["backing"] = "base"
			return [][2]any{
				{"blockdev-add", blkdebugNode("base", "src.qcow2", "read_aio")},
				{"blockdev-add", top},
				{"block-stream", map[string]any{"job-id": "j", "device": "top", "on-error": policy}},
			}
		},
	},
	eioCopyJob("mirror_source_read", "blockdev-mirror", "on-source-error", "src"),
	eioCopyJob("mirror_target_write", "blockdev-mirror", "on-target-error", "dst"),
	eioCopyJob("backup_target_write", "blockdev-backup", "on-target-error", "dst"),
}

// eioCopyJob is a sync=full copy (cmd) from src.qcow2 to dst.qcow2 whose
// node failing (src reads or dst writes) fails once; policyArg names the
// error policy that applies.
func eioCopyJob(name, cmd, policyArg, failing string) errorJob {
	op, event := "read", "read_aio"
	if failing == "dst" {
		op, event = "write", "write_aio"
	}
	node := func(n string) map[string]any {
		if n == failing {
			return blkdebugNode(n, n+".qcow2", event)
		}
		return qcow2Node(n, n+".qcow2")
	}
	return errorJob{
		name: name, op: op, injected: true, verify: eioVerify,
		setup: []string{eioSource, eioTarget},
		start: func(policy string) [][2]any {
			return [][2]any{
				{"blockdev-add", node("src")},
				{"blockdev-add", node("dst")},
				{cmd, map[string]any{"job-id": "j", "device": "src", "target": "dst", "sync": "full", policyArg: policy}},
			}
		},
	}
}

// compareWithReference runs job on qemu-storage-daemon, when installed,
// and wants the same events (squashed), BLOCK_JOB_ERROR and outcome.
func compareWithReference(t *testing.T, job errorJob, policy string, labels []string, jobErr map[string]any, text string) {
	t.Helper()
	t.Logf("blockd: %s; %v; %q", squash(labels), jobErr, text)
	qsd := qmptest.QemuTool(t, "qemu-storage-daemon")
	var ref []string
	var refErr map[string]any
	var refText string
	qmptest.RetryReferenceCrash(t, func(ca *qmptest.CrashAware) {
		ref, refErr, refText = runErrorJob(t, qsd, job, policy, ca)
	})
	if squash(ref) != squash(labels) || refText != text || fmt.Sprint(refErr) != fmt.Sprint(jobErr) {
		t.Fatalf("blockd: %v %v %q\nreference: %v %v %q", labels, jobErr, text, ref, refErr, refText)
	}
}

// on-error=report: the job ends with the injected error.
func TestJobsReportEIO(t *testing.T) {
	for _, job := range eioJobs {
		t.Run(job.name, func(t *testing.T) {
			labels, jobErr, text := runErrorJob(t, blockdBin, job, "report", nil)
			if text != "Input/output error" || jobErr == nil || jobErr["operation"] != job.op || jobErr["action"] != "report" {
				t.Fatalf("ended with %q, BLOCK_JOB_ERROR %v (events %v)", text, jobErr, labels)
			}
			compareWithReference(t, job, "report", labels, jobErr, text)
		})
	}
}

// on-error=stop: the job pauses with io-status failed; resumed, it
// retries (the rule fired once) and completes.
func TestJobsStopOnEIOAndResume(t *testing.T) {
	for _, job := range eioJobs {
		t.Run(job.name, func(t *testing.T) {
			labels, jobErr, text := runErrorJob(t, blockdBin, job, "stop", nil)
			all := strings.Join(labels, " ")
			if text != "io-status failed" || jobErr == nil || jobErr["operation"] != job.op || jobErr["action"] != "stop" ||
				!strings.Contains(all, "BLOCK_JOB_COMPLETED") {
				t.Fatalf("paused with %q, BLOCK_JOB_ERROR %v (events %v)", text, jobErr, labels)
			}
			compareWithReference(t, job, "stop", labels, jobErr, text)
		})
	}
}
