package luks

import (
	"blockd/blockcore"
	"blockd/blockio"
)

var (
	_ blockcore.Reopener = (*node)(nil)
	_ blockcore.FileUser = (*node)(nil)
)

// ReopenPrepare is block_crypto_reopen_prepare: nothing to check; the
// options (key-secret) must be given unchanged, which the graph checks.
func (n *node) ReopenPrepare(*blockcore.ReopenState) (commit, abort func(), err error) {
	return func() {}, func() {}, nil
}

// SetFile takes the new file child of a reopen (the node is drained).
// The key stays the one unlocked at open, as in QEMU.
func (n *node) SetFile(dev blockio.Device) { n.file = dev }
