package qmptest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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

// A burst of quorum reads that outvote one child, and of reads no
// version wins, made by an NBD client: the monitor gets the first
// QUORUM_REPORT_BAD and QUORUM_FAILURE at once and, a second later, the
// last of each, which happened during the burst; the rest are dropped.
func TestQuorumEventBurstLikeReference(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	setup := func(t *testing.T, dir string) {
		for name, b := range map[string]byte{"a": 0x11, "b": 0x11, "c": 0x22, "x": 1, "y": 2} {
			if err := os.WriteFile(filepath.Join(dir, name+".img"), bytes.Repeat([]byte{b}, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	scenario := func(s *session) {
		file := func(name string) map[string]any {
			return map[string]any{"driver": "file", "filename": filepath.Join(s.Dir, name+".img")}
		}
		s.OK("blockdev-add", map[string]any{"driver": "quorum", "node-name": "q", "vote-threshold": 2,
			"children": []any{file("a"), file("b"), file("c")}})
		s.OK("blockdev-add", map[string]any{"driver": "quorum", "node-name": "nq", "vote-threshold": 2,
			"children": []any{file("x"), file("y")}})
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "q"})
		s.OK("block-export-add", map[string]any{"type": "nbd", "id": "ne", "node-name": "nq"})
		nbd := func(export string, cmds ...string) {
			uri := "nbd+unix:///" + export + "?socket=" + filepath.Join(s.Dir, "nbd.sock")
			_, _ = exec.Command(qemuIO, append([]string{"-r", "-f", "raw", uri}, cmds...)...).CombinedOutput()
		}
		var reads []string
		for i := 0; i < 5; i++ {
			reads = append(reads, "-c", fmt.Sprintf("read %d 512", i*4096))
		}
		nbd("q", reads...)
		// A failed read ends the NBD connection, so one client a read.
		for i := 0; i < 5; i++ {
			nbd("nq", reads[2*i:2*i+2]...)
		}
		// What arrived before the next reply came at once: the burst is
		// far shorter than the one-second period.
		first := time.Now()
		_, now := s.c.Command(s.t, "query-version", nil)
		time.Sleep(1500*time.Millisecond - time.Since(first))
		_, later := s.c.Command(s.t, "query-version", nil)
		slices.SortFunc(later, func(a, b map[string]any) int { return strings.Compare(compact(a["data"]), compact(b["data"])) })
		for _, batch := range []struct {
			when string
			evs  []map[string]any
		}{{"at once", now}, {"a second later", later}} {
			for _, m := range batch.evs {
				ts := m["timestamp"].(map[string]any)
				at := time.Unix(int64(ts["seconds"].(float64)), int64(ts["microseconds"].(float64))*1000)
				s.observe("%s: %s %s, happened %s the burst's end", batch.when, m["event"], compact(m["data"]),
					map[bool]string{true: "before", false: "after"}[at.Before(first)])
			}
		}
	}
	compareWithReference(t, setup, scenario)
}

// A filter exported over a qcow2 overlay reads what the overlay's
// backing file holds where the overlay has nothing: the chain goes on
// below the filter. Reads and block status (qemu-img map) through NBD
// match qemu-storage-daemon's.
func TestFilterExportReadsBackingLikeReference(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	setup := func(t *testing.T, dir string) {
		for _, c := range []string{
			"qemu-img create -q -f qcow2 base.qcow2 1M",
			"qemu-io -f qcow2 -c 'write -P 0x11 0 256k' base.qcow2 >/dev/null",
			"qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2",
			"qemu-io -f qcow2 -c 'write -P 0x22 128k 64k' top.qcow2 >/dev/null",
		} {
			RunShell(t, dir, c, 0)
		}
	}
	scenario := func(s *session) {
		s.OK("object-add", map[string]any{"qom-type": "throttle-group", "id": "tg"})
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top", "read-only": true,
			"file": map[string]any{"driver": "file", "filename": filepath.Join(s.Dir, "top.qcow2")}})
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		for _, f := range []map[string]any{
			{"driver": "throttle", "node-name": "throttle", "throttle-group": "tg", "file": "top"},
			{"driver": "blkdebug", "node-name": "blkdebug", "image": "top"},
			{"driver": "blkverify", "node-name": "blkverify", "raw": "top", "test": "top"},
		} {
			name := f["node-name"].(string)
			s.OK("blockdev-add", f)
			s.OK("block-export-add", map[string]any{"type": "nbd", "id": name, "node-name": name})
			uri := "nbd+unix:///" + name + "?socket=" + filepath.Join(s.Dir, "nbd.sock")
			s.ToolOK(qemuIO, "-r", "-f", "raw", "-c", "read -P 0x11 0 128k", "-c", "read -P 0x22 128k 64k",
				"-c", "read -P 0x11 192k 64k", "-c", "read -P 0 256k 768k", uri)
			out, _ := s.Tool(qemuImg, "map", "--output=json", "-f", "raw", uri)
			s.observe("map of %s: %s", name, strings.Join(strings.Fields(out), " "))
			s.c.DeleteExport(s.t, name)
			s.OK("blockdev-del", map[string]any{"node-name": name})
		}
	}
	compareWithReference(t, setup, scenario)
}

// A 512-byte read through copy-on-read copies up the whole 64 KiB
// cluster of the overlay, as qemu-storage-daemon does: qemu-img map of
// the overlay shows the cluster allocated (also with subclusters), and a
// cluster of zeroes as a zero cluster.
func TestCopyOnReadRoundsToClustersLikeReference(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	cases := []struct{ name, baseWrite, topOpts string }{
		{"data", "write -P 0x11 0 256k", ""},
		{"subclusters", "write -P 0x11 0 256k", "-o extended_l2=on"},
		{"zeroes", "write -P 0 0 256k", ""},
	}
	setup := func(t *testing.T, dir string) {
		for _, c := range cases {
			for _, cmd := range []string{
				"qemu-img create -q -f qcow2 " + c.name + "-base.qcow2 1M",
				"qemu-io -f qcow2 -c '" + c.baseWrite + "' " + c.name + "-base.qcow2 >/dev/null",
				"qemu-img create -q -f qcow2 " + c.topOpts + " -b " + c.name + "-base.qcow2 -F qcow2 " + c.name + ".qcow2",
			} {
				RunShell(t, dir, cmd, 0)
			}
		}
	}
	scenario := func(s *session) {
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		for _, c := range cases {
			s.OK("blockdev-add", map[string]any{"driver": "copy-on-read", "node-name": "cor", "file": map[string]any{
				"driver": "qcow2", "node-name": "top", "file": map[string]any{"driver": "file", "filename": filepath.Join(s.Dir, c.name+".qcow2")}}})
			s.OK("block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "cor", "writable": true})
			s.ToolOK(qemuIO, "-f", "raw", "-c", "read 4608 512", "nbd+unix:///cor?socket="+filepath.Join(s.Dir, "nbd.sock"))
			s.c.DeleteExport(s.t, "e")
			s.OK("blockdev-del", map[string]any{"node-name": "cor"})
			out, ok := s.Tool(qemuImg, "map", "--output=json", `json:{"driver": "qcow2", "backing": null, "file": {"driver": "file", "filename": "`+
				filepath.Join(s.Dir, c.name+".qcow2")+`"}}`)
			if !ok {
				s.t.Fatalf("[%s] qemu-img map: %s", s.name, out)
			}
			s.observe("%s: map of the overlay alone: %s", c.name, strings.Join(strings.Fields(out), " "))
		}
	}
	compareWithReference(t, setup, scenario)
}

// blkdebug under qcow2: rules on qcow2's metadata events (l2_load,
// refblock_load, cluster_alloc, l1_update, l2_update, cow_read) arm errors when the
// qcow2 node above does that work, so the request that needs it fails
// with the injected errno, over NBD, as on qemu-storage-daemon. A rule
// with once is used up, and the same request then succeeds.
func TestBlkdebugQcow2EventsLikeReference(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	setup := func(t *testing.T, dir string) {
		for _, c := range []string{
			"qemu-img create -q -f qcow2 data.qcow2 4M",
			"qemu-io -f qcow2 -c 'write -P 0x11 0 64k' data.qcow2 >/dev/null",
			// One empty image a scenario: the first write's L2 table would
			// serve the others.
			"qemu-img create -q -f qcow2 e1.qcow2 4M",
			"qemu-img create -q -f qcow2 e2.qcow2 4M",
			"qemu-img create -q -f qcow2 e3.qcow2 4M",
			"qemu-img create -q -f qcow2 -b data.qcow2 -F qcow2 over.qcow2 4M",
		} {
			RunShell(t, dir, c, 0)
		}
	}
	// qemu-io's lines without the timing ones.
	results := func(out string) string {
		var keep []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.Contains(l, " ops; ") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, " | ")
	}
	scenario := func(s *session) {
		s.OK("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix",
			"data": map[string]any{"path": filepath.Join(s.Dir, "nbd.sock")}}})
		for i, c := range []struct {
			event, image string
			io           []string
		}{
			{"l2_load", "data", []string{"read -P 0x11 0 512", "read -P 0x11 0 512"}},
			{"refblock_load", "e1", []string{"write -P 0x22 0 4k", "write -P 0x22 0 4k", "read -P 0x22 0 4k"}},
			{"cluster_alloc", "e2", []string{"write -P 0x22 1M 4k", "write -P 0x22 1M 4k", "read -P 0x22 1M 4k"}},
			{"l1_update", "e3", []string{"write -P 0x22 2M 4k", "write -P 0x22 2M 4k", "read -P 0x22 2M 4k"}},
			{"l2_update", "data", []string{"write -P 0x33 64k 4k", "flush", "flush", "read -P 0x33 64k 4k"}},
			{"cow_read", "over", []string{"write -P 0x44 4k 4k", "write -P 0x44 4k 4k", "read -P 0x11 0 4k", "read -P 0x44 4k 4k"}},
		} {
			node := fmt.Sprintf("q%d", i)
			s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": node, "file": map[string]any{
				"driver": "blkdebug", "inject-error": []any{map[string]any{"event": c.event, "errno": 28, "once": true}},
				"image": map[string]any{"driver": "file", "filename": filepath.Join(s.Dir, c.image+".qcow2")}}})
			s.OK("block-export-add", map[string]any{"type": "nbd", "id": node, "node-name": node, "writable": true})
			args := []string{"-f", "raw"}
			for _, cmd := range c.io {
				args = append(args, "-c", cmd)
			}
			out, _ := s.Tool(qemuIO, append(args, "nbd+unix:///"+node+"?socket="+filepath.Join(s.Dir, "nbd.sock"))...)
			s.observe("%s: %s", c.event, results(out))
			s.c.DeleteExport(s.t, node)
			s.OK("blockdev-del", map[string]any{"node-name": node})
		}
	}
	compareWithReference(t, setup, scenario)
}
