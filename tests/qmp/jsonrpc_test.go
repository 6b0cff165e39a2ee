package qmptest

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"
)

func startWithJSONRPC(t *testing.T) (*Daemon, string) {
	dir := t.TempDir()
	rpcSock := filepath.Join(dir, "rpc.sock")
	d := StartDaemon(t, blockdBin, dir, "--jsonrpc", rpcSock)
	return d, rpcSock
}

func dialRPC(t *testing.T, sock string, notify func(*jsonrpc2.Request)) *jsonrpc2.Conn {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := jsonrpc2.HandlerWithError(func(_ context.Context, _ *jsonrpc2.Conn, r *jsonrpc2.Request) (any, error) {
		if notify != nil {
			notify(r)
		}
		return nil, nil
	})
	return jsonrpc2.NewConn(context.Background(), jsonrpc2.NewPlainObjectStream(nc), h)
}

func rpcCall(t *testing.T, c *jsonrpc2.Conn, method string, params any) (json.RawMessage, *jsonrpc2.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReplyTimeout)
	defer cancel()
	var res json.RawMessage
	err := c.Call(ctx, method, params, &res)
	if err == nil {
		return res, nil
	}
	if e, ok := err.(*jsonrpc2.Error); ok {
		return nil, e
	}
	t.Fatalf("%s: %v", method, err)
	return nil, nil
}

func errData(t *testing.T, e *jsonrpc2.Error) map[string]string {
	t.Helper()
	var m map[string]string
	if e.Data == nil || json.Unmarshal(*e.Data, &m) != nil {
		t.Fatalf("error without {class, desc} data: %+v", e)
	}
	return m
}

func TestJSONRPCErrors(t *testing.T) {
	d, sock := startWithJSONRPC(t)
	defer d.Stop(t)
	c := dialRPC(t, sock, nil)
	defer c.Close()

	res, e := rpcCall(t, c, "query-version", nil)
	if e != nil || !json.Valid(res) {
		t.Fatalf("query-version: %s %v", res, e)
	}
	cases := []struct {
		method string
		params any
		code   int64
		class  string
		desc   string
	}{
		{"no-such-command", nil, -32601, "CommandNotFound", "The command no-such-command has not been found"},
		{"query-version", map[string]any{"x": 1}, -32602, "GenericError", "Parameter 'x' is unexpected"},
		{"blockdev-add", map[string]any{"driver": 5}, -32602, "GenericError", "Invalid parameter type for 'driver', expected: string"},
		{"query-version", []int{1}, -32602, "GenericError", "QMP input member 'arguments' must be an object"},
		{"blockdev-del", map[string]any{"node-name": "zz"}, -32000, "GenericError", "Failed to find node with node-name='zz'"},
		{"qmp_capabilities", nil, -32000, "CommandNotFound", "Capabilities negotiation is already complete, command ignored"},
	}
	for _, k := range cases {
		_, e := rpcCall(t, c, k.method, k.params)
		if e == nil {
			t.Errorf("%s: no error", k.method)
			continue
		}
		data := errData(t, e)
		if e.Code != k.code || data["class"] != k.class || data["desc"] != k.desc || e.Message != k.desc {
			t.Errorf("%s: got code %d %v %q, want %d %s %q", k.method, e.Code, data, e.Message, k.code, k.class, k.desc)
		}
	}
}

// The wire format by hand, as with socat: one JSON message per line, and
// input the library cannot handle is answered without closing the socket.
func TestJSONRPCWireFormat(t *testing.T) {
	d, sock := startWithJSONRPC(t)
	defer d.Stop(t)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	exchange := func(line string) map[string]any {
		t.Helper()
		_ = nc.SetDeadline(time.Now().Add(ReplyTimeout))
		if _, err := nc.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		reply, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		var m map[string]any
		if err := json.Unmarshal(reply, &m); err != nil {
			t.Fatalf("%s: reply %q: %v", line, reply, err)
		}
		return m
	}
	m := exchange(`{"jsonrpc":"2.0","id":1,"method":"query-version"}`)
	if m["jsonrpc"] != "2.0" || m["id"] != float64(1) || m["result"] == nil {
		t.Fatalf("query-version: %v", m)
	}
	m = exchange(`{"jsonrpc":"2.0","id":"two","method":"blockdev-add","params":{"driver":"null-co","node-name":"n"}}`)
	if m["id"] != "two" || !reflect.DeepEqual(m["result"], map[string]any{}) {
		t.Fatalf("blockdev-add: %v", m)
	}
	m = exchange(`{"jsonrpc":"2.0","id":3,"method":`)
	if e, _ := m["error"].(map[string]any); e == nil || e["code"] != float64(-32700) {
		t.Fatalf("parse error: %v", m)
	}
	m = exchange(`[{"jsonrpc":"2.0","id":4,"method":"query-version"}]`)
	if e, _ := m["error"].(map[string]any); e == nil || e["code"] != float64(-32600) {
		t.Fatalf("batch: %v", m)
	}
	m = exchange(`{"jsonrpc":"2.0","id":5,"method":"query-named-block-nodes","params":{"flat":true}}`)
	if nodes, _ := m["result"].([]any); len(nodes) != 1 {
		t.Fatalf("connection not usable after refused input: %v", m)
	}
}

// Every command answers identically through QMP and JSON-RPC.
func TestSameAnswersThroughBothProtocols(t *testing.T) {
	d, sock := startWithJSONRPC(t)
	defer d.Stop(t)
	q := Dial(t, d.Sock)
	defer q.Close()
	q.Negotiate(t)
	rc := dialRPC(t, sock, nil)
	defer rc.Close()

	img := filepath.Join(d.Dir, "a.img")
	RunShell(t, d.Dir, "truncate -s 1M "+img, 0)
	steps := []struct {
		cmd  string
		args map[string]any
	}{
		{"query-version", nil},
		{"query-commands", nil},
		{"query-qmp-schema", nil},
		{"blockdev-add", map[string]any{"driver": "file", "node-name": "f", "filename": img}},
		{"blockdev-add", map[string]any{"driver": "raw", "node-name": "r", "file": "f"}},
		{"query-named-block-nodes", nil},
		{"query-named-block-nodes", map[string]any{"flat": true}},
		{"x-debug-query-block-graph", nil},
		{"blockdev-add", map[string]any{"driver": "raw", "node-name": "r", "file": "f"}},
		{"blockdev-del", map[string]any{"node-name": "f"}},
		{"blockdev-add", map[string]any{"driver": "nope"}},
		{"blockdev-del", map[string]any{"node-name": "r"}},
		{"blockdev-del", map[string]any{"node-name": "f"}},
	}
	for _, st := range steps {
		// Each step runs twice, through each protocol, on the same graph:
		// commands that change it are written so that both runs see the
		// same state (errors) or are compared by their first run only.
		var params any // a nil map must stay an absent member, not null
		if st.args != nil {
			params = st.args
		}
		qr, _ := q.Command(t, st.cmd, params)
		res, rerr := rpcCall(t, rc, st.cmd, params)
		if qe, isErr := qr["error"].(map[string]any); isErr {
			if rerr == nil {
				// A state-changing command that succeeded through QMP
				// legitimately fails the second time; compare the
				// QMP error with the JSON-RPC error only when both failed.
				t.Errorf("%s: QMP error %v but JSON-RPC succeeded", st.cmd, qe)
				continue
			}
			data := errData(t, rerr)
			if data["class"] != qe["class"] || data["desc"] != qe["desc"] {
				t.Errorf("%s: QMP %v, JSON-RPC %v", st.cmd, qe, data)
			}
			continue
		}
		if st.cmd == "blockdev-add" || st.cmd == "blockdev-del" {
			// The second run meets the first run's result.
			continue
		}
		if rerr != nil {
			t.Errorf("%s: QMP ok, JSON-RPC error %+v", st.cmd, rerr)
			continue
		}
		var rv any
		_ = json.Unmarshal(res, &rv)
		if !reflect.DeepEqual(normalizeAuto(qr["return"]), normalizeAuto(rv)) {
			t.Errorf("%s: QMP and JSON-RPC answers differ:\n QMP  %s\n RPC  %s", st.cmd, compact(qr["return"]), res)
		}
	}
}

func normalizeAuto(v any) any { return scrub(v, "\x00") }
