package schema

// BlockdevReopenArgs is blockdev-reopen's argument (QEMU 6.1 and later):
// the nodes to reopen, each with its complete new options. The older
// x-blockdev-reopen (QEMU 4.0 to 6.0) takes one BlockdevOptions as its
// arguments instead.
type BlockdevReopenArgs struct {
	Options []BlockdevOptions `qapi:"options"`
}
