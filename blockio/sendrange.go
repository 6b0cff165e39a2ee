package blockio

// FileRange is where a device's range lies while a SendRange call runs:
// the host file FD holds the range's bytes, unchanged, from Offset on.
// FD is only valid during the call.
type FileRange struct {
	FD     int
	Offset int64
	// ReadAt copies bytes of the range into p, off counting from the
	// range's start, as the device's ReadAt would (past the end of the
	// file: zeroes). It is for what a sink could not pass on whole.
	ReadAt func(p []byte, off int64) error
}

// RangeSender is implemented by devices that can lend a sink the host
// file behind a range, so that an export can hand the file's pages to a
// socket (sendfile) instead of copying them through a buffer. A device
// implements it only when reads of such a range are exactly the file's
// bytes: not for filters that change or watch reads (copy-on-read,
// throttle, encryption), nor for files opened with O_DIRECT, whose data
// is not in the page cache.
type RangeSender interface {
	// SendRange calls sink once with the file range that holds the n
	// bytes at off, while their place in the file cannot change; sink
	// must not block on anything a request in flight could be waiting
	// for (the node cannot be drained meanwhile). It returns
	// ErrNotSupported, without calling sink, when the bytes are not one
	// stretch of one file; other errors come from the checks or sink.
	// A caller that gets an error reads the range with ReadAt instead,
	// so only a successful SendRange counts as a read.
	SendRange(off, n int64, sink func(FileRange) error) error
}

// SendRange is dev's SendRange, or ErrNotSupported when it has none.
func SendRange(dev Device, off, n int64, sink func(FileRange) error) error {
	if s, ok := dev.(RangeSender); ok {
		return s.SendRange(off, n, sink)
	}
	return ErrNotSupported
}
