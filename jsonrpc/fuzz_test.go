package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/wire/wiretest"
	"blockd/qmp"
	"blockd/schema"
)

type registryDispatcher struct{ r *schema.Registry }

func (d registryDispatcher) Lookup(name string) (bool, bool) {
	c, ok := d.r.Lookup(name)
	return ok && c.AllowOOB, ok
}

func (d registryDispatcher) Execute(ctx context.Context, name string, args json.RawMessage, deliver func(json.RawMessage, error)) {
	deliver(d.r.Call(ctx, name, args))
}

// FuzzConnection mutates JSON-RPC conversations, seeded with every
// transcript's input turned into requests: every line out is a JSON
// object and the connection ends when the client half-closes.
func FuzzConnection(f *testing.F) {
	for _, s := range wiretest.TranscriptInputs(f, "../tests/qmp/testdata") {
		s = bytes.ReplaceAll(s, []byte(`"execute"`), []byte(`"jsonrpc":"2.0","id":1,"method"`))
		f.Add(bytes.ReplaceAll(s, []byte(`"arguments"`), []byte(`"params"`)))
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":[1],"method":"query-version"}` + "\n[1]\n{\"id\":\"\xc3\",\"method\":\"x\"}\n"))
	reg := schema.NewRegistry()
	qmp.RegisterCommands(reg)
	schema.Define(reg, "query-version", func(context.Context, *schema.NoArgs) (*schema.VersionInfo, error) {
		return &schema.VersionInfo{Package: "fuzz"}, nil
	})
	reg.AddIntrospection()
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := NewServer(registryDispatcher{reg}, events.NewBus(), zap.NewNop())
		a, b := wiretest.SocketPair(t)
		defer b.Close()
		srv.serveConn(a)
		wiretest.CheckLines(t, in, wiretest.Exchange(t, b, in))
		srv.Close()
	})
}
