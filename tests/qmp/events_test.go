package qmptest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"
	"github.com/sourcegraph/jsonrpc2"
)

// requireQemuImg skips loudly without qemu-img, or fails when CI demands it.
func requireQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("BLOCKD_REQUIRE_QEMU") == "1" {
			t.Fatal("qemu-img is required (BLOCKD_REQUIRE_QEMU=1) but missing")
		}
		t.Skip("SKIPPING: qemu-img not installed; install qemu-utils to run this test")
	}
}

// chain makes base <- mid <- top with data in mid, for a quick commit.
func chain(t *testing.T, dir string) {
	t.Helper()
	requireQemuImg(t)
	for _, cmd := range []string{
		"qemu-img create -q -f qcow2 base.qcow2 8M",
		"qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2",
		"qemu-io -f qcow2 -c 'write -P 0x22 0 1M' mid.qcow2 >/dev/null",
		"qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
	} {
		RunShell(t, dir, cmd, 0)
	}
}

func commitArgs(dir string) map[string]any {
	return map[string]any{"job-id": "j1", "device": "top", "top": filepath.Join(dir, "mid.qcow2")}
}

func addTop(t *testing.T, c *Client, dir string) {
	t.Helper()
	r, _ := c.Command(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}})
	if r["return"] == nil {
		t.Fatalf("blockdev-add: %v", r)
	}
}

// statuses reads JOB_STATUS_CHANGE events until status null.
func statuses(t *testing.T, c *Client, first []map[string]any) []string {
	t.Helper()
	var out []string
	collect := func(m map[string]any) bool {
		if m["event"] != "JOB_STATUS_CHANGE" {
			return false
		}
		st := m["data"].(map[string]any)["status"].(string)
		out = append(out, st)
		return st == "null"
	}
	for _, e := range first {
		if collect(e) {
			return out
		}
	}
	for {
		m, raw, err := c.Next()
		if err != nil {
			t.Fatalf("waiting for job events: %v (%q); so far %v", err, raw, out)
		}
		if collect(m) {
			return out
		}
	}
}

var wantStatuses = []string{"created", "running", "waiting", "pending", "concluded", "null"}

func TestEveryNegotiatedMonitorGetsEvents(t *testing.T) {
	dir := t.TempDir()
	chain(t, dir)
	second := filepath.Join(dir, "second.sock")
	d := StartDaemon(t, blockdBin, dir, "--chardev", "socket,id=m2,path="+second+",server=on,wait=off",
		"--monitor", "chardev=m2")
	defer d.Stop(t)
	a, b := Dial(t, d.Sock), Dial(t, second)
	defer a.Close()
	defer b.Close()
	a.Negotiate(t)
	b.Negotiate(t)
	silent := Dial(t, d.Sock) // greeted, never negotiates
	defer silent.Close()
	if _, _, err := silent.Next(); err != nil {
		t.Fatal(err)
	}
	addTop(t, a, dir)
	r, evs := a.Command(t, "block-commit", commitArgs(dir))
	if r["return"] == nil {
		t.Fatalf("block-commit: %v", r)
	}
	// Events caused by the command come before its reply.
	if len(evs) < 2 {
		t.Fatalf("created and running should precede the reply, got %v", evs)
	}
	for name, c := range map[string]*Client{"first": a} {
		if got := statuses(t, c, evs); !equal(got, wantStatuses) {
			t.Errorf("%s monitor saw %v", name, got)
		}
	}
	if got := statuses(t, b, nil); !equal(got, wantStatuses) {
		t.Errorf("second monitor saw %v", got)
	}
	// The unnegotiated monitor got nothing: its next message is the
	// reply to a command sent now.
	if err := silent.Send([]byte(`{"execute":"qmp_capabilities","id":"late"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	m, _, err := silent.Next()
	if err != nil || m["id"] != "late" {
		t.Fatalf("unnegotiated monitor received %v (%v)", m, err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// go-qemu's QMP client drives blockd: connect, run a command, receive an
// event.
func TestGoQemuSocketMonitor(t *testing.T) {
	dir := t.TempDir()
	chain(t, dir)
	d := StartDaemon(t, blockdBin, dir)
	defer d.Stop(t)
	mon, err := goqmp.NewSocketMonitor("unix", d.Sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer mon.Disconnect()
	if mon.Version == nil || mon.Version.QEMU.Major != 7 || mon.Version.QEMU.Minor != 2 {
		t.Fatalf("greeting version %+v", mon.Version)
	}
	stream, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// go-qemu's listener hands events over synchronously, and blockd sends
	// the events a command causes before its reply: drain them alongside.
	events := make(chan goqmp.Event, 64)
	go func() {
		for ev := range stream {
			events <- ev
		}
	}()
	out, err := mon.Run([]byte(`{"execute":"query-version"}`))
	if err != nil {
		t.Fatalf("query-version: %v", err)
	}
	var v struct {
		Return struct {
			Package string `json:"package"`
		} `json:"return"`
	}
	if json.Unmarshal(out, &v) != nil || v.Return.Package == "" {
		t.Fatalf("query-version reply %s", out)
	}
	add, _ := json.Marshal(map[string]any{"execute": "blockdev-add", "arguments": map[string]any{
		"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}}})
	if _, err := mon.Run(add); err != nil {
		t.Fatalf("blockdev-add: %v", err)
	}
	commit, _ := json.Marshal(map[string]any{"execute": "block-commit", "arguments": commitArgs(dir)})
	if _, err := mon.Run(commit); err != nil {
		t.Fatalf("block-commit: %v", err)
	}
	deadline := time.After(ReplyTimeout)
	for {
		select {
		case ev := <-events:
			if ev.Event == "BLOCK_JOB_COMPLETED" {
				if ev.Data["device"] != "j1" || ev.Data["type"] != "commit" {
					t.Fatalf("event data %v", ev.Data)
				}
				return
			}
		case <-deadline:
			t.Fatal("no BLOCK_JOB_COMPLETED through go-qemu")
		}
	}
}

// JSON-RPC clients get the same events as notifications, ordered before
// the reply of the command that caused them, as on QMP.
func TestJSONRPCEventNotifications(t *testing.T) {
	dir := t.TempDir()
	chain(t, dir)
	rpcSock := filepath.Join(dir, "rpc.sock")
	d := StartDaemon(t, blockdBin, dir, "--jsonrpc", rpcSock)
	defer d.Stop(t)
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	c := dialRPC(t, rpcSock, func(r *jsonrpc2.Request) {
		if r.Method != "event" || r.Params == nil {
			return
		}
		var p struct {
			Event     string         `json:"event"`
			Data      map[string]any `json:"data"`
			Timestamp map[string]any `json:"timestamp"`
		}
		if json.Unmarshal(*r.Params, &p) != nil || p.Timestamp["seconds"] == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if p.Event == "JOB_STATUS_CHANGE" {
			seen = append(seen, p.Data["status"].(string))
			if p.Data["status"] == "null" {
				close(done)
			}
		}
	})
	defer c.Close()
	if _, e := rpcCall(t, c, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top",
		"file": map[string]any{"driver": "file", "filename": filepath.Join(dir, "top.qcow2")}}); e != nil {
		t.Fatal(e)
	}
	if _, e := rpcCall(t, c, "block-commit", commitArgs(dir)); e != nil {
		t.Fatal(e)
	}
	mu.Lock()
	before := len(seen)
	mu.Unlock()
	if before < 2 {
		t.Errorf("created and running should arrive before the reply; had %d", before)
	}
	select {
	case <-done:
	case <-time.After(ReplyTimeout):
		t.Fatal("job did not finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if !equal(seen, wantStatuses) {
		t.Fatalf("statuses %v", seen)
	}
}
