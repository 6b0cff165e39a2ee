package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fullGraph is x-debug-query-block-graph by node name: nodes and edges
// with their permissions, which decide the image locks.
func fullGraph(t *testing.T, d *daemon) string {
	t.Helper()
	r, err := d.owner.Call(context.Background(), "x-debug-query-block-graph", nil)
	if err != nil {
		t.Fatal(err)
	}
	var gr struct {
		Nodes []struct {
			ID   int
			Name string
		}
		Edges []struct {
			Parent, Child int
			Name          string
			Perm          []string
			SharedPerm    []string `json:"shared-perm"`
		}
	}
	if err := json.Unmarshal(r, &gr); err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	var out []string
	for _, n := range gr.Nodes {
		names[n.ID] = n.Name
		out = append(out, "node "+n.Name)
	}
	for _, e := range gr.Edges {
		out = append(out, fmt.Sprintf("%s -%s-> %s perm %v shared %v", names[e.Parent], e.Name, names[e.Child], e.Perm, e.SharedPerm))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// A copy job cancelled while it runs leaves the graph, permissions
// included, as the same images opened afresh have it: its edges go, then
// its filter, which closes with the job's last edge when nothing else
// held it, and the nodes below it relax.
func TestCancelledCopyJobsLeaveTheGraphAsOpened(t *testing.T) {
	jobs := []struct {
		name, cmd string
		args      map[string]any
	}{
		{"mirror", "blockdev-mirror", map[string]any{"device": "top", "target": "dst", "sync": "full"}},
		{"mirror-write-blocking", "blockdev-mirror", map[string]any{"device": "top", "target": "dst", "sync": "full", "copy-mode": "write-blocking"}},
		{"stream", "block-stream", map[string]any{"device": "top"}},
		{"backup", "blockdev-backup", map[string]any{"device": "top", "target": "dst", "sync": "full"}},
		{"commit", "block-commit", map[string]any{"device": "top", "top-node": "mid", "base-node": "base"}},
	}
	for _, j := range jobs {
		t.Run(j.name, func(t *testing.T) {
			const size = 16 << 20
			dir := t.TempDir()
			base, mid, top, dst := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"),
				filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "dst.qcow2")
			image(t, base, size, "", map[int64][]byte{0: pattern(0x11, 8<<20)})
			image(t, mid, size, base, map[int64][]byte{4 << 20: pattern(0x22, 8<<20)})
			image(t, top, size, mid, map[int64][]byte{1 << 20: pattern(0x33, 1<<20)})
			image(t, dst, size, "", nil)
			d := newDaemon(t)
			d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "base",
				"file": map[string]any{"driver": "file", "filename": base, "node-name": "base-file"}})
			d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "mid", "backing": "base",
				"file": map[string]any{"driver": "file", "filename": mid, "node-name": "mid-file"}})
			d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top", "backing": "mid",
				"file": map[string]any{"driver": "file", "filename": top, "node-name": "top-file"}})
			d.call(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "dst",
				"file": map[string]any{"driver": "file", "filename": dst, "node-name": "dst-file"}})
			before := fullGraph(t, d)
			args := map[string]any{"job-id": "j", "speed": 1 << 20, "filter-node-name": "flt"}
			for k, v := range j.args {
				args[k] = v
			}
			d.call(t, j.cmd, args)
			if during := fullGraph(t, d); !strings.Contains(during, "node flt") {
				t.Fatalf("the job's filter is not in the graph:\n%s", during)
			}
			d.call(t, "block-job-cancel", map[string]any{"device": "j", "force": true})
			d.waitEvent(t, "BLOCK_JOB_CANCELLED")
			if logs := d.logs.All(); len(logs) > 0 {
				t.Fatalf("cancel logged %d problems, first: %s %v", len(logs), logs[0].Message, logs[0].ContextMap())
			}
			if after := fullGraph(t, d); after != before {
				t.Fatalf("graph after cancel differs from the graph as opened:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
