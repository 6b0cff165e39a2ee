package qmptest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"blockd/drivers/file"
	"blockd/drivers/qcow2"
)

// The image locks a daemon holds on a deep backing chain are exactly
// qemu-storage-daemon's: after opening the chain with one blockdev-add,
// after reopening its top read-only and back, after reopening a node in
// the middle read-write and back, after a snapshot on top of it, and
// after deleting the overlay and the chain, every open file description of the daemon
// holds the same lock bytes as the reference's. The locks are read from
// /proc/PID/fdinfo, which lists each description's own locks.

// chainSetup creates l0.qcow2 ... l<depth-1>.qcow2, each backed by the
// previous one, and an empty overlay ov.qcow2 for the snapshot.
func chainSetup(depth int) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		create := func(p, backing string) {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := file.Open(file.Options{Filename: p})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			o := qcow2.CreateOptions{Size: 64 << 20}
			if backing != "" {
				o.BackingFile, o.BackingFormat = backing, "qcow2"
			}
			if err := qcow2.Create(f, o); err != nil {
				t.Fatal(err)
			}
		}
		prev := ""
		for i := range depth {
			p := filepath.Join(dir, fmt.Sprintf("l%d.qcow2", i))
			create(p, prev)
			prev = p
		}
		create(filepath.Join(dir, "ov.qcow2"), "")
	}
}

// observeLocks logs, for every open file of the daemon inside its
// directory, the lock ranges its description holds, sorted by name.
func (s *session) observeLocks(label string) {
	s.t.Helper()
	pid := s.d.Pid()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		s.t.Fatal(err)
	}
	var entries []string
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil || !strings.HasPrefix(target, s.Dir+"/") {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			s.t.Fatal(err)
		}
		var ranges []string
		for _, line := range strings.Split(string(info), "\n") {
			// lock:	1: OFDLCK  ADVISORY  READ  -1 08:01:1234 100 100
			f := strings.Fields(line)
			if len(f) < 9 || f[0] != "lock:" {
				continue
			}
			ranges = append(ranges, fmt.Sprintf("%s %s %s-%s", f[2], f[4], f[7], f[8]))
		}
		slices.Sort(ranges)
		entries = append(entries, filepath.Base(target)+"["+strings.Join(ranges, ",")+"]")
	}
	slices.Sort(entries)
	if len(entries) == 0 {
		entries = []string{"none"}
	}
	s.observe("locks %s: %s", label, strings.Join(entries, " "))
}

// nodeOf names the node with driver drv on the image file, found without
// logging the query (its reply is not what these tests compare).
func (s *session) nodeOf(drv, filename string) string {
	s.t.Helper()
	r, _ := s.c.Command(s.tb, "query-named-block-nodes", map[string]any{"flat": true})
	list, _ := r["return"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["drv"] == drv && m["file"] == filename {
			name, _ := m["node-name"].(string)
			return name
		}
	}
	s.t.Fatalf("[%s] no %s node on %s", s.name, drv, filename)
	return ""
}

func TestChainLocksMatchReference(t *testing.T) {
	for _, depth := range []int{1, 10, 200} {
		t.Run(fmt.Sprint("depth", depth), func(t *testing.T) {
			compareWithReference(t, chainSetup(depth), func(s *session) {
				top := filepath.Join(s.Dir, fmt.Sprintf("l%d.qcow2", depth-1))
				topFile := map[string]any{"driver": "file", "node-name": "top-file", "filename": top}
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top", "file": topFile})
				s.observeLocks("after open")

				var backing any = nil
				if depth > 1 {
					backing = s.nodeOf("qcow2", filepath.Join(s.Dir, fmt.Sprintf("l%d.qcow2", depth-2)))
				}
				reopen := func(ro bool) {
					s.OK("blockdev-reopen", map[string]any{"options": []any{map[string]any{
						"driver": "qcow2", "node-name": "top", "read-only": ro,
						"file": "top-file", "backing": backing}}})
				}
				reopen(true)
				s.observeLocks("after reopen read-only")
				reopen(false)
				s.observeLocks("after reopen read-write")

				ov := filepath.Join(s.Dir, "ov.qcow2")
				s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "ov", "backing": nil,
					"file": map[string]any{"driver": "file", "filename": ov}})
				s.OK("blockdev-snapshot", map[string]any{"node": "top", "overlay": "ov"})
				s.observeLocks("after snapshot")

				s.OK("blockdev-del", map[string]any{"node-name": "ov"})
				s.observeLocks("after deleting the overlay")
				s.OK("blockdev-del", map[string]any{"node-name": "top"})
				s.observeLocks("after deleting the chain")
			})
		})
	}
}

// The same for a chain built the way management software builds one: a
// blockdev-add per image, each naming the previous one as its backing,
// only the top writable; then a node in the middle reopened read-write
// and read-only again, and the top deleted.
func TestExplicitChainLocksMatchReference(t *testing.T) {
	for _, depth := range []int{1, 10, 200} {
		t.Run(fmt.Sprint("depth", depth), func(t *testing.T) {
			compareWithReference(t, chainSetup(depth), func(s *session) {
				img := func(i int) string { return filepath.Join(s.Dir, fmt.Sprintf("l%d.qcow2", i)) }
				node := func(i int) map[string]any {
					var backing any = nil
					if i > 0 {
						backing = fmt.Sprint("n", i-1)
					}
					return map[string]any{"driver": "qcow2", "node-name": fmt.Sprint("n", i),
						"read-only": i < depth-1, "file": fmt.Sprint("f", i), "backing": backing}
				}
				fileNode := func(i int) map[string]any {
					return map[string]any{"driver": "file", "node-name": fmt.Sprint("f", i),
						"read-only": i < depth-1, "filename": img(i)}
				}
				for i := range depth {
					s.OK("blockdev-add", fileNode(i))
					s.OK("blockdev-add", node(i))
				}
				s.observeLocks("after adding the chain")

				mid := depth / 2
				if mid < depth-1 {
					rwFile, rw := fileNode(mid), node(mid)
					rwFile["read-only"], rw["read-only"] = false, false
					s.OK("blockdev-reopen", map[string]any{"options": []any{rwFile, rw}})
					s.observeLocks("after reopening a middle node read-write")
					s.OK("blockdev-reopen", map[string]any{"options": []any{node(mid), fileNode(mid)}})
					s.observeLocks("after reopening it read-only")
				}
				s.OK("blockdev-del", map[string]any{"node-name": fmt.Sprint("n", depth-1)})
				s.observeLocks("after deleting the top")
			})
		})
	}
}
