package nbd

import (
	"fmt"
	"syscall"

	"blockd/blockio"
	"blockd/nbd"
	"blockd/schema"
)

// maxRequest is the longest READ or WRITE sent: the server's maximum
// block size, at most 32 MiB.
func (cl *Client) maxRequest() int64 {
	m := int64(nbd.MaxBuffer)
	if cl.Info.MaxBlock != 0 {
		m = min(m, int64(cl.Info.MaxBlock))
	}
	return m
}

func (cl *Client) has(f uint16) bool { return cl.Info.Flags&f != 0 }

// aligned reports whether a request fits the server's minimum block.
func (cl *Client) aligned(off, length int64) bool {
	m := int64(max(cl.Info.MinBlock, 1))
	return off%m == 0 && length%m == 0
}

// ReadAt reads len(p) bytes at off, in pieces of at most maxRequest. A
// request the server's minimum block size does not divide is widened.
func (cl *Client) ReadAt(p []byte, off int64) error {
	if err := blockio.CheckRange(off, int64(len(p)), cl.Info.Size); err != nil {
		return err
	}
	if !cl.aligned(off, int64(len(p))) {
		m := int64(cl.Info.MinBlock)
		start := off / m * m
		end := min((off+int64(len(p))+m-1)/m*m, cl.Info.Size)
		buf := make([]byte, end-start)
		if err := cl.readAligned(buf, start); err != nil {
			return err
		}
		copy(p, buf[off-start:])
		return nil
	}
	return cl.readAligned(p, off)
}

func (cl *Client) readAligned(p []byte, off int64) error {
	step := cl.maxRequest()
	for len(p) > 0 {
		n := min(int64(len(p)), step)
		chunk := p[:n]
		_, err := cl.do(func() *call {
			return &call{req: nbd.Request{Type: nbd.CmdRead, Offset: uint64(off), Length: uint32(n)}, buf: chunk}
		}, nil)
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// errUnaligned: writes the server's block size does not divide are
// refused rather than read-modify-written behind other writers' backs.
func (cl *Client) errUnaligned(off, length int64) error {
	return fmt.Errorf("nbd: request at %d, length %d, not aligned to the server's %d-byte blocks: %w",
		off, length, cl.Info.MinBlock, syscall.EINVAL)
}

func (cl *Client) simple(typ, flags uint16, off, length int64, payload []byte) error {
	_, err := cl.do(func() *call {
		return &call{req: nbd.Request{Type: typ, Flags: flags, Offset: uint64(off), Length: uint32(length)}}
	}, payload)
	return err
}

// WriteAt writes p at off; FUA is sent as a flag when the server takes
// it, else as a flush after the write.
func (cl *Client) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, int64(len(p)), cl.Info.Size); err != nil {
		return err
	}
	if cl.has(nbd.FlagReadOnly) {
		return blockio.ErrReadOnly
	}
	if !cl.aligned(off, int64(len(p))) {
		return cl.errUnaligned(off, int64(len(p)))
	}
	var flags uint16
	fua := f&blockio.FUA != 0
	if fua && cl.has(nbd.FlagSendFUA) {
		flags, fua = nbd.CmdFlagFUA, false
	}
	step := cl.maxRequest()
	for len(p) > 0 {
		n := min(int64(len(p)), step)
		if err := cl.simple(nbd.CmdWrite, flags, off, n, p[:n]); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	if fua {
		return cl.Flush()
	}
	return nil
}

// maxZero is the longest WRITE_ZEROES or TRIM (the length is 32 bits;
// kept aligned to any power-of-two block size).
const maxZero = 1 << 30

// WriteZeroes uses NBD_CMD_WRITE_ZEROES when the server has it (holes
// allowed with MayUnmap, FAST_ZERO with NoFallback), else writes zeroes
// unless NoFallback.
func (cl *Client) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	if err := blockio.CheckRange(off, length, cl.Info.Size); err != nil {
		return err
	}
	if cl.has(nbd.FlagReadOnly) {
		return blockio.ErrReadOnly
	}
	if !cl.aligned(off, length) {
		return cl.errUnaligned(off, length)
	}
	if !cl.has(nbd.FlagSendWriteZeroes) {
		if f&blockio.NoFallback != 0 {
			return blockio.ErrNotSupported
		}
		buf := make([]byte, min(length, 1<<20))
		for length > 0 {
			n := min(length, int64(len(buf)))
			if err := cl.WriteAt(buf[:n], off, f&blockio.FUA); err != nil {
				return err
			}
			off, length = off+n, length-n
		}
		return nil
	}
	var flags uint16
	if f&blockio.MayUnmap == 0 {
		flags |= nbd.CmdFlagNoHole
	}
	if f&blockio.NoFallback != 0 {
		if !cl.has(nbd.FlagSendFastZero) {
			return blockio.ErrNotSupported
		}
		flags |= nbd.CmdFlagFastZero
	}
	fua := f&blockio.FUA != 0
	if fua && cl.has(nbd.FlagSendFUA) {
		flags, fua = flags|nbd.CmdFlagFUA, false
	}
	for length > 0 {
		n := min(length, maxZero)
		if err := cl.simple(nbd.CmdWriteZeroes, flags, off, n, nil); err != nil {
			if err == syscall.ENOTSUP && flags&nbd.CmdFlagFastZero != 0 {
				return blockio.ErrNotSupported
			}
			return err
		}
		off, length = off+n, length-n
	}
	if fua {
		return cl.Flush()
	}
	return nil
}

// Discard sends NBD_CMD_TRIM; a server without it ignores discards, as
// the request is advisory.
func (cl *Client) Discard(off, length int64) error {
	if err := blockio.CheckRange(off, length, cl.Info.Size); err != nil {
		return err
	}
	if !cl.has(nbd.FlagSendTrim) || cl.has(nbd.FlagReadOnly) || !cl.aligned(off, length) {
		return nil
	}
	for length > 0 {
		n := min(length, maxZero)
		if err := cl.simple(nbd.CmdTrim, 0, off, n, nil); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// Flush sends NBD_CMD_FLUSH when the server has a write cache to flush.
func (cl *Client) Flush() error {
	if !cl.has(nbd.FlagSendFlush) {
		return nil
	}
	return cl.simple(nbd.CmdFlush, 0, 0, 0, nil)
}

// BlockStatus asks the server for one extent (REQ_ONE) of the negotiated
// context. Without one everything is data. For base:allocation, a hole
// that is not known to read as zeroes is reported allocated without
// data: its content is the server's, and readers must read it.
func (cl *Client) BlockStatus(off, length int64) (blockio.Status, error) {
	if err := blockio.CheckRange(off, length, cl.Info.Size); err != nil || length == 0 {
		if err == nil {
			err = fmt.Errorf("%w: empty block status query at %d", blockio.ErrOutOfRange, off)
		}
		return blockio.Status{}, err
	}
	all := blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated | blockio.StatusOffsetValid,
		Length: length, HostOffset: off}
	id, ok := cl.Info.Contexts[cl.cfg.Context]
	if !ok || cl.cfg.Context == "" {
		return all, nil
	}
	// Query an aligned range no longer than 2 GiB.
	m := int64(max(cl.Info.MinBlock, 1))
	start := off / m * m
	end := min((min(off+length, start+(1<<31))+m-1)/m*m, cl.Info.Size)
	k, err := cl.do(func() *call {
		return &call{req: nbd.Request{Type: nbd.CmdBlockStatus, Flags: nbd.CmdFlagReqOne,
			Offset: uint64(start), Length: uint32(end - start)}, ctx: id}
	}, nil)
	if err != nil {
		return blockio.Status{}, err
	}
	n := min(int64(k.ext.Length), end-start) - (off - start)
	if n <= 0 {
		// The first aligned block mixes states: call it data.
		n = min(m-(off-start), length)
		return blockio.Status{Flags: all.Flags, Length: n, HostOffset: off}, nil
	}
	st := blockio.Status{Flags: blockio.StatusOffsetValid, Length: min(n, length), HostOffset: off}
	if cl.cfg.Context != nbd.ContextBaseAllocation {
		// x-dirty-bitmap: the context's bit 0 stands where "hole" would
		// (QEMU reports dirty ranges as holes), so the map shows it.
		if k.ext.Flags&1 == 0 {
			st.Flags |= blockio.StatusData | blockio.StatusAllocated
		}
		return st, nil
	}
	switch {
	case k.ext.Flags&nbd.StateZero != 0:
		st.Flags |= blockio.StatusZero | blockio.StatusAllocated
		if k.ext.Flags&nbd.StateHole == 0 {
			st.Flags |= blockio.StatusData
		}
	case k.ext.Flags&nbd.StateHole == 0:
		st.Flags |= blockio.StatusData | blockio.StatusAllocated
	default:
		st.Flags |= blockio.StatusAllocated
	}
	return st, nil
}

// Size is the export's size.
func (cl *Client) Size() (int64, error) { return cl.Info.Size, nil }

// Truncate cannot change an export's size. As nbd_co_truncate without
// "exact" (block_resize), growing is refused and shrinking is accepted
// and changes nothing.
func (cl *Client) Truncate(size int64) error {
	if size > cl.Info.Size {
		return schema.Errorf("Cannot grow NBD nodes")
	}
	return nil
}
