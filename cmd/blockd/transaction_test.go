package main

import (
	"slices"
	"testing"

	"go.uber.org/zap"

	"blockd/schema"
)

// Every action type the schema lets through to transaction has its steps
// registered, and no registered type is unreachable from the schema.
func TestTransactionActionsMatchSchema(t *testing.T) {
	d := newDaemon(&config{}, zap.NewNop())
	got := d.graph.ActionKinds()
	want := schema.TransactionActionKind("").EnumValues()
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("registered transaction actions %v, schema offers %v", got, want)
	}
}
