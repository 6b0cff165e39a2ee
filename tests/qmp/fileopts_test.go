package qmptest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fileDriverMembers reads BlockdevOptionsFile's members from a daemon's
// query-qmp-schema: the "file" variant of blockdev-add's argument. Types
// are described by what they accept (builtin name, enum values), since
// introspection numbers the type names.
func fileDriverMembers(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var entries []struct {
		Name     string `json:"name"`
		MetaType string `json:"meta-type"`
		ArgType  string `json:"arg-type"`
		JSONType string `json:"json-type"`
		Values   []string
		Members  []map[string]json.RawMessage
		Variants []struct {
			Case string `json:"case"`
			Type string `json:"type"`
		}
	}
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatal(err)
	}
	by := map[string]int{}
	for i, e := range entries {
		by[e.Name] = i
	}
	args := entries[by[entries[by["blockdev-add"]].ArgType]]
	var out []string
	for _, v := range args.Variants {
		if v.Case != "file" {
			continue
		}
		for _, m := range entries[by[v.Type]].Members {
			var name, tname string
			_ = json.Unmarshal(m["name"], &name)
			_ = json.Unmarshal(m["type"], &tname)
			typ := entries[by[tname]]
			desc := typ.JSONType
			if typ.MetaType == "enum" {
				desc = "enum" + fmt.Sprint(typ.Values)
			} else if typ.MetaType == "builtin" {
				desc = typ.Name
			}
			_, optional := m["default"] // introspection marks optional members so
			out = append(out, fmt.Sprintf("%s:%s:optional=%v", name, desc, optional))
		}
	}
	if len(out) == 0 {
		t.Fatal("no file variant in blockdev-add's schema")
	}
	return out
}

// The file driver takes exactly the options of qemu-storage-daemon 7.2's
// (the member list of BlockdevOptionsFile in query-qmp-schema), and
// refuses a persistent reservation manager with its text, as there are
// no pr-manager objects.
func TestFileDriverOptionsMatchReference(t *testing.T) {
	qsd := qemuTool(t, "qemu-storage-daemon")
	dir := t.TempDir()
	RunShell(t, dir, "qemu-img create -q -f qcow2 a.qcow2 1M", 0)
	var members [2][]string
	var refusals [2]string
	for i, bin := range []string{qsd, blockdBin} {
		r := startStdio(t, bin, dir)
		reply := func(cmd string) string {
			r.send(t, cmd)
			for {
				l, ok := r.next(t)
				if !ok {
					t.Fatalf("%s ended; stderr %s", bin, r.stderr.String())
				}
				if strings.HasPrefix(l, `{"return"`) || strings.HasPrefix(l, `{"error"`) {
					return l
				}
			}
		}
		reply(`{"execute": "qmp_capabilities"}`)
		var s struct{ Return json.RawMessage }
		if err := json.Unmarshal([]byte(reply(`{"execute": "query-qmp-schema"}`)), &s); err != nil {
			t.Fatal(err)
		}
		members[i] = fileDriverMembers(t, s.Return)
		refusals[i] = reply(`{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "g", "filename": "` +
			filepath.Join(dir, "a.qcow2") + `", "aio": "native", "pr-manager": "pm"}}`)
		// qemu-storage-daemon 7.2 stops reading its stdio monitor after
		// refusing a pr-manager, and does not exit at EOF: end it.
		_ = r.in.Close()
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
	if !slices.Equal(members[0], members[1]) {
		t.Errorf("file driver options differ:\nqemu-storage-daemon %v\nblockd              %v", members[0], members[1])
	}
	if refusals[0] != refusals[1] {
		t.Errorf("pr-manager refusal differs:\nqemu-storage-daemon %s\nblockd              %s", refusals[0], refusals[1])
	}
}
