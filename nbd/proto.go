// Package nbd owns the NBD wire protocol (the NBD project's doc/proto.md):
// the constants, the encoding of options, option replies, requests and
// replies in one place (proto.go); the client side of fixed newstyle
// negotiation (handshake.go: STARTTLS, structured replies, meta
// contexts, GO with a fall back to EXPORT_NAME, QEMU's error texts),
// which the nbd block driver (drivers/nbd) and the small test client
// (client.go) share; and the server side: negotiation, TLS, meta contexts
// and the transmission phase with concurrent requests (server.go,
// conn.go).
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"blockd/blockio"
)

// Magic numbers.
const (
	MagicInit       uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	MagicOpt        uint64 = 0x49484156454F5054 // "IHAVEOPT"
	MagicOptReply   uint64 = 0x0003e889045565a9
	MagicRequest    uint32 = 0x25609513
	MagicSimple     uint32 = 0x67446698
	MagicStructured uint32 = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1

	ClientFixedNewstyle uint32 = 1 << 0
	ClientNoZeroes      uint32 = 1 << 1
)

// Transmission flags.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
	FlagSendResize      uint16 = 1 << 9
	FlagSendCache       uint16 = 1 << 10
	FlagSendFastZero    uint16 = 1 << 11
)

// Options.
const (
	OptExportName     uint32 = 1
	OptAbort          uint32 = 2
	OptList           uint32 = 3
	OptStartTLS       uint32 = 5
	OptInfo           uint32 = 6
	OptGo             uint32 = 7
	OptStructuredRepl uint32 = 8
	OptListMetaCtx    uint32 = 9
	OptSetMetaCtx     uint32 = 10
)

// Option reply types.
const (
	RepAck     uint32 = 1
	RepServer  uint32 = 2
	RepInfo    uint32 = 3
	RepMetaCtx uint32 = 4

	repErr              uint32 = 1 << 31
	RepErrUnsup                = repErr | 1
	RepErrPolicy               = repErr | 2
	RepErrInvalid              = repErr | 3
	RepErrPlatform             = repErr | 4
	RepErrTLSReqd              = repErr | 5
	RepErrUnknown              = repErr | 6
	RepErrShutdown             = repErr | 7
	RepErrBlockSizeReqd        = repErr | 8
	RepErrTooBig               = repErr | 9
)

// Info types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	InfoExport      uint16 = 0
	InfoName        uint16 = 1
	InfoDescription uint16 = 2
	InfoBlockSize   uint16 = 3
)

// Commands and command flags.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7

	CmdFlagFUA      uint16 = 1 << 0
	CmdFlagNoHole   uint16 = 1 << 1
	CmdFlagDF       uint16 = 1 << 2
	CmdFlagReqOne   uint16 = 1 << 3
	CmdFlagFastZero uint16 = 1 << 4
)

// Structured reply chunk types and flags.
const (
	ReplyFlagDone uint16 = 1 << 0

	ChunkNone        uint16 = 0
	ChunkOffsetData  uint16 = 1
	ChunkOffsetHole  uint16 = 2
	ChunkBlockStatus uint16 = 5
	ChunkError       uint16 = 1<<15 | 1
	ChunkErrorOffset uint16 = 1<<15 | 2
)

// Block status flags of base:allocation.
const (
	StateHole uint32 = 1 << 0
	StateZero uint32 = 1 << 1
)

// Meta context names.
const (
	ContextBaseAllocation  = "base:allocation"
	ContextAllocationDepth = "qemu:allocation-depth"
	ContextDirtyBitmap     = "qemu:dirty-bitmap:"
)

// NBD errno values (not the host's).
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// Limits.
const (
	// MaxBuffer is the largest READ or WRITE payload (QEMU's
	// NBD_MAX_BUFFER_SIZE, and the maximum block size advertised).
	MaxBuffer = 32 << 20
	// MaxString bounds export names, descriptions and context names.
	MaxString = 4096
	// maxOption bounds an option's payload; longer is a protocol error.
	maxOption = 1 << 20
)

// RequestSize is the size of a request header on the wire.
const RequestSize = 28

// Request is one transmission request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// AppendRequest encodes r (without a WRITE payload).
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicRequest)
	b = binary.BigEndian.AppendUint16(b, r.Flags)
	b = binary.BigEndian.AppendUint16(b, r.Type)
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

// ErrBadMagic is a protocol violation: the peer is not speaking NBD.
var ErrBadMagic = errors.New("nbd: bad magic")

// ParseRequest decodes a request header.
func ParseRequest(b []byte) (Request, error) {
	if binary.BigEndian.Uint32(b) != MagicRequest {
		return Request{}, fmt.Errorf("%w: request 0x%08x", ErrBadMagic, binary.BigEndian.Uint32(b))
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:]),
		Type:   binary.BigEndian.Uint16(b[6:]),
		Cookie: binary.BigEndian.Uint64(b[8:]),
		Offset: binary.BigEndian.Uint64(b[16:]),
		Length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// AppendOption encodes a client option.
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ReadOptionHeader reads an option's magic, number and payload length.
func ReadOptionHeader(r io.Reader) (opt, length uint32, err error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	if binary.BigEndian.Uint64(h[:]) != MagicOpt {
		return 0, 0, fmt.Errorf("%w: option 0x%016x", ErrBadMagic, binary.BigEndian.Uint64(h[:]))
	}
	return binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:]), nil
}

// AppendOptionReply encodes a reply to an option.
func AppendOptionReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// AppendSimpleReply encodes a simple reply header (a READ's data follows).
func AppendSimpleReply(b []byte, errno uint32, cookie uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, cookie)
}

// AppendChunkHeader encodes a structured reply chunk header; length is
// the payload's length.
func AppendChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return binary.BigEndian.AppendUint32(b, length)
}

// AppendErrorChunk encodes an NBD_REPLY_TYPE_ERROR chunk with a message.
func AppendErrorChunk(b []byte, flags uint16, cookie uint64, errno uint32, msg string) []byte {
	if len(msg) > MaxString {
		msg = msg[:MaxString]
	}
	b = AppendChunkHeader(b, flags, ChunkError, cookie, uint32(6+len(msg)))
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// Extent is one block status descriptor.
type Extent struct {
	Length uint32
	Flags  uint32
}

// AppendBlockStatusChunk encodes an NBD_REPLY_TYPE_BLOCK_STATUS chunk.
func AppendBlockStatusChunk(b []byte, flags uint16, cookie uint64, ctx uint32, ext []Extent) []byte {
	b = AppendChunkHeader(b, flags, ChunkBlockStatus, cookie, uint32(4+8*len(ext)))
	b = binary.BigEndian.AppendUint32(b, ctx)
	for _, e := range ext {
		b = binary.BigEndian.AppendUint32(b, e.Length)
		b = binary.BigEndian.AppendUint32(b, e.Flags)
	}
	return b
}

// Errno maps a data path error to an NBD errno as QEMU's
// system_errno_to_nbd_errno does.
func Errno(err error) uint32 {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, blockio.ErrReadOnly):
		return EPERM
	case errors.Is(err, blockio.ErrNotSupported):
		return ENOTSUP
	case errors.Is(err, blockio.ErrOutOfRange):
		return EINVAL
	case errors.As(err, &en):
		switch en {
		case syscall.EPERM, syscall.EROFS:
			return EPERM
		case syscall.EIO:
			return EIO
		case syscall.ENOMEM:
			return ENOMEM
		case syscall.EDQUOT, syscall.EFBIG, syscall.ENOSPC:
			return ENOSPC
		case syscall.EOVERFLOW:
			return EOVERFLOW
		case syscall.ENOTSUP:
			return ENOTSUP
		case syscall.ESHUTDOWN:
			return ESHUTDOWN
		default:
			return EINVAL // QEMU's default for host errors
		}
	}
	return EIO // blockd's own errors are I/O failures (a corrupt image)
}
