package blockcore

// tx collects the undo and finish steps of a graph change so that it can
// be applied completely or not at all (QEMU's Transaction). Steps run on
// the owner goroutine.
type tx struct {
	aborts  []func()
	commits []func()
	done    bool
}

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
