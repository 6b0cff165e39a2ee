package qmptest

import (
	"path/filepath"
	"testing"
	"time"
)

// A copy job cancelled while it runs leaves the image locks as
// qemu-storage-daemon leaves them, which are those of the chain as it was
// opened: the job's edges go, then its filter, and the nodes below the
// filter relax even when the job's edge was the filter's last parent.
func TestCancelledJobsLeaveChainLocksAsReference(t *testing.T) {
	jobs := []struct {
		name, cmd string
		args      map[string]any
	}{
		{"mirror", "blockdev-mirror", map[string]any{"device": "top", "target": "dst", "sync": "full"}},
		{"stream", "block-stream", map[string]any{"device": "top"}},
		{"backup", "blockdev-backup", map[string]any{"device": "top", "target": "dst", "sync": "full"}},
		{"commit", "block-commit", map[string]any{"device": "top", "top-node": "mid", "base-node": "base"}},
	}
	for _, j := range jobs {
		t.Run(j.name, func(t *testing.T) {
			setup := func(t *testing.T, dir string) {
				chain(t, dir)
				RunShell(t, dir, "qemu-io -f qcow2 -c 'write -P 0x33 0 4M' mid.qcow2 >/dev/null", 0)
				RunShell(t, dir, "qemu-img create -q -f qcow2 dst.qcow2 8M", 0)
			}
			compareWithReference(t, setup, func(s *session) {
				file := func(name string) map[string]any {
					return map[string]any{"driver": "file", "node-name": name + "-file", "filename": filepath.Join(s.Dir, name+".qcow2")}
				}
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "base", "file": file("base")})
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "mid", "backing": "base", "file": file("mid")})
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top", "backing": "mid", "file": file("top")})
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "dst", "file": file("dst")})
				s.observeLocks("as opened")
				args := map[string]any{"job-id": "j", "speed": 1, "filter-node-name": "flt"}
				for k, v := range j.args {
					args[k] = v
				}
				s.OK(j.cmd, args)
				s.observeLocks("while the job runs")
				s.OK("block-job-cancel", map[string]any{"device": "j", "force": true})
				s.waitGone("j")
				s.observeLocks("after cancel")
				s.Graph()
			})
		})
	}
}

// waitGone polls query-jobs until job id has gone (auto-dismissed),
// logging nothing: when it ends depends on timing, not on behaviour.
func (s *session) waitGone(id string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, _ := s.c.Command(s.tb, "query-jobs", nil)
		list, _ := r["return"].([]any)
		found := false
		for _, e := range list {
			if m, _ := e.(map[string]any); m["id"] == id {
				found = true
			}
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("[%s] job %s did not go: %v", s.name, id, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
