package null

import "blockd/blockcore"

var _ blockcore.Reopener = (*node)(nil)

// ReopenPrepare is null_reopen_prepare: nothing of null-co changes on a
// reopen (its options must be given unchanged, which the graph checks).
func (n *node) ReopenPrepare(*blockcore.ReopenState) (commit, abort func(), err error) {
	return func() {}, func() {}, nil
}
