package chardev

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/objects"
	"blockd/schema"
)

func setup(t *testing.T) (*Registry, *schema.Registry) {
	t.Helper()
	objs := objects.NewRegistry(nil)
	r := NewRegistry(nil, objs)
	reg := schema.NewRegistry()
	objs.RegisterCommands(reg)
	r.RegisterCommands(reg)
	t.Cleanup(r.CloseAll)
	return r, reg
}

func call(t *testing.T, reg *schema.Registry, cmd, args string) (string, string) {
	t.Helper()
	res, err := reg.Call(context.Background(), cmd, json.RawMessage(args))
	if err != nil {
		return "", err.Error()
	}
	return string(res), ""
}

func must(t *testing.T, reg *schema.Registry, cmd, args string) string {
	t.Helper()
	res, e := call(t, reg, cmd, args)
	if e != "" {
		t.Fatalf("%s %s: %s", cmd, args, e)
	}
	return res
}

// waitFor polls a condition that another goroutine makes true (a socket
// accepted); the bound only keeps a broken build from hanging.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func chardevInfo(t *testing.T, reg *schema.Registry, id string) Info {
	var infos []Info
	if err := json.Unmarshal([]byte(must(t, reg, "query-chardev", "")), &infos); err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if i.Label == id {
			return i
		}
	}
	t.Fatalf("%s not in query-chardev", id)
	return Info{}
}

// A server socket chardev takes one client at a time and reports it;
// removing the chardev closes the socket and its file.
func TestSocketServer(t *testing.T) {
	_, reg := setup(t)
	path := filepath.Join(t.TempDir(), "c.sock")
	must(t, reg, "chardev-add", `{"id":"s0","backend":{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"`+path+`"}},"server":true,"wait":false}}}`)
	connected := func() bool { return must(t, reg, "qom-get", `{"path":"s0","property":"connected"}`) == "true" }
	if connected() || chardevInfo(t, reg, "s0").Filename != "disconnected:unix:"+path+",server=on" {
		t.Fatalf("fresh chardev: %+v", chardevInfo(t, reg, "s0"))
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to be accepted", connected)
	if f := chardevInfo(t, reg, "s0").Filename; f != "unix:"+path+",server=on" {
		t.Errorf("connected filename %q", f)
	}
	// What the client sends is taken and dropped: a large write ends.
	if _, err := conn.Write(make([]byte, 4<<20)); err != nil {
		t.Fatalf("write to chardev: %v", err)
	}
	conn.Close()
	waitFor(t, "the disconnection", func() bool { return !connected() })
	must(t, reg, "chardev-remove", `{"id":"s0"}`)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after chardev-remove: %v", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("socket still accepts after chardev-remove")
	}
}

// A TCP server on port 0 reports the port it got, and a client chardev
// connects to it.
func TestSocketTCPAndClient(t *testing.T) {
	_, reg := setup(t)
	must(t, reg, "chardev-add", `{"id":"srv","backend":{"type":"socket","data":{"addr":{"type":"inet","data":{"host":"127.0.0.1","port":"0"}},"server":true,"wait":false}}}`)
	var addr struct{ Host, Port, Type string }
	if err := json.Unmarshal([]byte(must(t, reg, "qom-get", `{"path":"srv","property":"addr"}`)), &addr); err != nil {
		t.Fatal(err)
	}
	if addr.Type != "inet" || addr.Port == "0" || addr.Port == "" {
		t.Fatalf("addr %+v", addr)
	}
	must(t, reg, "chardev-add", `{"id":"cli","backend":{"type":"socket","data":{"addr":{"type":"inet","data":{"host":"127.0.0.1","port":"`+addr.Port+`"}},"server":false}}}`)
	if must(t, reg, "qom-get", `{"path":"cli","property":"connected"}`) != "true" {
		t.Error("client chardev not connected")
	}
	waitFor(t, "the server side", func() bool {
		return strings.HasPrefix(chardevInfo(t, reg, "srv").Filename, "tcp:127.0.0.1:"+addr.Port+",server=on <-> 127.0.0.1:")
	})
	must(t, reg, "chardev-remove", `{"id":"srv"}`)
	waitFor(t, "the client to see the hang-up", func() bool {
		return must(t, reg, "qom-get", `{"path":"cli","property":"connected"}`) == "false"
	})
}

// file truncates unless append is set; logfile is created.
func TestFileBackend(t *testing.T) {
	_, reg := setup(t)
	dir := t.TempDir()
	out, app, log := filepath.Join(dir, "out"), filepath.Join(dir, "app"), filepath.Join(dir, "log")
	for _, p := range []string{out, app} {
		if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	must(t, reg, "chardev-add", `{"id":"f0","backend":{"type":"file","data":{"out":"`+out+`","logfile":"`+log+`"}}}`)
	must(t, reg, "chardev-add", `{"id":"f1","backend":{"type":"file","data":{"out":"`+app+`","append":true}}}`)
	for p, want := range map[string]int64{out: 0, app: 3, log: 0} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != want {
			t.Errorf("%s: %v size %d, want %d", p, err, fi.Size(), want)
		}
	}
}

// pty returns the slave's name, which a client can open.
func TestPty(t *testing.T) {
	_, reg := setup(t)
	res, e := call(t, reg, "chardev-add", `{"id":"p0","backend":{"type":"pty","data":{}}}`)
	if e != "" {
		t.Skipf("no pty here: %s", e)
	}
	var ret struct{ Pty string }
	if err := json.Unmarshal([]byte(res), &ret); err != nil || !strings.HasPrefix(ret.Pty, "/dev/pts/") {
		t.Fatalf("chardev-add pty returned %s", res)
	}
	f, err := os.OpenFile(ret.Pty, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open %s: %v", ret.Pty, err)
	}
	f.Close()
	if got := chardevInfo(t, reg, "p0").Filename; got != "pty:"+ret.Pty {
		t.Errorf("filename %q", got)
	}
}

// The ring keeps the newest bytes; reads take them in order.
func TestRing(t *testing.T) {
	r := newRing(8)
	r.write([]byte("0123456789"))
	if got := string(r.read(3)); got != "234" {
		t.Errorf("first read %q", got)
	}
	r.write([]byte("ab"))
	if got := string(r.read(100)); got != "56789ab" {
		t.Errorf("second read %q", got)
	}
	if got := r.read(5); len(got) != 0 {
		t.Errorf("empty ring read %q", got)
	}
	z := newRing(0)
	z.write([]byte("x"))
	if got := z.read(1); len(got) != 0 {
		t.Errorf("zero-size ring read %q", got)
	}
}

// A mux holds its base: the base cannot be removed or taken twice, and
// a monitor's chardev cannot be a mux's base.
func TestMuxAndMonitorBusy(t *testing.T) {
	r, reg := setup(t)
	if err := r.AddMonitorStdio("mon"); err != nil {
		t.Fatal(err)
	}
	must(t, reg, "chardev-add", `{"id":"n0","backend":{"type":"null","data":{}}}`)
	must(t, reg, "chardev-add", `{"id":"m0","backend":{"type":"mux","data":{"chardev":"n0"}}}`)
	for cmd, want := range map[string]string{
		`chardev-remove {"id":"n0"}`:  "Chardev 'n0' is busy",
		`chardev-remove {"id":"mon"}`: "Chardev 'mon' is busy",
		`chardev-add {"id":"m1","backend":{"type":"mux","data":{"chardev":"mon"}}}`: "Failed to add chardev 'm1': Device 'mon' is in use",
		`chardev-add {"id":"st","backend":{"type":"stdio","data":{}}}`:              "Failed to add chardev 'st': cannot use stdio by multiple character devices",
		`chardev-change {"id":"mon","backend":{"type":"null","data":{}}}`:           "Chardev user does not support chardev hotswap",
	} {
		name, args, _ := strings.Cut(cmd, " ")
		if _, e := call(t, reg, name, args); e != want {
			t.Errorf("%s: %q, want %q", cmd, e, want)
		}
	}
	if i := chardevInfo(t, reg, "mon"); !i.FrontendOpen || i.Filename != "stdio" {
		t.Errorf("monitor chardev %+v", i)
	}
}
