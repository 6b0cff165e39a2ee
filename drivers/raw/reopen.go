package raw

import (
	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

var (
	_ blockcore.Reopener = (*node)(nil)
	_ blockcore.FileUser = (*node)(nil)
)

// checkWindow validates a window against the containing file as
// raw_apply_options does, at open and at reopen.
func checkWindow(file blockio.Device, offset int64, hasSize bool, size int64) error {
	if offset < 0 {
		return schema.Errorf("Parameter 'offset' expects a non-negative number below 2^64")
	}
	if hasSize && size < 0 {
		return schema.Errorf("Parameter 'size' expects a non-negative number below 2^64")
	}
	fileLen, err := file.Size()
	if err != nil {
		return schema.Errorf("Could not get image size")
	}
	if offset > fileLen {
		return schema.Errorf("Offset (%d) cannot be greater than size of the containing file (%d)", offset, fileLen)
	}
	if hasSize && fileLen-offset < size {
		return schema.Errorf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)", offset, size, fileLen)
	}
	if hasSize && size%sectorSize != 0 {
		return schema.Errorf("Specified size is not multiple of %d", sectorSize)
	}
	return nil
}

// ReopenPrepare is raw_reopen_prepare: offset and size may change (left
// out, they return to 0 and "follow the file"); they are checked against
// the current file child.
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	offset, hasOffset := rs.Int("offset")
	size, hasSize := rs.Int("size")
	if err := checkWindow(n.file, offset, hasSize, size); err != nil {
		return nil, nil, err
	}
	if !hasSize {
		size = -1
	}
	commit = func() {
		n.offset, n.hasOffset, n.size, n.hasSize = offset, hasOffset, size, hasSize
	}
	return commit, func() {}, nil
}

// SetFile follows a reopen that switched the file child.
func (n *node) SetFile(dev blockio.Device) { n.file = dev }
