package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// Client is a minimal synchronous NBD client on the shared wire code: one
// request at a time, simple replies (no structured replies), for tests
// that drive the server by hand. The nbd block driver (drivers/nbd)
// shares its negotiation (ClientHandshake) and encoders.
type Client struct {
	nc    net.Conn
	Size  int64
	Flags uint16
	next  uint64
}

// Connect negotiates export name with NBD_OPT_GO over nc (simple
// replies, no TLS).
func Connect(nc net.Conn, name string) (*Client, error) {
	tc, info, err := ClientHandshake(nc, HandshakeConfig{Export: name})
	if err != nil {
		return nil, err
	}
	return &Client{nc: tc, Size: info.Size, Flags: info.Flags}, nil
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
