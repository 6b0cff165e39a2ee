// Package graphtest owns the test harness for drivers that need the
// block graph: a graph with its owner goroutine and command registry, as
// the daemon wires them, commands given as JSON, and node lookups. It is
// for tests only.
package graphtest

import (
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/events"
	"blockd/schema"
)

// Env is a graph with its owner goroutine.
type Env struct {
	G   *blockcore.Graph
	O   *blockcore.Owner
	Bus *events.Bus
	Reg *schema.Registry
}

// New starts a graph and its owner, stopped when the test ends. setup
// registers more commands (object-add) before the owner runs.
func New(t testing.TB, setup ...func(e *Env)) *Env {
	t.Helper()
	e := &Env{Bus: events.NewBus(), Reg: schema.NewRegistry()}
	e.G = blockcore.NewGraph(zap.NewNop(), e.Bus)
	e.G.RegisterCommands(e.Reg)
	for _, f := range setup {
		f(e)
	}
	e.O = blockcore.NewOwner(e.Reg)
	go e.O.Run()
	t.Cleanup(func() {
		_ = e.O.Do(e.G.CloseAll)
		e.O.Stop()
	})
	return e
}

// Exec runs a command with JSON arguments on the owner, as a monitor does.
func (e *Env) Exec(name, args string) error {
	var raw json.RawMessage
	if args != "" {
		raw = json.RawMessage(args)
	}
	_, err := e.O.Call(context.Background(), name, raw)
	return err
}

// Must runs a command and fails the test if it fails.
func (e *Env) Must(t testing.TB, name, args string) {
	t.Helper()
	if err := e.Exec(name, args); err != nil {
		t.Fatalf("%s %s: %v", name, args, err)
	}
}

// Node returns the node named name, failing the test if there is none.
func (e *Env) Node(t testing.TB, name string) *blockcore.Node {
	t.Helper()
	var n *blockcore.Node
	_ = e.O.Do(func() { n = e.G.Lookup(name) })
	if n == nil {
		t.Fatalf("no node %s", name)
	}
	return n
}

// IO is the data path of the node named name.
func (e *Env) IO(t testing.TB, name string) blockio.Device {
	t.Helper()
	return e.Node(t, name).IO()
}
