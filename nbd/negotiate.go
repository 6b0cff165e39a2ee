package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
)

// errAbort ends negotiation without error (NBD_OPT_ABORT, or a client that
// left).
var errAbort = errors.New("nbd: client ended negotiation")

// negotiate runs fixed newstyle negotiation until the client picks an
// export (GO or EXPORT_NAME); it returns errAbort or a protocol error
// otherwise. Option errors are answered and negotiation goes on.
func (c *conn) negotiate() error {
	_ = c.nc.SetDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	var b []byte
	b = binary.BigEndian.AppendUint64(b, MagicInit)
	b = binary.BigEndian.AppendUint64(b, MagicOpt)
	b = binary.BigEndian.AppendUint16(b, FlagFixedNewstyle|FlagNoZeroes)
	if err := c.send(b); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(ClientFixedNewstyle|ClientNoZeroes) != 0 {
		return fmt.Errorf("nbd: unknown client flags 0x%x", flags)
	}
	c.noZeroes = flags&ClientNoZeroes != 0
	for {
		opt, length, err := ReadOptionHeader(c.r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errAbort
			}
			return err
		}
		if length > maxOption {
			return fmt.Errorf("nbd: option %d with %d bytes of data", opt, length)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return err
		}
		done, err := c.option(opt, data)
		if err != nil || done {
			if done {
				_ = c.nc.SetDeadline(time.Time{})
			}
			return err
		}
	}
}

// reply sends one option reply.
func (c *conn) reply(opt, typ uint32, data []byte) error {
	return c.send(AppendOptionReply(nil, opt, typ, data))
}

// replyErr sends an option error with a message, as QEMU does.
func (c *conn) replyErr(opt, typ uint32, format string, args ...any) error {
	return c.reply(opt, typ, []byte(fmt.Sprintf(format, args...)))
}

// option handles one option; done means transmission starts.
func (c *conn) option(opt uint32, data []byte) (done bool, err error) {
	if c.s.opts.TLS != nil && !c.tls {
		switch opt {
		case OptStartTLS, OptAbort:
		case OptExportName:
			return false, errors.New("nbd: NBD_OPT_EXPORT_NAME before STARTTLS")
		default:
			return false, c.replyErr(opt, RepErrTLSReqd, "Option 0x%x not permitted before TLS", opt)
		}
	}
	switch opt {
	case OptExportName:
		return c.optExportName(data)
	case OptAbort:
		_ = c.reply(opt, RepAck, nil)
		return false, errAbort
	case OptList:
		if len(data) != 0 {
			return false, c.replyErr(opt, RepErrInvalid, "NBD_OPT_LIST: unexpected data")
		}
		for _, e := range c.s.list() {
			var p []byte
			p = binary.BigEndian.AppendUint32(p, uint32(len(e.Name)))
			p = append(p, e.Name...)
			p = append(p, e.Description...)
			if err := c.reply(opt, RepServer, p); err != nil {
				return false, err
			}
		}
		return false, c.reply(opt, RepAck, nil)
	case OptStartTLS:
		return false, c.optStartTLS(data)
	case OptInfo, OptGo:
		return c.optInfo(opt, data)
	case OptStructuredRepl:
		switch {
		case len(data) != 0:
			return false, c.replyErr(opt, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY: unexpected data")
		case c.structured:
			return false, c.replyErr(opt, RepErrInvalid, "structured reply already negotiated")
		}
		c.structured = true
		return false, c.reply(opt, RepAck, nil)
	case OptListMetaCtx, OptSetMetaCtx:
		return false, c.optMetaContext(opt, data)
	}
	return false, c.replyErr(opt, RepErrUnsup, "Unsupported option %d", opt)
}

func (c *conn) optExportName(data []byte) (bool, error) {
	if len(data) > MaxString {
		return false, errors.New("nbd: export name too long")
	}
	e := c.s.Lookup(string(data))
	if e == nil {
		// The protocol has no error reply here: the connection closes.
		return false, fmt.Errorf("nbd: export '%s' not present", data)
	}
	if !c.use(e) {
		return false, fmt.Errorf("nbd: export '%s' is going away", data)
	}
	var b []byte
	b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
	b = binary.BigEndian.AppendUint16(b, c.transmissionFlags())
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	return true, c.send(b)
}

// transmissionFlags adds SEND_DF when structured replies are on.
func (c *conn) transmissionFlags() uint16 {
	f := c.exp.flags()
	if c.structured {
		f |= FlagSendDF
	}
	return f
}

// use binds the connection to e for transmission.
func (c *conn) use(e *Export) bool {
	if !e.acquire(c) {
		return false
	}
	c.exp = e
	if !c.metaChosen {
		c.ctxs = nil
	}
	return true
}

func (c *conn) optStartTLS(data []byte) error {
	switch {
	case len(data) != 0:
		return c.replyErr(OptStartTLS, RepErrInvalid, "NBD_OPT_STARTTLS: unexpected data")
	case c.tls:
		return c.replyErr(OptStartTLS, RepErrInvalid, "TLS already enabled")
	case c.s.opts.TLS == nil:
		return c.replyErr(OptStartTLS, RepErrPolicy, "TLS not configured")
	}
	if c.r.Buffered() > 0 {
		// The handshake reads the socket itself; bytes already buffered
		// would be lost, and the client may not send any before the ack.
		return errors.New("nbd: data after NBD_OPT_STARTTLS before its reply")
	}
	if err := c.reply(OptStartTLS, RepAck, nil); err != nil {
		return err
	}
	tc, err := c.s.opts.TLS.Handshake(c.nc)
	if err != nil {
		// A refused client (wrong key, untrusted certificate) is worth an
		// operator's attention, unlike other negotiation failures.
		c.s.log.Warn("nbd TLS handshake failed", zap.Error(err))
		return fmt.Errorf("nbd: %w", err)
	}
	c.ncMu.Lock()
	c.nc = tc
	c.ncMu.Unlock()
	c.r = bufio.NewReaderSize(tc, readBuffer)
	c.tls = true
	return nil
}

// parseInfo decodes NBD_OPT_INFO/GO data: name and requested info types.
func parseInfo(data []byte) (name string, reqs []uint16, ok bool) {
	if len(data) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n)+6 > uint64(len(data)) || n > MaxString {
		return "", nil, false
	}
	name = string(data[4 : 4+n])
	rest := data[4+n:]
	cnt := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*cnt {
		return "", nil, false
	}
	for i := 0; i < cnt; i++ {
		reqs = append(reqs, binary.BigEndian.Uint16(rest[2*i:]))
	}
	return name, reqs, true
}

func (c *conn) optInfo(opt uint32, data []byte) (bool, error) {
	name, reqs, ok := parseInfo(data)
	if !ok {
		return false, c.replyErr(opt, RepErrInvalid, "Invalid NBD_OPT_INFO/GO request")
	}
	e := c.s.Lookup(name)
	if e == nil {
		return false, c.replyErr(opt, RepErrUnknown, "export '%s' not present", name)
	}
	var wantName, wantDesc bool
	for _, r := range reqs {
		switch r {
		case InfoName:
			wantName = true
		case InfoDescription:
			wantDesc = true
		}
	}
	if wantName {
		p := binary.BigEndian.AppendUint16(nil, InfoName)
		if err := c.reply(opt, RepInfo, append(p, e.Name...)); err != nil {
			return false, err
		}
	}
	if wantDesc && e.Description != "" {
		p := binary.BigEndian.AppendUint16(nil, InfoDescription)
		if err := c.reply(opt, RepInfo, append(p, e.Description...)); err != nil {
			return false, err
		}
	}
	// Block sizes as QEMU reports them: the minimum is the node's
	// alignment, the preferred size at least 4 KiB, the maximum 32 MiB.
	p := binary.BigEndian.AppendUint16(nil, InfoBlockSize)
	p = binary.BigEndian.AppendUint32(p, e.MinBlock)
	p = binary.BigEndian.AppendUint32(p, max(4096, e.MinBlock))
	p = binary.BigEndian.AppendUint32(p, MaxBuffer)
	if err := c.reply(opt, RepInfo, p); err != nil {
		return false, err
	}
	saved := c.exp
	c.exp = e // for transmissionFlags
	p = binary.BigEndian.AppendUint16(nil, InfoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(e.Size))
	p = binary.BigEndian.AppendUint16(p, c.transmissionFlags())
	c.exp = saved
	if err := c.reply(opt, RepInfo, p); err != nil {
		return false, err
	}
	if opt == OptInfo {
		return false, c.reply(opt, RepAck, nil)
	}
	if !c.use(e) {
		return false, c.replyErr(opt, RepErrShutdown, "export '%s' is going away", name)
	}
	return true, c.reply(opt, RepAck, nil)
}

// metaCtx is a selected meta context.
type metaCtx struct {
	id   uint32
	name string
}

// contexts lists the meta contexts e offers, with QEMU's ids.
func contexts(e *Export) []metaCtx {
	out := []metaCtx{{0, ContextBaseAllocation}}
	if e.AllocationDepth {
		out = append(out, metaCtx{1, ContextAllocationDepth})
	}
	for i, b := range e.Bitmaps {
		out = append(out, metaCtx{uint32(2 + i), ContextDirtyBitmap + b.Name})
	}
	return out
}

// matches is QEMU's query rule: an exact name, or a namespace prefix
// ("base:", "qemu:", "qemu:dirty-bitmap:") that lists every context in
// it (for LIST only).
func matches(query, name string, list bool) bool {
	if query == name {
		return true
	}
	if !list {
		return false
	}
	return (query == "base:" || query == "qemu:" || query == ContextDirtyBitmap) && strings.HasPrefix(name, query)
}

func (c *conn) optMetaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.replyErr(opt, RepErrInvalid, "request option '%s' when structured reply is not negotiated", optName(opt))
	}
	bad := func() error { return c.replyErr(opt, RepErrInvalid, "Invalid %s request", optName(opt)) }
	if len(data) < 4 {
		return bad()
	}
	n := binary.BigEndian.Uint32(data)
	if n > MaxString || uint64(n)+8 > uint64(len(data)) {
		return bad()
	}
	name := string(data[4 : 4+n])
	rest := data[4+n:]
	cnt := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < cnt; i++ {
		if len(rest) < 4 {
			return bad()
		}
		l := binary.BigEndian.Uint32(rest)
		if l > MaxString || uint64(l)+4 > uint64(len(rest)) {
			return bad()
		}
		queries = append(queries, string(rest[4:4+l]))
		rest = rest[4+l:]
	}
	if len(rest) != 0 {
		return bad()
	}
	e := c.s.Lookup(name)
	if e == nil {
		return c.replyErr(opt, RepErrUnknown, "export '%s' not present", name)
	}
	list := opt == OptListMetaCtx
	var chosen []metaCtx
	for _, m := range contexts(e) {
		pick := list && len(queries) == 0
		for _, q := range queries {
			if matches(q, m.name, list) {
				pick = true
			}
		}
		if !pick {
			continue
		}
		chosen = append(chosen, m)
		p := binary.BigEndian.AppendUint32(nil, m.id)
		if err := c.reply(opt, RepMetaCtx, append(p, m.name...)); err != nil {
			return err
		}
	}
	if !list {
		c.ctxs, c.metaChosen = chosen, true
	}
	return c.reply(opt, RepAck, nil)
}

func optName(opt uint32) string {
	switch opt {
	case OptListMetaCtx:
		return "NBD_OPT_LIST_META_CONTEXT"
	case OptSetMetaCtx:
		return "NBD_OPT_SET_META_CONTEXT"
	}
	return fmt.Sprintf("option %d", opt)
}
