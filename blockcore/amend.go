package blockcore

import "blockd/schema"

// Amender is implemented by formats that x-blockdev-amend can change
// while open (qcow2). Amend runs in the amend job's worker, with the
// options of the node's own driver.
type Amender interface {
	Amend(opts *schema.BlockdevAmendOptions, force bool) error
}
