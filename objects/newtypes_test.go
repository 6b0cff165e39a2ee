package objects

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"blockd/events"
)

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// authz-list-file (qom-type authz-listfile) takes its rules from a JSON
// file; its load errors are QEMU's (authz/listfile.c).
func TestAuthzListFileLoad(t *testing.T) {
	r, reg := newQOM(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	writeFile(t, rules, `{"policy": "deny", "rules": [{"match": "CN=a*", "policy": "allow", "format": "glob"}, {"match": "CN=bob", "policy": "allow"}]}`)
	mustAdd(t, r, "authz-listfile,id=a,refresh=off,filename="+rules)
	for id, want := range map[string]bool{"CN=alice": true, "CN=bob": true, "CN=carol": false} {
		if ok, err := r.Authorize("a", id); ok != want || err != nil {
			t.Errorf("%s: %v %v, want %v", id, ok, err, want)
		}
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"/objects/a","property":"filename"}`); got != strconv.Quote(rules) {
		t.Errorf("filename = %s", got)
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"/objects/a","property":"refresh"}`); got != "false" {
		t.Errorf("refresh = %s", got)
	}
	if got, _ := qmp(t, reg, "qom-list", `{"path":"/objects/a"}`); got != `[{"name": "type", "type": "string"}, {"name": "filename", "type": "string"}, {"name": "refresh", "type": "bool"}]` {
		t.Errorf("qom-list = %s", got)
	}

	bad := filepath.Join(dir, "bad.json")
	for _, c := range []struct{ content, spec, want string }{
		{"", "filename=" + filepath.Join(dir, "none.json"),
			"Unable to read '" + filepath.Join(dir, "none.json") + "': Failed to open file “" + filepath.Join(dir, "none.json") + "”: No such file or directory"},
		{"", "filename=" + dir, "Unable to read '" + dir + "': Error reading file “" + dir + "”: Is a directory"},
		{"  \n", "filename=" + bad, "Expecting a JSON value"},
		{`{"policy": }`, "filename=" + bad, "JSON parse error, expecting value"},
		{`{"a": 1, "a": 2}`, "filename=" + bad, "JSON parse error, duplicate key"},
		{`[1]`, "filename=" + bad, "File '" + bad + "' must contain a JSON object"},
		{`{"policy": "maybe"}`, "filename=" + bad, "Parameter 'policy' does not accept value 'maybe'"},
		{`{"rules": [{"policy": "allow"}]}`, "filename=" + bad, "Parameter 'rules[0].match' is missing"},
		{`{"bogus": 1}`, "filename=" + bad, "Property 'authz-list.bogus' not found"},
		// refresh watches the file's directory, which needs a path.
		{`{}`, "filename=bad.json", "Filename must be an absolute path"},
	} {
		writeFile(t, bad, c.content)
		if c.spec == "filename=bad.json" {
			t.Chdir(dir)
		}
		err := r.AddFromCLI("authz-listfile,id=x," + c.spec)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %q", c.content, err, c.want)
		}
	}
	// The name QEMU's QOM uses is not a qom-type value (QEMU 7.2's
	// schema spells it authz-listfile).
	if err := r.AddFromCLI("authz-list-file,id=y,filename=" + rules); err == nil ||
		err.Error() != "Parameter 'qom-type' does not accept value 'authz-list-file'" {
		t.Errorf("authz-list-file: %v", err)
	}
}

// With refresh (the default), a change to the file replaces the rules:
// written in place or renamed into place; a file that no longer parses
// denies everyone until it does.
func TestAuthzListFileRefresh(t *testing.T) {
	r, _ := newQOM(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	writeFile(t, rules, `{"rules": [{"match": "CN=alice", "policy": "allow"}]}`)
	mustAdd(t, r, "authz-listfile,id=a,filename="+rules)
	waitFor := func(who string, want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			ok, _ := r.Authorize("a", who)
			if ok == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s allowed=%v after 5s, want %v", who, ok, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("CN=alice", true)
	writeFile(t, rules, `{"rules": [{"match": "CN=bob", "policy": "allow"}]}`)
	waitFor("CN=bob", true)
	waitFor("CN=alice", false)

	next := filepath.Join(dir, "next.tmp")
	writeFile(t, next, `{"policy": "allow", "rules": [{"match": "CN=bob", "policy": "deny"}]}`)
	if err := os.Rename(next, rules); err != nil {
		t.Fatal(err)
	}
	waitFor("CN=carol", true)
	waitFor("CN=bob", false)

	writeFile(t, rules, `{"policy": `)
	waitFor("CN=carol", false)
	writeFile(t, rules, `{"policy": "allow"}`)
	waitFor("CN=carol", true)

	// A file beside it changes nothing.
	writeFile(t, filepath.Join(dir, "other.json"), `{"policy": "deny"}`)
	time.Sleep(100 * time.Millisecond)
	waitFor("CN=carol", true)

	// object-del returns once the watch has stopped (and the race
	// detector sees a late reload otherwise).
	if err := r.del("a"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, rules, `{"policy": "deny"}`)
}

// A thread-context is a thread of its own: thread-id names it, its
// affinity is set and read through the kernel, and object-del ends it.
func TestThreadContext(t *testing.T) {
	r, reg := newQOM(t)
	mustAdd(t, r, `{"qom-type": "thread-context", "id": "tc", "cpu-affinity": [0]}`)
	tidText, e := qmp(t, reg, "qom-get", `{"path":"/objects/tc","property":"thread-id"}`)
	if e != "" {
		t.Fatal(e)
	}
	tid, _ := strconv.Atoi(tidText)
	status := func() string {
		b, _ := os.ReadFile("/proc/self/task/" + tidText + "/status")
		return string(b)
	}
	if tid <= 0 || !strings.Contains(status(), "Cpus_allowed_list:\t0\n") {
		t.Fatalf("thread %s: %q", tidText, status())
	}
	if got, e := qmp(t, reg, "qom-get", `{"path":"/objects/tc","property":"cpu-affinity"}`); got != "[0]" {
		t.Fatalf("cpu-affinity %s %s", got, e)
	}
	// Every CPU this process may use: set, then read back from the kernel.
	all, err := getAffinity(0)
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, c := range all {
		list = append(list, strconv.Itoa(c))
	}
	want := "[" + strings.Join(list, ", ") + "]"
	if _, e := qmp(t, reg, "qom-set", `{"path":"/objects/tc","property":"cpu-affinity","value":`+want+`}`); e != "" {
		t.Fatal(e)
	}
	if got, _ := qmp(t, reg, "qom-get", `{"path":"/objects/tc","property":"cpu-affinity"}`); got != want {
		t.Fatalf("cpu-affinity %s, want %s", got, want)
	}
	if err := r.del("tc"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); status() != ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("thread %d (process %d) still runs after object-del", tid, os.Getpid())
		}
	}
}

// fakePRHelper listens as qemu-pr-helper does and answers the feature
// handshake (or, with hangUp, closes the connection instead).
func fakePRHelper(t *testing.T, hangUp bool) (path string, got chan uint32) {
	path = filepath.Join(t.TempDir(), "pr.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	got = make(chan uint32, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if hangUp {
			return
		}
		var b [4]byte
		_, _ = c.Write(b[:])
		if _, err := io.ReadFull(c, b[:]); err == nil {
			got <- binary.NativeEndian.Uint32(b[:])
		}
		_, _ = c.Read(b[:]) // until blockd closes
		close(got)
	}()
	return path, got
}

// pr-manager-helper connects to its helper and negotiates no features,
// announcing the connection; object-del closes it. A file node's
// pr-manager must name such an object.
func TestPRManagerHelper(t *testing.T) {
	r, reg := newQOM(t)
	bus := events.NewBus()
	r.SetBus(bus)
	var mu sync.Mutex
	var evs []string
	bus.Subscribe(func(e events.Event) {
		mu.Lock()
		evs = append(evs, e.Name+" "+string(e.Data))
		mu.Unlock()
	})
	path, got := fakePRHelper(t, false)
	mustAdd(t, r, "pr-manager-helper,id=pr0,path="+path)
	if flags := <-got; flags != 0 {
		t.Errorf("features asked for: %#x", flags)
	}
	if v, _ := qmp(t, reg, "qom-get", `{"path":"/objects/pr0","property":"path"}`); v != strconv.Quote(path) {
		t.Errorf("path = %s", v)
	}
	mustAdd(t, r, "secret,id=s0,data=x")
	for id, want := range map[string]string{
		"pr0": "", "s0": "Object with id 's0' is not a persistent reservation manager",
		"nope": "No persistent reservation manager with id 'nope'",
	} {
		if err := r.PRManager(id); err == nil && want != "" || err != nil && err.Error() != want {
			t.Errorf("PRManager(%s) = %v, want %q", id, err, want)
		}
	}
	if err := r.del("pr0"); err != nil {
		t.Fatal(err)
	}
	if _, open := <-got; open {
		t.Error("the helper connection outlived object-del")
	}
	hangUp, _ := fakePRHelper(t, true)
	if err := r.AddFromCLI("pr-manager-helper,id=pr1,path=" + hangUp); err == nil ||
		err.Error() != "Unexpected end-of-file before all data were read" {
		t.Errorf("helper hanging up: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := `PR_MANAGER_STATUS_CHANGED {"id": "pr0", "connected": true}|PR_MANAGER_STATUS_CHANGED {"id": "pr1", "connected": false}`
	if strings.Join(evs, "|") != want {
		t.Errorf("events %q, want %q", evs, want)
	}
}

// tls-cipher-suites needs a priority; it is TLS credentials to
// nbd-server-start, whose handshakes then fail as QEMU's do.
func TestTLSCipherSuites(t *testing.T) {
	r, _ := newQOM(t)
	if err := r.AddFromCLI("tls-cipher-suites,id=c0"); err == nil || err.Error() != "'priority' property is not set" {
		t.Errorf("without priority: %v", err)
	}
	mustAdd(t, r, "tls-cipher-suites,id=c1,priority=@SYSTEM,endpoint=server")
	mustAdd(t, r, "tls-cipher-suites,id=c2,priority=NORMAL")
	if _, err := r.TLSServer("c2", nil); err == nil || err.Error() != "Expected TLS credentials for a server endpoint" {
		t.Errorf("client endpoint as a server: %v", err)
	}
	s, err := r.TLSServer("c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := s.Handshake(a); err == nil || err.Error() != "Unsupported TLS credentials type tls-cipher-suites" {
		t.Errorf("handshake: %v", err)
	}
	if _, err := r.TLSClientConfig("c2"); err == nil || err.Error() != "Unsupported TLS credentials type tls-cipher-suites" {
		t.Errorf("client config: %v", err)
	}
}
