package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// Client is a minimal synchronous NBD client on the shared wire code: one
// request at a time, simple replies (no structured replies). Tests and
// tools use it; a block driver would build on the same encoders.
type Client struct {
	nc    net.Conn
	Size  int64
	Flags uint16
	next  uint64
}

// Connect negotiates export name with NBD_OPT_GO over nc.
func Connect(nc net.Conn, name string) (*Client, error) {
	var hs [18]byte
	if _, err := io.ReadFull(nc, hs[:]); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint64(hs[:]) != MagicInit || binary.BigEndian.Uint64(hs[8:]) != MagicOpt {
		return nil, fmt.Errorf("%w: not a newstyle server", ErrBadMagic)
	}
	b := binary.BigEndian.AppendUint32(nil, ClientFixedNewstyle|ClientNoZeroes)
	p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint16(p, 0)
	b = AppendOption(b, OptGo, p)
	if _, err := nc.Write(b); err != nil {
		return nil, err
	}
	c := &Client{nc: nc}
	for {
		typ, data, err := c.readOptionReply(OptGo)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == RepAck:
			return c, nil
		case typ == RepInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == InfoExport:
			c.Size = int64(binary.BigEndian.Uint64(data[2:]))
			c.Flags = binary.BigEndian.Uint16(data[10:])
		case typ&repErr != 0:
			return nil, fmt.Errorf("nbd: option refused (0x%x): %s", typ, data)
		}
	}
}

func (c *Client) readOptionReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.nc, h[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(h[:]) != MagicOptReply || binary.BigEndian.Uint32(h[8:]) != opt {
		return 0, nil, fmt.Errorf("%w: option reply", ErrBadMagic)
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOption {
		return 0, nil, fmt.Errorf("nbd: option reply of %d bytes", n)
	}
	data := make([]byte, n)
	_, err := io.ReadFull(c.nc, data)
	return binary.BigEndian.Uint32(h[12:]), data, err
}

// ErrorReply is an error reply from the server.
type ErrorReply struct{ Errno uint32 }

func (e *ErrorReply) Error() string { return fmt.Sprintf("nbd: server replied errno %d", e.Errno) }

// Do sends one request (with payload for WRITE) and reads its simple
// reply into rbuf (READ).
func (c *Client) Do(r Request, payload, rbuf []byte) error {
	c.next++
	r.Cookie = c.next
	b := AppendRequest(nil, r)
	bufs := net.Buffers{b, payload}
	if _, err := bufs.WriteTo(c.nc); err != nil {
		return err
	}
	var h [16]byte
	if _, err := io.ReadFull(c.nc, h[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(h[:]) != MagicSimple || binary.BigEndian.Uint64(h[8:]) != r.Cookie {
		return fmt.Errorf("%w: reply", ErrBadMagic)
	}
	if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
		return &ErrorReply{e}
	}
	if r.Type == CmdRead {
		_, err := io.ReadFull(c.nc, rbuf)
		return err
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	return c.Do(Request{Type: CmdRead, Offset: uint64(off), Length: uint32(len(p))}, nil, p)
}

// WriteAt writes p at off.
func (c *Client) WriteAt(p []byte, off int64, flags uint16) error {
	return c.Do(Request{Type: CmdWrite, Flags: flags, Offset: uint64(off), Length: uint32(len(p))}, p, nil)
}

// Flush flushes the export.
func (c *Client) Flush() error { return c.Do(Request{Type: CmdFlush}, nil, nil) }

// Close sends NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	_, _ = c.nc.Write(AppendRequest(nil, Request{Type: CmdDisc}))
	return c.nc.Close()
}

// Conn is the client's connection, for callers that speak the protocol
// themselves after negotiation.
func (c *Client) Conn() net.Conn { return c.nc }
