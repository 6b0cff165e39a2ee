package qcow2

// MakeEmpty drops every cluster of the active image, so that all of it
// reads from the backing file again (QEMU's qcow2_make_empty, which
// `qemu-img commit` calls on the committed image unless -d). Unlike
// Discard it leaves clusters unallocated, not reading as zero, on every
// version. Freed clusters are released (their refcounts drop, the file
// ranges are punched); the file itself is not truncated.
func (img *Image) MakeEmpty() error {
	size := img.size.Load()
	if err := img.usable(true); err != nil {
		return err
	}
	if size == 0 {
		return nil
	}
	if err := img.zeroRange(0, size, opEmpty, 0); err != nil {
		return err
	}
	return img.Flush()
}
