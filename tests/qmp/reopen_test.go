package qmptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// blockdev-reopen scenarios a transcript cannot express: QEMU's tools
// beside the daemon, descriptors and locks, automatic node names. Each
// runs on blockd and on qemu-storage-daemon and both must observe the
// same (see compareWithReference).

func reopenArgs(opts ...map[string]any) map[string]any {
	list := make([]any, len(opts))
	for i, o := range opts {
		list[i] = o
	}
	return map[string]any{"options": list}
}

// qcow2Node is a qcow2 node over an inline file node named file.
func qcow2Node(name, file, img string, extra map[string]any) map[string]any {
	o := map[string]any{"driver": "qcow2", "node-name": name,
		"file": map[string]any{"driver": "file", "node-name": file, "filename": img}}
	for k, v := range extra {
		o[k] = v
	}
	return o
}

// fdModes lists the access modes of the daemon's descriptors on path, as
// its /proc entries show them ("ro", "rw"), sorted.
func fdModes(t *testing.T, d *Daemon, path string) string {
	t.Helper()
	pid := d.cmd.Process.Pid
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("SKIP LOUDLY: no /proc to inspect descriptors: %v", err)
	}
	var modes []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		m := regexp.MustCompile(`(?m)^flags:\s*([0-7]+)`).FindSubmatch(info)
		if m == nil {
			continue
		}
		fl, _ := strconv.ParseUint(string(m[1]), 8, 32)
		if fl&3 == 0 {
			modes = append(modes, "ro")
		} else {
			modes = append(modes, "rw")
		}
	}
	slices.Sort(modes)
	return strings.Join(modes, ",")
}

// Descriptors logs the access modes of the daemon's descriptors on path.
func (s *session) Descriptors(path string) {
	s.t.Helper()
	s.observe("descriptors on %s: %s", path, fdModes(s.t, s.d, path))
}

// A reopen to read-only lets QEMU's tools read the image while the daemon
// keeps it open; writers stay out, and a reopen to read-write shuts
// readers out again.
func TestReopenReadOnlyLetsQemuToolsRead(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", qcow2Node("q", "qf", img, nil))
		s.Descriptors(img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuIO, "-r", "-c", "read 0 4k", img)
		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 4k", img)

		s.OK("blockdev-reopen", reopenArgs(qcow2Node("q", "qf", img, map[string]any{"read-only": true})))
		s.Descriptors(img)
		s.Graph()
		s.ToolOK(qemuIO, "-r", "-c", "read 0 4k", img)
		s.ToolOK(qemuImg, "info", img)
		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 4k", img)

		s.OK("blockdev-reopen", reopenArgs(qcow2Node("q", "qf", img, nil)))
		s.Descriptors(img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuIO, "-r", "-c", "read 0 4k", img)
		s.ToolFails(`Failed to get "write" lock`, qemuIO, "-c", "write 0 4k", img)
		s.OK("blockdev-del", map[string]any{"node-name": "q"})
		s.ToolOK(qemuIO, "-c", "write 0 4k", img)
	})
}

// holdReadOnly keeps img open in an interactive qemu-io -r (which takes
// consistent read and shares no write) until the returned function quits
// it.
func holdReadOnly(t *testing.T, qemuIO, img string) (stop func()) {
	t.Helper()
	return holdImage(t, qemuIO, img, "-r")
}

// Going read-write needs the write lock: while another process reads the
// image without sharing write, the reopen fails with QEMU's lock error and
// leaves the node read-only on its read-only descriptor; once the reader
// has quit, it succeeds.
func TestReopenReadWriteNeedsTheWriteLock(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	compareWithReference(t, qcow2Setup, func(s *session) {
		img := filepath.Join(s.Dir, "img.qcow2")
		s.OK("blockdev-add", qcow2Node("q", "qf", img, map[string]any{"read-only": true}))
		stop := holdReadOnly(s.t, qemuIO, img)
		s.Err("blockdev-reopen", reopenArgs(qcow2Node("q", "qf", img, nil)), `Failed to get "write" lock`)
		s.Err("blockdev-reopen", reopenArgs(qcow2Node("q", "qf", img, map[string]any{"auto-read-only": true})), `Failed to get "write" lock`)
		s.OK("query-named-block-nodes", map[string]any{"flat": true})
		s.Graph()
		s.Descriptors(img)
		// Still read-only: a second reader gets in.
		s.ToolOK(qemuIO, "-r", "-c", "read 0 4k", img)
		stop()
		s.OK("blockdev-reopen", reopenArgs(qcow2Node("q", "qf", img, nil)))
		s.Descriptors(img)
		s.ToolFails(`Failed to get shared "write" lock`, qemuIO, "-r", "-c", "read 0 4k", img)
	})
}

// A reopen of two nodes that fails on its second entry changes nothing of
// the first, down to its descriptor and its locks: here the first would go
// read-only and the second, a file a writable qcow2 uses, too.
func TestReopenFailingSecondEntryKeepsTheFirst(t *testing.T) {
	qemuIO, qemuImg := qemuTool(t, "qemu-io"), qemuTool(t, "qemu-img")
	setup := func(t *testing.T, dir string) {
		for _, n := range []string{"a.qcow2", "b.qcow2"} {
			out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", filepath.Join(dir, n), "16M").CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img create: %v\n%s", err, out)
			}
		}
	}
	compareWithReference(t, setup, func(s *session) {
		a, b := filepath.Join(s.Dir, "a.qcow2"), filepath.Join(s.Dir, "b.qcow2")
		s.OK("blockdev-add", qcow2Node("qa", "fa", a, nil))
		s.OK("blockdev-add", map[string]any{"driver": "file", "node-name": "fb", "filename": b})
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "qb", "file": "fb"})
		check := func() {
			s.OK("query-named-block-nodes", map[string]any{"flat": true})
			s.Graph()
			s.Descriptors(a)
			s.ToolFails(`Failed to get shared "write" lock`, qemuIO, "-r", "-c", "read 0 4k", a)
		}
		check()
		first := qcow2Node("qa", "fa", a, map[string]any{"read-only": true})
		// Refused by the permission check of the whole queue.
		s.Err("blockdev-reopen", reopenArgs(first, map[string]any{"driver": "file", "node-name": "fb", "filename": b, "read-only": true}),
			"Read-only block node 'fb' cannot support read-write users")
		check()
		// Refused while the second entry is prepared.
		s.Err("blockdev-reopen", reopenArgs(first, map[string]any{"driver": "file", "node-name": "fb", "filename": a}),
			"Cannot change the option 'filename'")
		check()
		// The first alone goes through.
		s.OK("blockdev-reopen", reopenArgs(first))
		s.Descriptors(a)
		s.ToolOK(qemuIO, "-r", "-c", "read 0 4k", a)
	})
}

// Children with automatic names: naming the current one reopens it with
// its own options and what it inherits (so the file of a read-only node
// stays read-only unless the node says read-only=false), for the file as
// for a backing file opened from the image header; that backing may also
// be given inline, and switching away from it closes it. An implicit node
// cannot be listed itself: it has no node-name option to repeat.
func TestReopenImplicitChildren(t *testing.T) {
	qemuImg := qemuTool(t, "qemu-img")
	setup := func(t *testing.T, dir string) {
		for _, args := range [][]string{
			{"create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "16M"},
			{"create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base.qcow2"), "-F", "qcow2", filepath.Join(dir, "top.qcow2")},
			{"create", "-q", "-f", "qcow2", filepath.Join(dir, "base2.qcow2"), "16M"},
		} {
			if out, err := exec.Command(qemuImg, args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img: %v\n%s", err, out)
			}
		}
	}
	compareWithReference(t, setup, func(s *session) {
		top := filepath.Join(s.Dir, "top.qcow2")
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
			"file": map[string]any{"driver": "file", "filename": top}})
		nodes := s.nodesByImage()
		baseFile, baseNode, topFile := nodes["file base.qcow2"], nodes["qcow2 base.qcow2"], nodes["file top.qcow2"]
		if baseFile == "" || baseNode == "" || topFile == "" {
			s.t.Fatalf("[%s] nodes %v", s.name, nodes)
		}
		node := func(extra map[string]any) map[string]any {
			o := map[string]any{"driver": "qcow2", "node-name": "top", "file": topFile, "backing": baseNode}
			for k, v := range extra {
				o[k] = v
			}
			return o
		}
		s.OK("blockdev-reopen", reopenArgs(node(map[string]any{"read-only": true})))
		s.OK("query-named-block-nodes", map[string]any{"flat": true})
		s.Err("blockdev-reopen", reopenArgs(node(nil)), "Block node is read-only")
		s.OK("blockdev-reopen", reopenArgs(node(map[string]any{"read-only": false})))
		s.OK("query-named-block-nodes", map[string]any{"flat": true})
		s.Graph()
		// The backing's own options, inline; its file by name.
		s.OK("blockdev-reopen", reopenArgs(node(map[string]any{
			"backing": map[string]any{"driver": "qcow2", "read-only": false, "file": baseFile}})))
		s.OK("query-named-block-nodes", map[string]any{"flat": true})
		s.Graph()
		s.Err("blockdev-reopen", reopenArgs(node(map[string]any{
			"backing": map[string]any{"driver": "qcow2", "file": map[string]any{"driver": "file", "filename": top}}})),
			"Cannot change the option 'filename'")
		s.Err("blockdev-reopen", reopenArgs(
			map[string]any{"driver": "file", "node-name": topFile, "filename": top, "read-only": true},
			node(map[string]any{"read-only": true})), "Cannot change the option 'node-name'")
		// A new backing by name: the implicit chain goes away.
		s.OK("blockdev-add", map[string]any{"driver": "qcow2", "node-name": "b2", "read-only": true,
			"file": map[string]any{"driver": "file", "filename": filepath.Join(s.Dir, "base2.qcow2")}})
		s.OK("blockdev-reopen", reopenArgs(node(map[string]any{"backing": "b2"})))
		if names := s.NodeNames(); len(names) != 4 || slices.Contains(names, baseNode) || slices.Contains(names, baseFile) {
			s.t.Errorf("[%s] nodes after the switch: %q", s.name, names)
		}
		s.Graph()
		s.Err("blockdev-reopen", reopenArgs(node(nil)), fmt.Sprintf("Cannot find device='' nor node-name='%s'", baseNode))
	})
}

// nodesByImage maps "driver basename-of-file" to node names.
func (s *session) nodesByImage() map[string]string {
	s.t.Helper()
	r, _ := s.c.Command(s.tb, "query-named-block-nodes", map[string]any{"flat": true})
	out := map[string]string{}
	list, _ := r["return"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		name, _ := m["node-name"].(string)
		drv, _ := m["drv"].(string)
		file, _ := m["file"].(string)
		out[drv+" "+filepath.Base(file)] = name
	}
	return out
}

// qemu-storage-daemon 7.2 aborts on an empty list (an assertion in
// bdrv_reopen_multiple); blockd reopens nothing and says so.
func TestReopenEmptyList(t *testing.T) {
	d := StartDaemon(t, blockdBin, t.TempDir())
	c := Dial(t, d.Sock)
	defer func() { c.Close(); d.Stop(t) }()
	c.Negotiate(t)
	if r, _ := c.Command(t, "blockdev-reopen", map[string]any{"options": []any{}}); r["return"] == nil {
		t.Fatalf("got %v", r)
	}
}

// Both forms are commands: blockdev-reopen with a list of BlockdevOptions,
// x-blockdev-reopen (unstable) with BlockdevOptions as its arguments,
// the type blockdev-add takes.
func TestReopenIntrospection(t *testing.T) {
	d := StartDaemon(t, blockdBin, t.TempDir())
	c := Dial(t, d.Sock)
	defer func() { c.Close(); d.Stop(t) }()
	c.Negotiate(t)
	r, _ := c.Command(t, "query-commands", nil)
	var names []string
	for _, e := range r["return"].([]any) {
		names = append(names, e.(map[string]any)["name"].(string))
	}
	for _, want := range []string{"blockdev-reopen", "x-blockdev-reopen"} {
		if !slices.Contains(names, want) {
			t.Errorf("query-commands lacks %s", want)
		}
	}
	r, _ = c.Command(t, "query-qmp-schema", nil)
	byName := map[string]map[string]any{}
	for _, e := range r["return"].([]any) {
		m := e.(map[string]any)
		byName[m["name"].(string)] = m
	}
	add, reopen, legacy := byName["blockdev-add"], byName["blockdev-reopen"], byName["x-blockdev-reopen"]
	if add == nil || reopen == nil || legacy == nil {
		t.Fatal("commands missing from query-qmp-schema")
	}
	if legacy["arg-type"] != add["arg-type"] || fmt.Sprint(legacy["features"]) != "[unstable]" {
		t.Errorf("x-blockdev-reopen: %v (blockdev-add: %v)", legacy, add)
	}
	args := byName[reopen["arg-type"].(string)]
	members, _ := args["members"].([]any)
	if len(members) != 1 {
		t.Fatalf("blockdev-reopen arguments: %v", args)
	}
	m := members[0].(map[string]any)
	if m["name"] != "options" || m["type"] != "["+add["arg-type"].(string)+"]" {
		t.Errorf("blockdev-reopen arguments: %v", args)
	}
}
