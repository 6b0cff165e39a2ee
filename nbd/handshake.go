package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// HandshakeConfig is what a client asks for in fixed newstyle
// negotiation.
type HandshakeConfig struct {
	Export string
	// TLS, when set, makes the client start TLS before any other option.
	TLS *tls.Config
	// TLSHandshake, when set, is used instead of crypto/tls after
	// NBD_OPT_STARTTLS (TLS-PSK, which crypto/tls lacks); its errors are
	// shown as they are.
	TLSHandshake func(nc net.Conn) (net.Conn, error)
	// Structured asks for structured replies; MetaContexts (which need
	// them) are the contexts to select, e.g. base:allocation.
	Structured   bool
	MetaContexts []string
}

// ExportInfo is what negotiation learnt about the export.
type ExportInfo struct {
	Size  int64
	Flags uint16
	// Block sizes (NBD_INFO_BLOCK_SIZE); zero when the server sent none.
	MinBlock, PrefBlock, MaxBlock uint32
	Structured                    bool
	// Contexts maps each selected meta context to the server's id.
	Contexts map[string]uint32
}

// OptionError is a server's error reply to an option. Its text is the
// one QEMU's client reports (nbd_handle_reply_err); Msg is the server's
// own message.
type OptionError struct {
	Option, Type uint32
	Msg          string
}

func (e *OptionError) Error() string {
	name := OptionName(e.Option)
	switch e.Type {
	case RepErrPolicy:
		return fmt.Sprintf("Denied by server for option %d (%s)", e.Option, name)
	case RepErrInvalid:
		return fmt.Sprintf("Invalid parameters for option %d (%s)", e.Option, name)
	case RepErrPlatform:
		return fmt.Sprintf("Server lacks support for option %d (%s)", e.Option, name)
	case RepErrTLSReqd:
		return fmt.Sprintf("TLS negotiation required before option %d (%s)", e.Option, name)
	case RepErrUnknown:
		return "Requested export not available"
	case RepErrShutdown:
		return fmt.Sprintf("Server shutting down before option %d (%s)", e.Option, name)
	case RepErrBlockSizeReqd:
		return fmt.Sprintf("Server requires INFO_BLOCK_SIZE for option %d (%s)", e.Option, name)
	}
	return fmt.Sprintf("Unknown error code when asking for option %d (%s)", e.Option, name)
}

// OptionName is QEMU's nbd_opt_lookup.
func OptionName(opt uint32) string {
	switch opt {
	case OptExportName:
		return "export name"
	case OptAbort:
		return "abort"
	case OptList:
		return "list"
	case OptStartTLS:
		return "starttls"
	case OptInfo:
		return "info"
	case OptGo:
		return "go"
	case OptStructuredRepl:
		return "structured reply"
	case OptListMetaCtx:
		return "list meta context"
	case OptSetMetaCtx:
		return "set meta context"
	}
	return "<unknown>"
}

// ClientHandshake negotiates over nc and returns the connection to use
// for transmission (a TLS connection over nc when cfg.TLS is set). The
// caller bounds it with a deadline on nc; on error the caller closes nc.
func ClientHandshake(nc net.Conn, cfg HandshakeConfig) (net.Conn, *ExportInfo, error) {
	var hs [18]byte
	if _, err := io.ReadFull(nc, hs[:]); err != nil {
		return nil, nil, fmt.Errorf("Failed to read initial magic: %w", err)
	}
	if binary.BigEndian.Uint64(hs[:]) != MagicInit {
		return nil, nil, errors.New("Bad initial magic received")
	}
	if binary.BigEndian.Uint64(hs[8:]) != MagicOpt {
		return nil, nil, errors.New("Server does not support the newstyle protocol")
	}
	sflags := binary.BigEndian.Uint16(hs[16:])
	if sflags&FlagFixedNewstyle == 0 {
		return nil, nil, errors.New("Server does not support fixed newstyle negotiation")
	}
	cf := ClientFixedNewstyle
	if sflags&FlagNoZeroes != 0 {
		cf |= ClientNoZeroes
	}
	if _, err := nc.Write(binary.BigEndian.AppendUint32(nil, cf)); err != nil {
		return nil, nil, fmt.Errorf("Failed to send clientflags field: %w", err)
	}
	h := &handshaker{nc: nc}
	if cfg.TLS != nil || cfg.TLSHandshake != nil {
		typ, _, err := h.option(OptStartTLS, nil)
		if err != nil {
			return nil, nil, err
		}
		if typ != RepAck {
			return nil, nil, fmt.Errorf("Server rejected request to start TLS")
		}
		if cfg.TLSHandshake != nil {
			tc, err := cfg.TLSHandshake(nc)
			if err != nil {
				return nil, nil, err // GnuTLS's text is the reference's already
			}
			h.nc = tc
		} else {
			tc := tls.Client(nc, cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake failed: %w", err)
			}
			h.nc = tc
		}
	}
	info := &ExportInfo{Contexts: map[string]uint32{}}
	if cfg.Structured {
		typ, _, err := h.option(OptStructuredRepl, nil)
		if err != nil {
			return nil, nil, err
		}
		info.Structured = typ == RepAck
	}
	if info.Structured && len(cfg.MetaContexts) > 0 {
		if err := h.setMetaContexts(cfg.Export, cfg.MetaContexts, info); err != nil {
			return nil, nil, err
		}
	}
	if err := h.goOption(cfg.Export, info, sflags&FlagNoZeroes != 0); err != nil {
		return nil, nil, err
	}
	return h.nc, info, nil
}

type handshaker struct{ nc net.Conn }

// send writes one option request.
func (h *handshaker) send(opt uint32, data []byte) error {
	if _, err := h.nc.Write(AppendOption(nil, opt, data)); err != nil {
		return fmt.Errorf("Failed to send option request %d (%s): %w", opt, OptionName(opt), err)
	}
	return nil
}

// reply reads one option reply to opt.
func (h *handshaker) reply(opt uint32) (uint32, []byte, error) {
	var b [20]byte
	if _, err := io.ReadFull(h.nc, b[:]); err != nil {
		return 0, nil, fmt.Errorf("Failed to read option reply: %w", err)
	}
	if binary.BigEndian.Uint64(b[:]) != MagicOptReply {
		return 0, nil, errors.New("Unexpected option reply magic")
	}
	if got := binary.BigEndian.Uint32(b[8:]); got != opt {
		return 0, nil, fmt.Errorf("Unexpected option type %d (%s), expected %d (%s)", got, OptionName(got), opt, OptionName(opt))
	}
	n := binary.BigEndian.Uint32(b[16:])
	if n > maxOption {
		return 0, nil, fmt.Errorf("server option reply of %d bytes is too long", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(h.nc, data); err != nil {
		return 0, nil, fmt.Errorf("Failed to read option reply: %w", err)
	}
	return binary.BigEndian.Uint32(b[12:]), data, nil
}

// option sends opt and reads its single reply; an error reply other than
// "unsupported" becomes an OptionError, "unsupported" is returned as the
// type for the caller to fall back.
func (h *handshaker) option(opt uint32, data []byte) (uint32, []byte, error) {
	if err := h.send(opt, data); err != nil {
		return 0, nil, err
	}
	typ, rdata, err := h.reply(opt)
	if err != nil {
		return 0, nil, err
	}
	if typ&repErr != 0 && typ != RepErrUnsup {
		return 0, nil, &OptionError{Option: opt, Type: typ, Msg: string(rdata)}
	}
	return typ, rdata, nil
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// setMetaContexts selects the contexts; those the server does not offer
// are simply absent from info.Contexts.
func (h *handshaker) setMetaContexts(export string, names []string, info *ExportInfo) error {
	p := appendString32(nil, export)
	p = binary.BigEndian.AppendUint32(p, uint32(len(names)))
	for _, n := range names {
		p = appendString32(p, n)
	}
	if err := h.send(OptSetMetaCtx, p); err != nil {
		return err
	}
	for {
		typ, data, err := h.reply(OptSetMetaCtx)
		if err != nil {
			return err
		}
		switch {
		case typ == RepAck:
			return nil
		case typ == RepMetaCtx:
			if len(data) < 4 || len(data) > 4+MaxString {
				return errors.New("Invalid NBD_REP_META_CONTEXT reply")
			}
			name := string(data[4:])
			wanted := false
			for _, n := range names {
				wanted = wanted || n == name
			}
			if !wanted {
				return fmt.Errorf("Unexpected context name %s", name)
			}
			info.Contexts[name] = binary.BigEndian.Uint32(data)
		case typ == RepErrUnsup:
			return nil
		case typ&repErr != 0:
			return &OptionError{Option: OptSetMetaCtx, Type: typ, Msg: string(data)}
		default:
			return fmt.Errorf("Unexpected reply type %d for option %d (%s)", typ, OptSetMetaCtx, OptionName(OptSetMetaCtx))
		}
	}
}

// goOption is NBD_OPT_GO asking for the block sizes, with a fall back to
// NBD_OPT_EXPORT_NAME for servers that do not know GO.
func (h *handshaker) goOption(export string, info *ExportInfo, noZeroes bool) error {
	p := appendString32(nil, export)
	p = binary.BigEndian.AppendUint16(p, 1)
	p = binary.BigEndian.AppendUint16(p, InfoBlockSize)
	if err := h.send(OptGo, p); err != nil {
		return err
	}
	haveExport := false
	for {
		typ, data, err := h.reply(OptGo)
		if err != nil {
			return err
		}
		switch {
		case typ == RepAck:
			if !haveExport {
				return errors.New("server did not send NBD_INFO_EXPORT")
			}
			return nil
		case typ == RepInfo:
			if len(data) < 2 {
				return errors.New("Invalid NBD_REP_INFO reply")
			}
			switch binary.BigEndian.Uint16(data) {
			case InfoExport:
				if len(data) != 12 {
					return errors.New("Invalid length of NBD_INFO_EXPORT")
				}
				info.Size = int64(binary.BigEndian.Uint64(data[2:]))
				info.Flags = binary.BigEndian.Uint16(data[10:])
				if info.Size < 0 {
					return errors.New("Export size is too large")
				}
				haveExport = true
			case InfoBlockSize:
				if len(data) != 14 {
					return errors.New("Invalid length of NBD_INFO_BLOCK_SIZE")
				}
				info.MinBlock = binary.BigEndian.Uint32(data[2:])
				info.PrefBlock = binary.BigEndian.Uint32(data[6:])
				info.MaxBlock = binary.BigEndian.Uint32(data[10:])
				if info.MinBlock == 0 || info.MinBlock&(info.MinBlock-1) != 0 || info.MinBlock > 64<<10 ||
					info.PrefBlock < info.MinBlock || info.MaxBlock < info.MinBlock {
					return errors.New("server sent invalid block sizes")
				}
			}
		case typ == RepErrUnsup:
			return h.exportName(export, info, noZeroes)
		case typ&repErr != 0:
			return &OptionError{Option: OptGo, Type: typ, Msg: string(data)}
		default:
			return fmt.Errorf("Unexpected reply type %d for option %d (%s)", typ, OptGo, OptionName(OptGo))
		}
	}
}

// exportName is the old NBD_OPT_EXPORT_NAME: no error reply, the server
// closes the connection for an unknown export.
func (h *handshaker) exportName(export string, info *ExportInfo, noZeroes bool) error {
	if err := h.send(OptExportName, []byte(export)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(h.nc, b); err != nil {
		return fmt.Errorf("Failed to read export length: %w", err)
	}
	info.Size = int64(binary.BigEndian.Uint64(b))
	info.Flags = binary.BigEndian.Uint16(b[8:])
	if info.Size < 0 {
		return errors.New("Export size is too large")
	}
	// Without GO, meta contexts selected before do not apply.
	info.Contexts = map[string]uint32{}
	return nil
}
