package nbd

import (
	"blockd/blockcore"
	"blockd/nbd"
	"blockd/schema"
)

var _ blockcore.Reopener = (*node)(nil)

// ReopenPrepare is nbd_client_reopen_prepare: the connection stays; its
// options must be given unchanged (the graph checks them), and a
// read-only export cannot become writable.
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	if !rs.ReadOnly && n.Info.Flags&nbd.FlagReadOnly != 0 {
		return nil, nil, schema.Errorf("Can't reopen read-only NBD mount as read/write")
	}
	return func() {}, func() {}, nil
}
