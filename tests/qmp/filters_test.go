package qmptest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An error blkdebug injects into the source of a mirror reaches the job:
// BLOCK_JOB_ERROR names the read, then the job ends with the error
// (on-source-error report), or pauses (stop) and, the rule used up
// (once), completes after block-job-resume.
func TestBlkdebugErrorReachesMirror(t *testing.T) {
	for _, policy := range []string{"report", "stop"} {
		t.Run(policy, func(t *testing.T) {
			dir := t.TempDir()
			data := make([]byte, 4<<20)
			for i := range data {
				data[i] = byte(i / 4096)
			}
			if err := os.WriteFile(filepath.Join(dir, "src.img"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "dst.img"), make([]byte, len(data)), 0o644); err != nil {
				t.Fatal(err)
			}
			d := StartDaemon(t, blockdBin, dir)
			c := Dial(t, d.Sock)
			c.Negotiate(t)
			for _, args := range []map[string]any{
				{"driver": "raw", "node-name": "src", "file": map[string]any{"driver": "blkdebug",
					"inject-error": []any{map[string]any{"event": "read_aio", "sector": 2048, "once": true}},
					"image":        map[string]any{"driver": "file", "filename": filepath.Join(dir, "src.img")}}},
				{"driver": "raw", "node-name": "dst", "file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "dst.img")}},
			} {
				if r, _ := c.Command(t, "blockdev-add", args); r["return"] == nil {
					t.Fatalf("blockdev-add: %v", r)
				}
			}
			r, early := c.Command(t, "blockdev-mirror", map[string]any{"job-id": "m", "device": "src", "target": "dst",
				"sync": "full", "on-source-error": policy})
			if r["return"] == nil {
				t.Fatalf("blockdev-mirror: %v", r)
			}
			var errData map[string]any
			isErr := func(m map[string]any) bool {
				if m["event"] == "BLOCK_JOB_ERROR" {
					errData = m["data"].(map[string]any)
				}
				return errData != nil
			}
			var seen []string
			for _, m := range early {
				seen = append(seen, eventLabel(m))
				if isErr(m) {
					break
				}
			}
			if errData == nil {
				more, _ := eventsUntil(t, c, isErr)
				seen = append(seen, more...)
			}
			if errData["operation"] != "read" || errData["action"] != policy || errData["device"] != "m" {
				t.Fatalf("BLOCK_JOB_ERROR %v after %v", errData, seen)
			}
			if policy == "report" {
				_, m := eventsUntil(t, c, func(m map[string]any) bool { return m["event"] == "BLOCK_JOB_COMPLETED" })
				if e, _ := m["data"].(map[string]any)["error"].(string); e == "" {
					t.Fatalf("the job ended without its error: %v", m)
				}
				return
			}
			eventsUntil(t, c, func(m map[string]any) bool { return eventLabel(m) == "status:paused" })
			r, early = c.Command(t, "block-job-resume", map[string]any{"device": "m"})
			if r["return"] == nil {
				t.Fatalf("block-job-resume: %v", r)
			}
			ready := false
			for _, m := range early {
				ready = ready || m["event"] == "BLOCK_JOB_READY"
			}
			if !ready {
				eventsUntil(t, c, func(m map[string]any) bool { return m["event"] == "BLOCK_JOB_READY" })
			}
			r, early = c.Command(t, "block-job-complete", map[string]any{"device": "m"})
			if r["return"] == nil {
				t.Fatalf("block-job-complete: %v", r)
			}
			var done map[string]any
			for _, m := range early {
				if m["event"] == "BLOCK_JOB_COMPLETED" {
					done = m
				}
			}
			if done == nil {
				seen, done = eventsUntil(t, c, func(m map[string]any) bool { return m["event"] == "BLOCK_JOB_COMPLETED" })
			}
			if _, failed := done["data"].(map[string]any)["error"]; failed {
				t.Fatalf("mirror failed after resume: %v (%s)", done, strings.Join(seen, " "))
			}
			c.Command(t, "quit", nil)
			if err := d.Wait(); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "dst.img"))
			if string(got) != string(data) {
				t.Fatal("the mirror's target differs from its source after the retried read")
			}
		})
	}
}
