package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"blockd/nbd"
)

// errLost: the connection broke (EOF, reset, closed). Requests on it are
// retried on the next connection while a reconnect is awaited.
var errLost = errors.New("nbd: connection lost")

// protocolError is a server that broke the protocol: the client gives
// up on the server for good (QEMU's NBD_CLIENT_QUIT).
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "nbd: protocol error: " + e.msg }

func protoErr(format string, args ...any) error {
	return &protocolError{fmt.Sprintf(format, args...)}
}

// call is one request in flight. The reader goroutine fills it and closes
// done; until then the caller waits and does not touch buf.
type call struct {
	req  nbd.Request
	buf  []byte // READ: the destination
	got  uint64 // READ: bytes covered by data and hole chunks
	ctx  uint32 // BLOCK_STATUS: the context id asked for
	ext  nbd.Extent
	next bool // BLOCK_STATUS: an extent arrived
	err  error
	done chan struct{}
}

// conn is one negotiated connection: a reader goroutine matches replies
// to calls by cookie, so any number of requests are in flight at once
// and no goroutine exists per request.
type conn struct {
	nc   net.Conn
	r    *bufio.Reader
	info *nbd.ExportInfo

	wmu sync.Mutex // one request on the wire at a time

	mu      sync.Mutex
	pending map[uint64]*call
	cookie  uint64
	err     error         // why the connection ended; set once
	done    chan struct{} // closed when the reader has ended
}

func newConn(nc net.Conn, info *nbd.ExportInfo) *conn {
	c := &conn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), info: info,
		pending: map[uint64]*call{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

// shutdown ends the connection with err (the first reason wins). The
// reader then fails every call in flight: only the reader completes
// calls, so none is completed while it still writes into its buffer.
func (c *conn) shutdown(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	_ = c.nc.Close()
}

// drain is the reader's last act: every call still waiting fails.
func (c *conn) drain(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	calls := c.pending
	c.pending = nil
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, cl := range calls {
		cl.err = err
		close(cl.done)
	}
}

// broken returns why the connection ended, or nil.
func (c *conn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// close sends NBD_CMD_DISC when the connection is still good and ends it.
func (c *conn) close() {
	if c.broken() == nil {
		c.wmu.Lock()
		_, _ = c.nc.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdDisc}))
		c.wmu.Unlock()
	}
	c.shutdown(errLost)
	<-c.done
}

// roundTrip sends one request (payload for WRITE) and waits for its
// reply. The error is errLost or a *protocolError when the connection
// ended, else the server's answer.
func (c *conn) roundTrip(cl *call, payload []byte) error {
	cl.done = make(chan struct{})
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cl.req.Cookie = c.cookie
	c.pending[cl.req.Cookie] = cl
	c.mu.Unlock()

	hdr := nbd.AppendRequest(make([]byte, 0, nbd.RequestSize), cl.req)
	c.wmu.Lock()
	var err error
	if payload != nil {
		bufs := net.Buffers{hdr, payload}
		_, err = bufs.WriteTo(c.nc)
	} else {
		_, err = c.nc.Write(hdr)
	}
	c.wmu.Unlock()
	if err != nil {
		c.shutdown(errLost)
	}
	<-cl.done
	return cl.err
}

// take removes the call of a cookie that a reply ends.
func (c *conn) take(cookie uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[cookie]
	delete(c.pending, cookie)
	return cl
}

func (c *conn) peek(cookie uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

// readLoop reads replies until the connection ends.
func (c *conn) readLoop() {
	defer close(c.done)
	for {
		if err := c.readReply(); err != nil {
			var pe *protocolError
			if !errors.As(err, &pe) {
				err = errLost
			}
			c.drain(err)
			return
		}
	}
}

// readReply reads one simple reply or structured chunk and applies it.
func (c *conn) readReply() error {
	var m [4]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil {
		return err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case nbd.MagicSimple:
		return c.readSimple()
	case nbd.MagicStructured:
		if !c.info.Structured {
			return protoErr("structured reply without negotiation")
		}
		return c.readChunk()
	}
	return protoErr("invalid reply magic 0x%08x", binary.BigEndian.Uint32(m[:]))
}

func (c *conn) readSimple() error {
	var h [12]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(h[:])
	cookie := binary.BigEndian.Uint64(h[4:])
	cl := c.peek(cookie)
	if cl == nil {
		return protoErr("reply to unknown handle %d", cookie)
	}
	if errno == 0 && cl.req.Type == nbd.CmdRead {
		if c.info.Structured {
			return protoErr("simple reply to a structured read")
		}
		if _, err := io.ReadFull(c.r, cl.buf); err != nil {
			return err
		}
	}
	if errno == 0 && cl.req.Type == nbd.CmdBlockStatus {
		return protoErr("simple reply to block status")
	}
	if errno != 0 {
		cl.err = serverErr(errno)
	}
	c.complete(cookie)
	return nil
}

func (c *conn) complete(cookie uint64) {
	if cl := c.take(cookie); cl != nil {
		close(cl.done)
	}
}

// maxChunkMeta bounds a non-data chunk's payload.
const maxChunkMeta = 1 << 20

func (c *conn) readChunk() error {
	var h [16]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return err
	}
	flags := binary.BigEndian.Uint16(h[:])
	typ := binary.BigEndian.Uint16(h[2:])
	cookie := binary.BigEndian.Uint64(h[4:])
	length := binary.BigEndian.Uint32(h[12:])
	cl := c.peek(cookie)
	if cl == nil {
		return protoErr("chunk for unknown handle %d", cookie)
	}
	req := cl.req
	switch {
	case typ == nbd.ChunkNone:
		if length != 0 || flags&nbd.ReplyFlagDone == 0 {
			return protoErr("invalid NBD_REPLY_TYPE_NONE chunk")
		}
	case typ == nbd.ChunkOffsetData:
		if req.Type != nbd.CmdRead || length < 8 {
			return protoErr("unexpected data chunk")
		}
		var ob [8]byte
		if _, err := io.ReadFull(c.r, ob[:]); err != nil {
			return err
		}
		off, n := binary.BigEndian.Uint64(ob[:]), uint64(length-8)
		if off < req.Offset || off+n > req.Offset+uint64(req.Length) || n == 0 {
			return protoErr("data chunk [%d, +%d) outside the request", off, n)
		}
		if _, err := io.ReadFull(c.r, cl.buf[off-req.Offset:off-req.Offset+n]); err != nil {
			return err
		}
		cl.got += n
	case typ == nbd.ChunkOffsetHole:
		if req.Type != nbd.CmdRead || length != 12 {
			return protoErr("unexpected hole chunk")
		}
		var b [12]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return err
		}
		off, n := binary.BigEndian.Uint64(b[:]), uint64(binary.BigEndian.Uint32(b[8:]))
		if off < req.Offset || off+n > req.Offset+uint64(req.Length) || n == 0 {
			return protoErr("hole chunk [%d, +%d) outside the request", off, n)
		}
		clear(cl.buf[off-req.Offset : off-req.Offset+n])
		cl.got += n
	case typ == nbd.ChunkBlockStatus:
		if req.Type != nbd.CmdBlockStatus || length < 12 || (length-4)%8 != 0 || length > maxChunkMeta {
			return protoErr("unexpected block status chunk")
		}
		b := make([]byte, length)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return err
		}
		if id := binary.BigEndian.Uint32(b); id != cl.ctx {
			return protoErr("block status for context %d, not %d", id, cl.ctx)
		}
		if cl.next {
			return protoErr("several block status chunks for one context")
		}
		cl.ext = nbd.Extent{Length: binary.BigEndian.Uint32(b[4:]), Flags: binary.BigEndian.Uint32(b[8:])}
		if cl.ext.Length == 0 {
			return protoErr("empty block status extent")
		}
		cl.next = true
	case typ&(1<<15) != 0:
		if length < 6 || length > maxChunkMeta {
			return protoErr("invalid error chunk")
		}
		b := make([]byte, length)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return err
		}
		errno := binary.BigEndian.Uint32(b)
		msgLen := int(binary.BigEndian.Uint16(b[4:]))
		extra := 0
		if typ == nbd.ChunkErrorOffset {
			extra = 8
		}
		if errno == 0 || 6+msgLen+extra != len(b) {
			return protoErr("invalid error chunk")
		}
		if cl.err == nil {
			cl.err = serverErr(errno)
		}
	default:
		return protoErr("unknown chunk type %d", typ)
	}
	if flags&nbd.ReplyFlagDone == 0 {
		return nil
	}
	if cl.err == nil {
		switch {
		case req.Type == nbd.CmdRead && cl.got != uint64(req.Length):
			// Part of the buffer unwritten (or some of it twice): the
			// server cannot be trusted with the next request either.
			return protoErr("read reply covers %d of %d bytes", cl.got, req.Length)
		case req.Type == nbd.CmdBlockStatus && !cl.next:
			return protoErr("block status reply without extent")
		}
	}
	c.complete(cookie)
	return nil
}

// serverErr maps an NBD errno to the host's (nbd_errno_to_system_errno).
func serverErr(errno uint32) error {
	switch errno {
	case nbd.EPERM:
		return syscall.EPERM
	case nbd.EIO:
		return syscall.EIO
	case nbd.ENOMEM:
		return syscall.ENOMEM
	case nbd.ENOSPC:
		return syscall.ENOSPC
	case nbd.EOVERFLOW:
		return syscall.EOVERFLOW
	case nbd.ENOTSUP:
		return syscall.ENOTSUP
	case nbd.ESHUTDOWN:
		return syscall.ESHUTDOWN
	}
	return syscall.EINVAL
}
