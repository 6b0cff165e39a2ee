package exports

import (
	"blockd/blockcore"
	"blockd/blockio"
)

// ExportStats is what metrics show of one export.
type ExportStats struct {
	ID, Type, Node string
	// Connections is the number of NBD clients connected now (0 for fuse).
	Connections int
	// IO counts the requests clients made through the export.
	IO *blockcore.IOStats
}

// Stats lists the exports with their counters. Owner goroutine only; the
// counters themselves may be read anywhere.
func (r *Registry) Stats() []ExportStats {
	out := make([]ExportStats, 0, len(r.list))
	for _, x := range r.list {
		s := ExportStats{ID: x.id, Type: string(x.typ), Node: x.edge.Node.Name(), IO: &x.stats}
		if x.nbd != nil {
			s.Connections = x.nbd.Connections()
		}
		out = append(out, s)
	}
	return out
}

// counted counts the requests an export's clients make, with the same
// counters as a node's data path.
type counted struct {
	blockio.Device
	s *blockcore.IOStats
}

func (c counted) ReadAt(p []byte, off int64) error {
	t := blockcore.StartIO()
	err := c.Device.ReadAt(p, off)
	c.s.Account(blockcore.OpRead, off, int64(len(p)), t, err)
	return err
}

func (c counted) SendRange(off, n int64, sink func(blockio.FileRange) error) error {
	t := blockcore.StartIO()
	err := blockio.SendRange(c.Device, off, n, sink)
	if err == nil { // a failure is followed by a read, which counts
		c.s.Account(blockcore.OpRead, off, n, t, nil)
	}
	return err
}

func (c counted) EndsRequests() bool { return blockio.EndsRequests(c.Device) }

func (c counted) StartReadAt(p []byte, off int64, done func(error)) bool {
	t := blockcore.StartIO()
	return blockio.StartReadAt(c.Device, p, off, func(err error) {
		c.s.Account(blockcore.OpRead, off, int64(len(p)), t, err)
		done(err)
	})
}

func (c counted) StartWriteAt(p []byte, off int64, f blockio.WriteFlags, done func(error)) bool {
	t := blockcore.StartIO()
	return blockio.StartWriteAt(c.Device, p, off, f, func(err error) {
		c.s.Account(blockcore.OpWrite, off, int64(len(p)), t, err)
		done(err)
	})
}

func (c counted) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	t := blockcore.StartIO()
	err := c.Device.WriteAt(p, off, f)
	c.s.Account(blockcore.OpWrite, off, int64(len(p)), t, err)
	return err
}

func (c counted) WriteZeroes(off, n int64, f blockio.WriteFlags) error {
	t := blockcore.StartIO()
	err := c.Device.WriteZeroes(off, n, f)
	c.s.Account(blockcore.OpWriteZeroes, off, n, t, err)
	return err
}

func (c counted) Discard(off, n int64) error {
	t := blockcore.StartIO()
	err := c.Device.Discard(off, n)
	c.s.Account(blockcore.OpDiscard, off, n, t, err)
	return err
}

func (c counted) Flush() error {
	t := blockcore.StartIO()
	err := c.Device.Flush()
	c.s.Account(blockcore.OpFlush, 0, 0, t, err)
	return err
}

// Backing keeps block status through the chain working.
func (c counted) Backing() blockio.Device { return blockio.BackingOf(c.Device) }
