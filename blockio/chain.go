package blockio

import "fmt"

// Backed is implemented by devices whose unallocated ranges read from a
// backing device (a qcow2 layer, or a node's data path in front of one).
// Backing returns nil when there is none.
type Backed interface {
	Backing() Device
}

// BackingOf is dev's backing device, or nil when it has none. Filters
// answer with their child's: a filter is not a layer of the chain.
func BackingOf(dev Device) Device {
	if b, ok := dev.(Backed); ok {
		return b.Backing()
	}
	return nil
}

// ChainStatus is the status of [off, off+length) in the first layer of
// dev's backing chain that defines it, as bdrv_block_status_above sees
// it: depth is 1 when dev itself defines the range, 2 for its backing
// file and so on, and 0 when no layer does (the range then reads as
// zeroes: past the end of a shorter backing file, or below the last
// layer). The returned Length never exceeds length.
func ChainStatus(dev Device, off, length int64) (st Status, depth int, err error) {
	for depth = 1; ; depth++ {
		st, err = dev.BlockStatus(off, length)
		if err != nil {
			return Status{}, 0, err
		}
		if st.Length <= 0 {
			return Status{}, 0, fmt.Errorf("block status at %d: empty range", off)
		}
		length = min(length, st.Length)
		st.Length = length
		if st.Flags&(StatusAllocated|StatusData|StatusZero) != 0 {
			return st, depth, nil
		}
		next := BackingOf(dev)
		if next == nil {
			return Status{Flags: StatusZero, Length: length}, 0, nil
		}
		size, err := next.Size()
		if err != nil {
			return Status{}, 0, err
		}
		if off >= size {
			return Status{Flags: StatusZero, Length: length}, 0, nil
		}
		length = min(length, size-off)
		dev = next
	}
}

// AllocatedAbove is bdrv_is_allocated_above over a list of layers (top
// first): whether [off, off+n) is defined by one of them, and for how
// many bytes from off that answer holds. A range past the end of a
// shorter layer counts as defined there (it reads as zeroes).
func AllocatedAbove(layers []Device, off, n int64) (bool, int64, error) {
	for _, x := range layers {
		size, err := x.Size()
		if err != nil {
			return false, 0, err
		}
		if off >= size {
			return true, n, nil
		}
		st, err := x.BlockStatus(off, min(n, size-off))
		if err != nil {
			return false, 0, err
		}
		if st.Flags&StatusAllocated != 0 {
			return true, st.Length, nil
		}
		n = min(n, st.Length)
	}
	return false, n, nil
}
