package blockio

// WritebackStarter is implemented by devices that can start writing their
// cached writes to stable storage without waiting for them (a file's
// sync_file_range), so that a later Flush has only the rest to wait for.
// A long copy asks for it as it goes: its final flush, which must come
// before anything points at the copied data, is then short.
type WritebackStarter interface {
	StartWriteback() error
}

// StartWriteback is dev's StartWriteback; nothing for other devices. It
// is a hint: a failed write-back shows in the next Flush.
func StartWriteback(dev Device) error {
	if w, ok := dev.(WritebackStarter); ok {
		return w.StartWriteback()
	}
	return nil
}
