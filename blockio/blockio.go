// Package blockio owns the data-path contract shared by every layer of
// blockd: block drivers implement Device, graph nodes forward it to their
// children, and jobs and tools call it. It has no dependencies so that
// format engines (qcow2) and protocol drivers (file) can be written and
// tested without the block graph.
package blockio

import (
	"errors"
	"fmt"
)

// WriteFlags modify a write request.
type WriteFlags uint8

const (
	// FUA asks for the data to be on stable storage when the call returns.
	FUA WriteFlags = 1 << iota
	// MayUnmap lets WriteZeroes deallocate instead of writing zeroes.
	MayUnmap
	// NoFallback makes WriteZeroes fail with ErrNotSupported instead of
	// writing a buffer of zeroes when no efficient method exists.
	NoFallback
	// Compressed asks WriteAt to store the data compressed. The request
	// must be whole clusters of a device that supports it (see
	// Compressor); others ignore the flag.
	Compressed
)

// Compressor is implemented by devices that honour the Compressed flag.
type Compressor interface {
	// ClusterSize is the unit of compressed writes.
	ClusterSize() int64
}

// StatusFlags describe a range returned by BlockStatus.
type StatusFlags uint8

const (
	// StatusData: the range holds data in this layer (or below, see Depth).
	StatusData StatusFlags = 1 << iota
	// StatusZero: the range reads as zeroes.
	StatusZero
	// StatusAllocated: this layer defines the content; reads do not fall
	// through to a backing file.
	StatusAllocated
	// StatusOffsetValid: HostOffset is the offset of the data in the layer
	// below (the file child of a format driver).
	StatusOffsetValid
)

// Status is the answer of BlockStatus for the range [off, off+Length).
type Status struct {
	Flags      StatusFlags
	Length     int64 // bytes from the queried offset with this status, > 0
	HostOffset int64 // valid with StatusOffsetValid
}

// Device is the data path of one block node. Implementations must be safe
// for concurrent callers. Offsets and lengths are in bytes; requests past
// Size fail with ErrOutOfRange unless the device can grow.
type Device interface {
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, flags WriteFlags) error
	WriteZeroes(off, length int64, flags WriteFlags) error
	Discard(off, length int64) error
	Flush() error
	// BlockStatus describes the range starting at off, at most length
	// bytes long; Status.Length may be shorter than asked.
	BlockStatus(off, length int64) (Status, error)
	Size() (int64, error)
	Truncate(size int64) error
}

var (
	// ErrNotSupported: the operation is not available on this device.
	ErrNotSupported = errors.New("operation not supported")
	// ErrReadOnly: a write was attempted on a device opened read-only.
	ErrReadOnly = errors.New("device is read-only")
	// ErrOutOfRange: the request lies past the end of the device.
	ErrOutOfRange = errors.New("request out of range")
)

// CheckRange validates a request against the device size.
func CheckRange(off, length, size int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("%w: offset %d length %d size %d", ErrOutOfRange, off, length, size)
	}
	return nil
}
