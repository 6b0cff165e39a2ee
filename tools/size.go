package tools

import "blockd/internal/qemu"

// Sizes are parsed by internal/qemu.Strtosz, as qemu-img and qemu-io
// parse them.

var (
	errSizeInvalid = qemu.ErrInvalidSize
	errSizeRange   = qemu.ErrSizeRange
)

// parseSizeMax is a size limited to max (qemu-img's cvtnum_full).
func parseSizeMax(s string, max uint64) (int64, error) {
	v, err := qemu.Strtosz(s)
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, errSizeRange
	}
	return int64(v), nil
}
