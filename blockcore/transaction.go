package blockcore

import (
	"blockd/schema"
)

// The transaction command (QEMU 7.2's qmp_transaction) runs a list of
// actions all or nothing. Every action type is registered with its
// prepare step, which does the work that can fail and returns the steps
// that finish it (TxAction); the transaction prepares the actions in
// order, then commits all of them in order, or, when one prepare fails,
// aborts every action prepared so far (the failing one included) in
// reverse order; then every action's clean step runs, in order. The
// standalone commands of the same names are one-action transactions, as
// in QEMU.
//
// A package adds an action type with one call, for example
//
//	blockcore.RegisterAction(g, "block-dirty-bitmap-add", blockcore.RefuseGrouped,
//		func(c *blockcore.TxContext, a *schema.BlockDirtyBitmapAdd) (*blockcore.TxAction, error) {
//			... add the bitmap, or return the error ...
//			return &blockcore.TxAction{Abort: func() { ... remove it ... }}, nil
//		})
//
// after declaring the type in schema.TransactionAction (see
// schema/transaction.go).

// TxAction holds the steps that finish one prepared action. Exactly one of
// Commit and Abort runs, then Clean; any may be nil. A prepare that fails
// may still return a TxAction: its Abort and Clean run like the others'
// (QEMU calls abort and clean for the failing action too).
type TxAction struct {
	Commit, Abort, Clean func()
}

// TxContext is what an action's prepare sees of its transaction.
type TxContext struct {
	// Mode is the transaction's completion-mode.
	Mode   schema.ActionCompletionMode
	shared map[any]any
}

// Shared returns the transaction's value for key, made by mk on first
// use: state the actions of one kind share across a transaction (the jobs
// package's group of jobs in completion-mode grouped).
func (c *TxContext) Shared(key any, mk func() any) any {
	if v, ok := c.shared[key]; ok {
		return v
	}
	if c.shared == nil {
		c.shared = map[any]any{}
	}
	v := mk()
	c.shared[key] = v
	return v
}

// GroupedMode says whether an action type accepts completion-mode
// grouped. QEMU 7.2 refuses it for every action but the backups (and
// abort, which fails anyway) with the same text, before anything else
// of the action is checked.
type GroupedMode bool

const (
	AcceptGrouped GroupedMode = true
	RefuseGrouped GroupedMode = false
)

type actionType struct {
	grouped GroupedMode
	prepare func(c *TxContext, data any) (*TxAction, error)
}

// RegisterAction registers the transaction action type kind, whose data
// decodes into T (the Data of its wrapper in schema.TransactionAction).
func RegisterAction[T any](g *Graph, kind string, grouped GroupedMode, prepare func(c *TxContext, a *T) (*TxAction, error)) {
	if g.actions == nil {
		g.actions = map[string]actionType{}
	}
	g.actions[kind] = actionType{grouped: grouped, prepare: func(c *TxContext, data any) (*TxAction, error) {
		a, ok := data.(*T)
		if !ok {
			return nil, schema.Errorf("internal error: transaction action '%s' has data of type %T", kind, data)
		}
		return prepare(c, a)
	}}
}

// ActionKinds lists the registered action types (a test checks them
// against the schema's).
func (g *Graph) ActionKinds() []string {
	out := make([]string, 0, len(g.actions))
	for k := range g.actions {
		out = append(out, k)
	}
	return out
}

// Transaction is the transaction command.
func (g *Graph) Transaction(a *schema.TransactionArgs) error {
	mode := schema.ActionCompletionMode("individual")
	if a.Properties != nil && a.Properties.CompletionMode != nil {
		mode = *a.Properties.CompletionMode
	}
	return g.runActions(a.Actions, mode)
}

// DoAction runs one action as a transaction of its own (QEMU's
// blockdev_do_action), which is what the standalone commands are.
func (g *Graph) DoAction(kind string, data any) error {
	t, ok := g.actions[kind]
	if !ok {
		return schema.Errorf("internal error: no transaction action '%s'", kind)
	}
	return g.run(&TxContext{Mode: "individual"}, []func(*TxContext) (*TxAction, error){
		func(c *TxContext) (*TxAction, error) { return t.prepare(c, data) },
	})
}

func (g *Graph) runActions(actions []schema.TransactionAction, mode schema.ActionCompletionMode) error {
	steps := make([]func(*TxContext) (*TxAction, error), len(actions))
	for i := range actions {
		act := &actions[i]
		steps[i] = func(c *TxContext) (*TxAction, error) {
			t, ok := g.actions[string(act.Type)]
			if !ok {
				return nil, schema.Errorf("internal error: no transaction action '%s'", act.Type)
			}
			if t.grouped == RefuseGrouped && c.Mode != "individual" {
				return nil, schema.Errorf("Action '%s' does not support Transaction property completion-mode = %s", act.Type, c.Mode)
			}
			return t.prepare(c, act.Data())
		}
	}
	return g.run(&TxContext{Mode: mode}, steps)
}

// run prepares, then commits or aborts, then cleans. Every I/O request
// is drained first (bdrv_drain_all), which running jobs see as a pause.
func (g *Graph) run(c *TxContext, prepares []func(*TxContext) (*TxAction, error)) error {
	g.QuiesceAll()
	var prepared []*TxAction
	var err error
	for _, p := range prepares {
		st, perr := p(c)
		if st != nil {
			prepared = append(prepared, st)
		}
		if perr != nil {
			err = perr
			break
		}
	}
	if err == nil {
		for _, st := range prepared {
			if st.Commit != nil {
				st.Commit()
			}
		}
	} else {
		for i := len(prepared) - 1; i >= 0; i-- {
			if prepared[i].Abort != nil {
				prepared[i].Abort()
			}
		}
	}
	for _, st := range prepared {
		if st.Clean != nil {
			st.Clean()
		}
	}
	return err
}

// registerActions registers the graph's own action types.
func (g *Graph) registerActions() {
	g.registerBitmapActions()
	RegisterAction(g, "abort", AcceptGrouped, func(*TxContext, *schema.AbortArgs) (*TxAction, error) {
		return nil, schema.Errorf("Transaction aborted using Abort action")
	})
	RegisterAction(g, "blockdev-snapshot", RefuseGrouped, func(_ *TxContext, a *schema.BlockdevSnapshotArgs) (*TxAction, error) {
		return g.prepareSnapshot(a)
	})
	RegisterAction(g, "blockdev-snapshot-sync", RefuseGrouped, func(_ *TxContext, a *schema.BlockdevSnapshotSyncArgs) (*TxAction, error) {
		return g.prepareSnapshotSyncAction(a)
	})
	RegisterAction(g, "blockdev-snapshot-internal-sync", RefuseGrouped, func(_ *TxContext, a *schema.BlockdevSnapshotInternalArgs) (*TxAction, error) {
		return g.prepareSnapshotInternal(a.Device, a.Name)
	})
}
