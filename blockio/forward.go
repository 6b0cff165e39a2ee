package blockio

// Forward is a Device that passes every request to Child unchanged.
// Filter drivers embed it and override only the requests they change;
// Child may be replaced only while no request runs (a drained node).
type Forward struct{ Child Device }

func (f *Forward) ReadAt(p []byte, off int64) error { return f.Child.ReadAt(p, off) }
func (f *Forward) WriteAt(p []byte, off int64, fl WriteFlags) error {
	return f.Child.WriteAt(p, off, fl)
}
func (f *Forward) WriteZeroes(off, n int64, fl WriteFlags) error {
	return f.Child.WriteZeroes(off, n, fl)
}
func (f *Forward) Discard(off, n int64) error { return f.Child.Discard(off, n) }
func (f *Forward) Flush() error               { return f.Child.Flush() }
func (f *Forward) BlockStatus(off, n int64) (Status, error) {
	return f.Child.BlockStatus(off, n)
}
func (f *Forward) Size() (int64, error)   { return f.Child.Size() }
func (f *Forward) Truncate(n int64) error { return f.Child.Truncate(n) }

// Backing is the child's: a filter is not a layer of the chain, so what
// its child leaves unallocated reads from the child's backing file, and
// ChainStatus must look there rather than call the range a hole.
func (f *Forward) Backing() Device { return BackingOf(f.Child) }

// SetFile follows a reopen that switched the filter's child.
func (f *Forward) SetFile(dev Device) { f.Child = dev }
