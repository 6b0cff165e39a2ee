package qmptest

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// waitJob polls query-jobs until the job has concluded, logs its entry
// (with error, if any) and dismisses it.
func (s *session) waitJob(id string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, _ := s.c.Command(s.tb, "query-jobs", nil)
		list, _ := r["return"].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			if m["id"] == id && m["status"] == "concluded" {
				s.observe("job %s concluded: error=%v progress=%v/%v", id, m["error"], m["current-progress"], m["total-progress"])
				s.OK("job-dismiss", map[string]any{"id": id})
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("[%s] job %s did not conclude: %v", s.name, id, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// observeFile logs a file's size and a digest of its bytes, so that two
// daemons' runs compare the created images byte for byte.
func (s *session) observeFile(name string) {
	s.t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, name))
	if err != nil {
		s.t.Fatal(err)
	}
	s.observe("%s: %d bytes, sha256 %x", name, len(b), sha256.Sum256(b))
}

// TestBlockdevCreateMatchesReference creates qcow2 images with every
// option blockd supports, on both daemons, and requires the same files
// byte for byte (and a clean qemu-img check), and files with each
// preallocation mode.
func TestBlockdevCreateMatchesReference(t *testing.T) {
	img := qemuTool(t, "qemu-img")
	cases := []map[string]any{
		{"size": 16 << 20},
		{"size": 1 << 30, "cluster-size": 4096},
		{"size": 100 << 20, "cluster-size": 2 << 20},
		{"size": 16 << 20, "version": "v2"},
		{"size": 16 << 20, "version": "v3", "lazy-refcounts": true},
		{"size": 16 << 20, "refcount-bits": 1},
		{"size": 16 << 20, "refcount-bits": 64},
		{"size": 16 << 20, "extended-l2": true},
		{"size": 16 << 20, "extended-l2": true, "cluster-size": 16384},
		{"size": 16 << 20, "compression-type": "zstd"},
		{"size": 16 << 20, "compression-type": "zlib"},
		{"size": 16 << 20, "backing-file": "base.raw", "backing-fmt": "raw"},
		{"size": 16 << 20, "backing-file": "base.raw"},
		{"size": 16 << 20, "version": "v2", "backing-file": "base.qcow2", "backing-fmt": "qcow2"},
		{"size": 0},
		{"size": 512, "cluster-size": 512},
		{"size": 16 << 20, "preallocation": "off"},
	}
	compareWithReference(t, func(t *testing.T, dir string) {
		for i := range cases {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("c%d.qcow2", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(img, "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "1M").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}, func(s *session) {
		for i, c := range cases {
			name := fmt.Sprintf("c%d.qcow2", i)
			node := fmt.Sprintf("f%d", i)
			s.OK("blockdev-add", map[string]any{"driver": "file", "node-name": node, "filename": filepath.Join(s.Dir, name)})
			opts := map[string]any{"driver": "qcow2", "file": node}
			for k, v := range c {
				opts[k] = v
			}
			s.OK("blockdev-create", map[string]any{"job-id": "j", "options": opts})
			s.waitJob("j")
			s.OK("blockdev-del", map[string]any{"node-name": node})
			s.observeFile(name)
			s.ToolOK(img, "check", "-q", name)
		}
		for _, p := range []string{"off", "falloc", "full"} {
			name := "p-" + p + ".raw"
			s.OK("blockdev-create", map[string]any{"job-id": "j", "options": map[string]any{
				"driver": "file", "filename": filepath.Join(s.Dir, name), "size": 3<<20 + 512,
				"preallocation": p, "nocow": true}})
			s.waitJob("j")
			s.observeFile(name)
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(s.Dir, name), &st); err != nil {
				s.t.Fatal(err)
			}
			s.observe("%s allocated in full: %v", name, st.Blocks*512 >= st.Size)
		}
		// Creating over an existing, longer file empties it first.
		s.OK("blockdev-create", map[string]any{"job-id": "j", "options": map[string]any{
			"driver": "file", "filename": filepath.Join(s.Dir, "p-full.raw"), "size": 4096}})
		s.waitJob("j")
		s.observeFile("p-full.raw")
		s.OK("blockdev-create", map[string]any{"job-id": "j", "options": map[string]any{
			"driver": "file", "filename": "/nonexistent/dir/x.raw", "size": 4096}})
		s.waitJob("j")
	})
}

// TestBlockdevCreateRefusesWhatBlockdLacks: external data files, encryption
// and qcow2 preallocation are refused with a clear text, and the target
// file stays as it was (qemu-storage-daemon supports them; docs/differences.md).
func TestBlockdevCreateRefusesWhatBlockdLacks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "t.qcow2")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, blockdBin, dir)
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	c.Negotiate(t)
	s := &session{t: t, tb: t, name: "blockd", Dir: dir, d: d, c: c}
	s.OK("blockdev-add", map[string]any{"driver": "file", "node-name": "f", "filename": target})
	for _, tc := range []struct {
		opt  map[string]any
		want string
	}{
		{map[string]any{"data-file": "f"}, "blockd does not support qcow2 external data files ('data-file')"},
		{map[string]any{"data-file-raw": true}, "blockd does not support qcow2 external data files ('data-file')"},
		{map[string]any{"encrypt": map[string]any{"format": "luks", "key-secret": "s"}}, "blockd does not support encrypted qcow2 images ('encrypt')"},
		{map[string]any{"preallocation": "metadata"}, "blockd creates qcow2 images with preallocation 'off' only"},
		{map[string]any{"file": map[string]any{"driver": "file", "filename": target}}, "blockd creates qcow2 images only on an existing node: 'file' must name it"},
	} {
		opts := map[string]any{"driver": "qcow2", "file": "f", "size": 1 << 20}
		for k, v := range tc.opt {
			opts[k] = v
		}
		s.OK("blockdev-create", map[string]any{"job-id": "j", "options": opts})
		r, _ := c.Command(t, "query-jobs", nil)
		list, _ := r["return"].([]any)
		if len(list) != 1 {
			t.Fatalf("query-jobs: %v", r)
		}
		j, _ := list[0].(map[string]any)
		if j["status"] != "concluded" || j["error"] != tc.want {
			t.Errorf("%v: job %v, want concluded with error %q", tc.opt, j, tc.want)
		}
		s.OK("job-dismiss", map[string]any{"id": "j"})
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("refused creations changed the file: %q", b)
	}
}
