package blockio

import (
	"bytes"
	"encoding/binary"
)

// zeroBlock is what AllZero compares against: bytes.Equal runs
// vectorised, several times faster than a loop over words.
var zeroBlock [4096]byte

// AllZero reports whether p holds only zero bytes (detect-zeroes, sparse
// copies, zero scans). It looks at the first word first: data nearly
// always differs from zero there, and the test then costs one load.
func AllZero(p []byte) bool {
	if len(p) >= 8 && binary.NativeEndian.Uint64(p) != 0 {
		return false
	}
	for len(p) > 0 {
		n := min(len(p), len(zeroBlock))
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
