package qmp

import (
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/wire/wiretest"
	"blockd/schema"
)

// registryDispatcher runs commands straight on a registry: the protocol
// layer is what is fuzzed, not the graph.
type registryDispatcher struct{ r *schema.Registry }

func (d registryDispatcher) Lookup(name string) (bool, bool) {
	c, ok := d.r.Lookup(name)
	return ok && c.AllowOOB, ok
}

func (d registryDispatcher) Execute(ctx context.Context, name string, args json.RawMessage, deliver func(json.RawMessage, error)) {
	deliver(d.r.Call(ctx, name, args))
}

func fuzzRegistry() *schema.Registry {
	r := schema.NewRegistry()
	RegisterCommands(r)
	schema.Define(r, "query-version", func(context.Context, *schema.NoArgs) (*schema.VersionInfo, error) {
		return &schema.VersionInfo{Qemu: schema.VersionTriple{Major: 7, Minor: 2}, Package: "fuzz"}, nil
	})
	r.AddIntrospection()
	return r
}

// FuzzMonitor mutates whole QMP conversations, seeded with every
// transcript's input: whatever comes in, every line out is a JSON object
// and the session ends when the client half-closes (no hang, no panic).
func FuzzMonitor(f *testing.F) {
	for _, s := range wiretest.TranscriptInputs(f, "../tests/qmp/testdata") {
		f.Add(s)
	}
	f.Add([]byte("{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-version\",\"id\":\"\xff\"}\n"))
	reg := fuzzRegistry()
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := NewServer(registryDispatcher{reg}, events.NewBus(), zap.NewNop(), Options{MaxMessage: 1 << 16})
		a, b := wiretest.SocketPair(t)
		defer b.Close()
		srv.ServeConn(a)
		lines := wiretest.Exchange(t, b, in)
		if len(lines) == 0 {
			t.Fatalf("no greeting for %q", in)
		}
		wiretest.CheckLines(t, in, lines)
		srv.Close()
	})
}
