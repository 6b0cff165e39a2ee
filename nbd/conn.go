package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"blockd/blockio"
	"blockd/internal/errtext"
)

const readBuffer = 64 << 10

// conn is one client. The reader goroutine (serve) negotiates, then reads
// requests and starts each, at most MaxInFlight at a time: on a worker
// goroutine, or on the device itself when it ends requests on its own
// (async.go); replies are written whole under wmu, in completion order.
type conn struct {
	s  *Server
	nc net.Conn
	r  *bufio.Reader
	// sock is the client's socket under any TLS, for peerHungUp.
	sock syscall.Conn

	wmu sync.Mutex

	tls        bool
	noZeroes   bool
	structured bool
	metaChosen bool
	ctxs       []metaCtx
	exp        *Export

	pipes pipePool // for reads sent from a file (sendRange)

	abortOnce sync.Once
	ncMu      sync.Mutex // nc changes once, at STARTTLS
}

// unixSendBuffer is the send buffer asked for on a Unix socket. Linux's
// default (212992 bytes) is less than one 256 KiB READ reply, the size
// nbdcopy and qemu-img ask for, so each reply took two writes with a
// wake-up between them; the kernel grants twice the request, capped at
// twice net.core.wmem_max (416 KiB by default). Over TCP the kernel
// sizes the buffer itself, and setting it would stop that.
const unixSendBuffer = 1 << 20

func newConn(s *Server, nc net.Conn) *conn {
	if uc, ok := nc.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(unixSendBuffer) // a hint: the default works too
	}
	sock, _ := nc.(syscall.Conn)
	return &conn{s: s, nc: nc, sock: sock, r: bufio.NewReaderSize(nc, readBuffer),
		pipes: pipePool{open: &s.pipesOpen}}
}

// peerHungUp reports whether the client has shut its side of the socket
// (POLLRDHUP): it can send nothing more, so the connection ends once
// what it sent before is served.
func (c *conn) peerHungUp() bool {
	if c.sock == nil {
		return false
	}
	rc, err := c.sock.SyscallConn()
	if err != nil {
		return true // already closed
	}
	hung := false
	if err := rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil && n > 0 {
			hung = p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
		}
	}); err != nil {
		return true // closed by this side already
	}
	return hung
}

// send writes b whole. A failed write means the client is gone or
// unreachable: the connection is closed, so that the reader stops instead
// of running requests nobody will see answered.
func (c *conn) send(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	if err != nil {
		c.abort()
	}
	return err
}

// sendv writes several buffers as one reply (writev where possible).
func (c *conn) sendv(bufs ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(c.nc)
	if err != nil {
		c.abort()
	}
	return err
}

// abort disconnects the client; its goroutines end on their own. It may
// run on any goroutine, also while STARTTLS replaces nc.
func (c *conn) abort() {
	c.abortOnce.Do(func() {
		c.ncMu.Lock()
		nc := c.nc
		c.ncMu.Unlock()
		_ = nc.Close()
	})
}

// serve runs the connection to its end. A panic in a request is caught
// where it happens; nothing here reaches the client or the daemon.
func (c *conn) serve() {
	defer c.abort()
	err := c.negotiate()
	if err != nil {
		if !errors.Is(err, errAbort) {
			c.s.log.Debug("nbd negotiation ended", zap.Error(err))
		}
		return
	}
	defer c.exp.release(c)
	if err := c.transmit(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("nbd connection ended", zap.Error(err))
	}
}

// transmit reads requests until DISC, a protocol violation or EOF, then
// waits for the requests in flight. Requests the device does not start
// on its own run on long-lived workers, started as needed up to
// MaxInFlight: a goroutine per request would
// grow a fresh stack through the whole data path each time (measured:
// 3% of a read's CPU).
func (c *conn) transmit() error {
	work := make(chan request)
	workers := 0
	// slots bounds the requests in flight, on workers or started
	// asynchronously; wg counts both, so that none outlives transmit.
	slots := make(chan struct{}, c.s.opts.MaxInFlight)
	var wg sync.WaitGroup
	replies := c.newReplyQueue(&wg)
	defer func() {
		close(work)
		wg.Wait()
		replies.stop()
		c.pipes.close()
	}()
	var hdr [RequestSize]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return err
		}
		req, err := ParseRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.Type == CmdDisc {
			return nil
		}
		var payload []byte
		if req.Type == CmdWrite {
			if req.Length > MaxBuffer {
				_ = c.replyError(req, EINVAL, fmt.Sprintf("len (%d) is larger than max len (%d)", req.Length, MaxBuffer))
				return errors.New("nbd: write payload too large")
			}
			payload = getBuf(int(req.Length))
			if _, err := io.ReadFull(c.r, payload); err != nil {
				putBuf(payload)
				return err
			}
		}
		r := request{req, payload, slots}
		slots <- struct{}{}
		if c.start(r, replies) {
			continue
		}
		select {
		case work <- r: // an idle worker took it
			continue
		default:
		}
		if workers < c.s.opts.MaxInFlight {
			workers++
			wg.Add(1)
			go c.worker(work, r, &wg)
			continue
		}
		work <- r // every worker is busy: wait for one
	}
}

type request struct {
	Request
	payload []byte
	slots   chan struct{} // the request holds one until it is answered
}

// worker serves first, then whatever transmit hands it, until work is
// closed.
func (c *conn) worker(work <-chan request, first request, wg *sync.WaitGroup) {
	defer wg.Done()
	c.run(first)
	for r := range work {
		c.run(r)
	}
}

// run serves one request. A panic is answered as an internal error and
// logged; the worker goes on.
func (c *conn) run(r request) {
	defer func() {
		if p := recover(); p != nil {
			c.s.log.Error("nbd request panicked", zap.Any("panic", p))
			_ = c.replyError(r.Request, EIO, "internal error")
		}
		if r.payload != nil {
			putBuf(r.payload)
		}
		<-r.slots
	}()
	c.handle(r.Request, r.payload)
}

// handle validates a request as QEMU's nbd_co_receive_request does and
// runs it; every outcome is a reply.
func (c *conn) handle(req Request, payload []byte) {
	e := c.exp
	if errno, msg := c.validate(req); errno != 0 {
		_ = c.replyError(req, errno, msg)
		return
	}
	dev := e.Dev
	off, length := int64(req.Offset), int64(req.Length)
	var err error
	switch req.Type {
	case CmdRead:
		c.read(req, dev)
		return
	case CmdWrite:
		var f blockio.WriteFlags
		if req.Flags&CmdFlagFUA != 0 {
			f |= blockio.FUA
		}
		err = dev.WriteAt(payload, off, f)
	case CmdFlush:
		err = dev.Flush()
	case CmdTrim:
		err = dev.Discard(off, length)
		if err == nil && req.Flags&CmdFlagFUA != 0 {
			err = dev.Flush()
		}
	case CmdCache:
		err = c.cache(dev, off, length)
	case CmdWriteZeroes:
		var f blockio.WriteFlags
		if req.Flags&CmdFlagFUA != 0 {
			f |= blockio.FUA
		}
		if req.Flags&CmdFlagNoHole == 0 {
			f |= blockio.MayUnmap
		}
		if req.Flags&CmdFlagFastZero != 0 {
			f |= blockio.NoFallback
		}
		err = dev.WriteZeroes(off, length, f)
	case CmdBlockStatus:
		c.blockStatus(req, dev)
		return
	}
	if err != nil {
		_ = c.replyError(req, Errno(err), err.Error())
		return
	}
	_ = c.send(AppendSimpleReply(nil, 0, req.Cookie))
}

// validate returns the errno and message for a request that must not run.
func (c *conn) validate(req Request) (uint32, string) {
	e := c.exp
	switch req.Type {
	case CmdRead, CmdWrite, CmdFlush, CmdTrim, CmdCache, CmdWriteZeroes, CmdBlockStatus:
	default:
		return EINVAL, fmt.Sprintf("invalid request type (%d) received", req.Type)
	}
	if req.Type == CmdRead && req.Length > MaxBuffer {
		return EINVAL, fmt.Sprintf("len (%d) is larger than max len (%d)", req.Length, MaxBuffer)
	}
	valid := CmdFlagFUA
	switch {
	case req.Type == CmdRead && c.structured:
		valid |= CmdFlagDF
	case req.Type == CmdWriteZeroes:
		valid |= CmdFlagNoHole | CmdFlagFastZero
	case req.Type == CmdBlockStatus:
		valid |= CmdFlagReqOne
	}
	if req.Flags&^valid != 0 {
		return EINVAL, fmt.Sprintf("unsupported flags for command %d (got 0x%x)", req.Type, req.Flags)
	}
	if e.ReadOnly && (req.Type == CmdWrite || req.Type == CmdTrim || req.Type == CmdWriteZeroes) {
		return EPERM, "Export is read-only"
	}
	if req.Type != CmdFlush && (req.Offset > uint64(e.Size) || uint64(req.Length) > uint64(e.Size)-req.Offset) {
		// EINVAL for every command, writes included, as QEMU 7.2 answers.
		return EINVAL, fmt.Sprintf("operation past EOF; From: %d, Len: %d, Size: %d", req.Offset, req.Length, e.Size)
	}
	if m := uint64(e.MinBlock); m > 1 && (req.Offset%m != 0 || uint64(req.Length)%m != 0) {
		return EINVAL, fmt.Sprintf("request not aligned to %d bytes", m)
	}
	if req.Type == CmdBlockStatus {
		if len(c.ctxs) == 0 {
			return EINVAL, "CMD_BLOCK_STATUS not negotiated"
		}
		if req.Length == 0 {
			return EINVAL, "need non-zero length"
		}
	}
	return 0, ""
}

// replyError answers a request with an error: a structured error chunk
// when structured replies are on, else a simple reply.
func (c *conn) replyError(req Request, errno uint32, msg string) error {
	return c.send(c.errorReply(req, errno, msg))
}

// errorReply is the reply replyError sends.
func (c *conn) errorReply(req Request, errno uint32, msg string) []byte {
	if c.structured {
		return AppendErrorChunk(nil, ReplyFlagDone, req.Cookie, errno, msg)
	}
	return AppendSimpleReply(nil, errno, req.Cookie)
}

// read answers NBD_CMD_READ: a simple reply, or structured chunks where
// ranges that read as zeroes become OFFSET_HOLE chunks (unless DF).
func (c *conn) read(req Request, dev blockio.Device) {
	off, length := int64(req.Offset), int64(req.Length)
	if !c.structured {
		c.readData(req, dev, AppendSimpleReply(nil, 0, req.Cookie))
		return
	}
	if length == 0 || req.Flags&CmdFlagDF != 0 {
		c.readData(req, dev, dataChunkHeader(req))
		return
	}
	exts, err := readExtents(dev, off, length)
	if err != nil {
		_ = c.send(c.holeCheckError(req, err))
		return
	}
	if len(exts) == 1 && !exts[0].hole {
		c.readData(req, dev, dataChunkHeader(req))
		return
	}
	buf := getBuf(int(length))
	defer putBuf(buf)
	for _, x := range exts {
		if x.hole {
			continue
		}
		if err := dev.ReadAt(buf[x.off-off:x.off-off+x.n], x.off); err != nil {
			_ = c.replyError(req, Errno(err), err.Error())
			return
		}
	}
	_ = c.sendv(sparseChunks(req, exts, buf)...)
}

// readExtent is a stretch of a READ's range that holds data or reads as
// zeroes (a hole).
type readExtent struct {
	off, n int64
	hole   bool
}

// readExtents splits [off, off+length) into data and holes, merging
// neighbours of the same kind.
func readExtents(dev blockio.Device, off, length int64) ([]readExtent, error) {
	var exts []readExtent
	for pos := off; pos < off+length; {
		st, _, err := blockio.ChainStatus(dev, pos, off+length-pos)
		if err != nil {
			return nil, err
		}
		hole := st.Flags&blockio.StatusZero != 0
		if k := len(exts) - 1; k >= 0 && exts[k].hole == hole {
			exts[k].n += st.Length
		} else {
			exts = append(exts, readExtent{pos, st.Length, hole})
		}
		pos += st.Length
	}
	return exts, nil
}

// holeCheckError is nbd_co_send_sparse_read's answer when the status
// query fails: the read fails with the query's error.
func (c *conn) holeCheckError(req Request, err error) []byte {
	return c.errorReply(req, Errno(err), "unable to check for holes: "+errtext.Strerror(errtext.Errno(err)))
}

// sparseChunks is the structured READ reply of a range whose data
// extents are in buf (buf[0] is the range's first byte): an OFFSET_DATA
// chunk per data extent, an OFFSET_HOLE chunk per hole.
func sparseChunks(req Request, exts []readExtent, buf []byte) [][]byte {
	off := int64(req.Offset)
	out := make([][]byte, 0, 2*len(exts))
	for i, x := range exts {
		flags := uint16(0)
		if i == len(exts)-1 {
			flags = ReplyFlagDone
		}
		if x.hole {
			h := AppendChunkHeader(nil, flags, ChunkOffsetHole, req.Cookie, 12)
			h = appendU64(h, uint64(x.off))
			out = append(out, appendU32(h, uint32(x.n)))
			continue
		}
		h := AppendChunkHeader(nil, flags, ChunkOffsetData, req.Cookie, uint32(8+x.n))
		out = append(out, appendU64(h, uint64(x.off)), buf[x.off-off:x.off-off+x.n])
	}
	return out
}

// dataChunkHeader heads a structured READ reply of one OFFSET_DATA chunk.
func dataChunkHeader(req Request) []byte {
	h := AppendChunkHeader(nil, ReplyFlagDone, ChunkOffsetData, req.Cookie, uint32(8+req.Length))
	return appendU64(h, req.Offset)
}

// readData answers a READ with hdr followed by the whole range's data:
// sent from the host file's pages where it can be (sendRange), else read
// into a buffer and written.
func (c *conn) readData(req Request, dev blockio.Device, hdr []byte) {
	if c.sendRange(req, dev, hdr) {
		return
	}
	buf := getBuf(int(req.Length))
	defer putBuf(buf)
	if err := dev.ReadAt(buf, int64(req.Offset)); err != nil {
		_ = c.replyError(req, Errno(err), err.Error())
		return
	}
	_ = c.sendv(hdr, buf)
}

// sendRange answers a READ whose range lies in one stretch of a host file
// by passing the file's pages to the socket instead of copying them
// through a buffer (on a plain connection; TLS must encrypt a copy). The
// device lends the file only while the pages are spliced into a pipe of
// this connection, which holds them by reference: the node is not kept
// from draining while the client is slow to read. It reports false when
// it did not answer; the caller then reads as usual, and any error of
// the device's is reported that way.
func (c *conn) sendRange(req Request, dev blockio.Device, hdr []byte) bool {
	n := int(req.Length)
	if c.tls || c.sock == nil || n == 0 || n > maxSpliced {
		return false
	}
	p := c.pipes.get()
	if p == nil {
		return false
	}
	var tail []byte // past the end of the file: zeroes
	err := blockio.SendRange(dev, int64(req.Offset), int64(n), func(r blockio.FileRange) error {
		k, err := p.fill(r.FD, r.Offset, n)
		if err == nil && k < n {
			tail = getBuf(n - k)
			err = r.ReadAt(tail, int64(k))
		}
		return err
	})
	if tail != nil {
		defer putBuf(tail)
	}
	if err != nil {
		c.pipes.put(p)
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.nc.Write(hdr)
	if err == nil {
		err = p.drainTo(c.sock)
	}
	c.pipes.put(p)
	if err == nil && tail != nil {
		_, err = c.nc.Write(tail)
	}
	if err != nil {
		c.abort() // part of a reply may be out: nothing else can follow
	}
	return true
}

// cache is NBD_CMD_CACHE: read the range through the data path so that
// backing layers and the host cache hold it, and drop the data.
func (c *conn) cache(dev blockio.Device, off, length int64) error {
	const chunk = 1 << 20
	buf := getBuf(int(min(length, chunk)))
	defer putBuf(buf)
	for length > 0 {
		n := min(length, chunk)
		if err := dev.ReadAt(buf[:n], off); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// maxExtents bounds the descriptors of one block status chunk.
const maxExtents = 1 << 17

// blockStatus answers NBD_CMD_BLOCK_STATUS with one chunk per selected
// context.
func (c *conn) blockStatus(req Request, dev blockio.Device) {
	off, length := int64(req.Offset), int64(req.Length)
	limit := maxExtents
	if req.Flags&CmdFlagReqOne != 0 {
		limit = 1
	}
	var out []byte
	for i, m := range c.ctxs {
		ext, err := c.extents(dev, m, off, length, limit)
		if err != nil {
			_ = c.replyError(req, Errno(err), err.Error())
			return
		}
		flags := uint16(0)
		if i == len(c.ctxs)-1 {
			flags = ReplyFlagDone
		}
		out = AppendBlockStatusChunk(out, flags, req.Cookie, m.id, ext)
	}
	_ = c.send(out)
}

// extents describes [off, off+length) in context m, merging neighbours
// with the same value, at most limit descriptors.
func (c *conn) extents(dev blockio.Device, m metaCtx, off, length int64, limit int) ([]Extent, error) {
	var out []Extent
	for pos := off; pos < off+length; {
		var flags uint32
		var n int64
		switch {
		case m.id == 0 || m.id == 1:
			st, depth, err := blockio.ChainStatus(dev, pos, off+length-pos)
			if err != nil {
				return nil, err
			}
			n = st.Length
			if m.id == 1 {
				flags = uint32(depth)
			} else {
				if st.Flags&blockio.StatusData == 0 {
					flags |= StateHole
				}
				if st.Flags&blockio.StatusZero != 0 {
					flags |= StateZero
				}
			}
		default:
			b := c.exp.Bitmaps[m.id-2]
			dirty, bn, err := b.Status(pos, off+length-pos)
			if err != nil {
				return nil, err
			}
			n = bn
			if dirty {
				flags = 1
			}
		}
		if n <= 0 {
			return nil, fmt.Errorf("block status at %d: empty range", pos)
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags && uint64(out[k].Length)+uint64(n) <= 1<<32-4096 {
			out[k].Length += uint32(n)
		} else {
			if len(out) == limit {
				break
			}
			out = append(out, Extent{Length: uint32(n), Flags: flags})
		}
		pos += n
	}
	return out, nil
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// Buffers come from power-of-two pools (4 KiB to 32 MiB) so that a busy
// connection does not allocate per request.
var pools [14]sync.Pool

func poolIndex(n int) int {
	if n <= 4096 {
		return 0
	}
	return bits.Len(uint(n-1)) - 12
}

func getBuf(n int) []byte {
	i := poolIndex(n)
	if p, ok := pools[i].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 4096<<i)
}

func putBuf(b []byte) {
	i := poolIndex(cap(b))
	if cap(b) != 4096<<i {
		return
	}
	pools[i].Put(&b)
}
