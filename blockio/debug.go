package blockio

// DebugEventer is implemented by devices that react to the debug events
// a format driver above them raises when it does its own work (QEMU's
// BlkdebugEvent: l2_load, refblock_update_part, cluster_alloc, ...):
// blkdebug, whose rules can arm errors on them.
type DebugEventer interface {
	DebugEvent(name string)
}

// debugHooked is a device that stands for another one (a graph node's
// data path) and knows whether that one takes debug events.
type debugHooked interface {
	DebugEvents() func(name string)
}

// DebugEvents returns the function that raises debug events on dev
// (QEMU's BLKDBG_EVENT(child, ...)), or nil when dev takes none, which is
// what a driver keeps to pay nothing for events when no blkdebug node is
// below it. As in QEMU only the device itself is asked, not those below.
func DebugEvents(dev Device) func(name string) {
	switch d := dev.(type) {
	case debugHooked:
		return d.DebugEvents()
	case DebugEventer:
		return d.DebugEvent
	}
	return nil
}
