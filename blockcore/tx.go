package blockcore

import (
	"slices"

	"blockd/schema"
)

// tx collects the undo and finish steps of a graph change so that it can
// be applied completely or not at all (QEMU's Transaction). Steps run on
// the owner goroutine.
type tx struct {
	g       *Graph
	aborts  []func()
	commits []func()
	done    bool
}

// begin opens a transaction the graph knows of until it finishes, so that
// recovery from a panic can abort it.
func (g *Graph) begin() *tx {
	t := &tx{g: g}
	g.openTx = append(g.openTx, t)
	return t
}

// RecoverFromPanic puts the graph back after a panic on the owner
// goroutine (Owner.OnPanic): the transactions left open are aborted,
// newest first, so every edge, permission and lock is as before the
// command, and the nodes left drained are resumed, so I/O goes on.
func (g *Graph) RecoverFromPanic() {
	for len(g.openTx) > 0 {
		t := g.openTx[len(g.openTx)-1]
		_ = t.finish(errAborted)
	}
	for len(g.drains) > 0 {
		d := g.drains[len(g.drains)-1]
		d.end()
		g.drains = g.drains[:len(g.drains)-1]
	}
}

var errAborted = schema.Errorf("aborted after an internal error")

// onAbort registers an undo step; they run in reverse order.
func (t *tx) onAbort(f func()) { t.aborts = append(t.aborts, f) }

// onCommit registers a finishing step; they run in order.
func (t *tx) onCommit(f func()) { t.commits = append(t.commits, f) }

// finish commits when err is nil and aborts otherwise, returning err.
func (t *tx) finish(err error) error {
	if t.done {
		return err
	}
	t.done = true
	if t.g != nil {
		t.g.openTx = slices.DeleteFunc(t.g.openTx, func(x *tx) bool { return x == t })
	}
	if err != nil {
		for i := len(t.aborts) - 1; i >= 0; i-- {
			t.aborts[i]()
		}
		return err
	}
	for _, f := range t.commits {
		f()
	}
	return nil
}
