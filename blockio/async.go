package blockio

// AsyncDevice is implemented by devices that can start a read or a write
// and return before it ends, so that a caller serving many requests (an
// NBD connection) needs no goroutine waiting on each one. A device that
// stacks on others implements it by passing requests on when the device
// under it starts them, and declines otherwise.
type AsyncDevice interface {
	// EndsRequests reports whether the device starts requests now at
	// all, so that a caller builds nothing for one that never does. It
	// is a hint: a device that says yes may still decline a request.
	EndsRequests() bool
	// StartReadAt starts reading len(p) bytes at off and reports true;
	// done is then called exactly once, on any goroutine, possibly
	// before StartReadAt returns, and p belongs to the device until
	// then. It reports false, having done nothing, when the request
	// cannot start that way (the device, this request or the device's
	// state does not allow it); the caller then uses ReadAt.
	//
	// done runs where the device delivers completions, other requests'
	// too, so it must not block: it hands the outcome on and returns.
	StartReadAt(p []byte, off int64, done func(error)) bool
	// StartWriteAt is StartReadAt for WriteAt.
	StartWriteAt(p []byte, off int64, flags WriteFlags, done func(error)) bool
}

// EndsRequests is dev's EndsRequests, or false when dev is no
// AsyncDevice.
func EndsRequests(dev Device) bool {
	a, ok := dev.(AsyncDevice)
	return ok && a.EndsRequests()
}

// StartReadAt is dev's StartReadAt, or false when dev has none.
func StartReadAt(dev Device, p []byte, off int64, done func(error)) bool {
	if a, ok := dev.(AsyncDevice); ok {
		return a.StartReadAt(p, off, done)
	}
	return false
}

// StartWriteAt is dev's StartWriteAt, or false when dev has none.
func StartWriteAt(dev Device, p []byte, off int64, flags WriteFlags, done func(error)) bool {
	if a, ok := dev.(AsyncDevice); ok {
		return a.StartWriteAt(p, off, flags, done)
	}
	return false
}
