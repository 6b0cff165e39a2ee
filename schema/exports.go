package schema

// Export and NBD server types, as QEMU 7.2's qapi/block-export.json and
// qapi/sockets.json declare them.

// SocketAddressType is the kind of a socket address.
type SocketAddressType string

func (SocketAddressType) EnumValues() []string { return []string{"inet", "unix", "vsock", "fd"} }

// InetSocketAddress is a TCP host and port.
type InetSocketAddress struct {
	Host      string `qapi:"host"`
	Port      string `qapi:"port"`
	Numeric   *bool  `qapi:"numeric,optional"`
	To        *int64 `qapi:"to,optional"`
	Ipv4      *bool  `qapi:"ipv4,optional"`
	Ipv6      *bool  `qapi:"ipv6,optional"`
	KeepAlive *bool  `qapi:"keep-alive,optional"`
	Mptcp     *bool  `qapi:"mptcp,optional"`
}

// UnixSocketAddress is a Unix socket path.
type UnixSocketAddress struct {
	Path     string `qapi:"path"`
	Abstract *bool  `qapi:"abstract,optional"`
	Tight    *bool  `qapi:"tight,optional"`
}

// VsockSocketAddress is a vsock address.
type VsockSocketAddress struct {
	Cid  string `qapi:"cid"`
	Port string `qapi:"port"`
}

// FdSocketAddress names a file descriptor passed to the monitor.
type FdSocketAddress struct {
	Str string `qapi:"str"`
}

// SocketAddress is the flat socket address union (--nbd-server addr.*,
// vhost-user-blk's addr).
type SocketAddress struct {
	Type  SocketAddressType   `qapi:"type,discriminator"`
	Inet  *InetSocketAddress  `qapi:",variant=inet"`
	Unix  *UnixSocketAddress  `qapi:",variant=unix"`
	Vsock *VsockSocketAddress `qapi:",variant=vsock"`
	Fd    *FdSocketAddress    `qapi:",variant=fd"`
}

// InetSocketAddressWrapper and its siblings are SocketAddressLegacy's
// branches, which nest the address under "data".
type InetSocketAddressWrapper struct {
	Data InetSocketAddress `qapi:"data"`
}
type UnixSocketAddressWrapper struct {
	Data UnixSocketAddress `qapi:"data"`
}
type VsockSocketAddressWrapper struct {
	Data VsockSocketAddress `qapi:"data"`
}
type FdSocketAddressWrapper struct {
	Data FdSocketAddress `qapi:"data"`
}

// SocketAddressLegacy is nbd-server-start's address.
type SocketAddressLegacy struct {
	Type  SocketAddressType          `qapi:"type,discriminator"`
	Inet  *InetSocketAddressWrapper  `qapi:",variant=inet"`
	Unix  *UnixSocketAddressWrapper  `qapi:",variant=unix"`
	Vsock *VsockSocketAddressWrapper `qapi:",variant=vsock"`
	Fd    *FdSocketAddressWrapper    `qapi:",variant=fd"`
}

// Flat returns the address as a SocketAddress.
func (a *SocketAddressLegacy) Flat() SocketAddress {
	out := SocketAddress{Type: a.Type}
	switch {
	case a.Inet != nil:
		out.Inet = &a.Inet.Data
	case a.Unix != nil:
		out.Unix = &a.Unix.Data
	case a.Vsock != nil:
		out.Vsock = &a.Vsock.Data
	case a.Fd != nil:
		out.Fd = &a.Fd.Data
	}
	return out
}

// NbdServerStartArgs are nbd-server-start's arguments.
type NbdServerStartArgs struct {
	Addr           SocketAddressLegacy `qapi:"addr"`
	TLSCreds       *string             `qapi:"tls-creds,optional"`
	TLSAuthz       *string             `qapi:"tls-authz,optional"`
	MaxConnections *uint32             `qapi:"max-connections,optional"`
}

// NbdServerOptions is --nbd-server's argument (a flat address).
type NbdServerOptions struct {
	Addr           SocketAddress `qapi:"addr"`
	TLSCreds       *string       `qapi:"tls-creds,optional"`
	TLSAuthz       *string       `qapi:"tls-authz,optional"`
	MaxConnections *uint32       `qapi:"max-connections,optional"`
}

// BlockExportType is the kind of an export.
type BlockExportType string

func (BlockExportType) EnumValues() []string {
	return []string{"nbd", "vhost-user-blk", "fuse", "vduse-blk"}
}

// BlockDirtyBitmap names a bitmap on a node.
type BlockDirtyBitmap struct {
	Node string `qapi:"node"`
	Name string `qapi:"name"`
}

// BlockDirtyBitmapOrStr is a bitmap by name (on the exported node) or by
// node and name.
type BlockDirtyBitmapOrStr struct {
	Local    *string
	External *BlockDirtyBitmap
}

// Alternate marks BlockDirtyBitmapOrStr as an alternate type.
func (BlockDirtyBitmapOrStr) Alternate() {}

// BlockExportOptionsNbd are the nbd export's options.
type BlockExportOptionsNbd struct {
	Name            *string                 `qapi:"name,optional"`
	Description     *string                 `qapi:"description,optional"`
	Bitmaps         []BlockDirtyBitmapOrStr `qapi:"bitmaps,optional"`
	AllocationDepth *bool                   `qapi:"allocation-depth,optional"`
}

// BlockExportOptionsVhostUserBlk are vhost-user-blk's options (declared
// so that the schema matches; blockd refuses the type).
type BlockExportOptionsVhostUserBlk struct {
	Addr             SocketAddress `qapi:"addr"`
	LogicalBlockSize *uint64       `qapi:"logical-block-size,optional"`
	NumQueues        *uint16       `qapi:"num-queues,optional"`
}

// FuseExportAllowOther is the fuse export's allow-other switch.
type FuseExportAllowOther string

func (FuseExportAllowOther) EnumValues() []string { return []string{"off", "on", "auto"} }

// BlockExportOptionsFuse are the fuse export's options.
type BlockExportOptionsFuse struct {
	Mountpoint string                `qapi:"mountpoint"`
	Growable   *bool                 `qapi:"growable,optional"`
	AllowOther *FuseExportAllowOther `qapi:"allow-other,optional"`
}

// BlockExportOptionsVduseBlk are vduse-blk's options (refused).
type BlockExportOptionsVduseBlk struct {
	Name             string  `qapi:"name"`
	NumQueues        *uint16 `qapi:"num-queues,optional"`
	QueueSize        *uint16 `qapi:"queue-size,optional"`
	LogicalBlockSize *uint64 `qapi:"logical-block-size,optional"`
	Serial           *string `qapi:"serial,optional"`
}

// BlockExportOptions is block-export-add's argument and --export's.
type BlockExportOptions struct {
	Type          BlockExportType `qapi:"type,discriminator"`
	ID            string          `qapi:"id"`
	FixedIothread *bool           `qapi:"fixed-iothread,optional"`
	Iothread      *string         `qapi:"iothread,optional"`
	NodeName      string          `qapi:"node-name"`
	Writable      *bool           `qapi:"writable,optional"`
	Writethrough  *bool           `qapi:"writethrough,optional"`

	Nbd          *BlockExportOptionsNbd          `qapi:",variant=nbd"`
	VhostUserBlk *BlockExportOptionsVhostUserBlk `qapi:",variant=vhost-user-blk"`
	Fuse         *BlockExportOptionsFuse         `qapi:",variant=fuse"`
	VduseBlk     *BlockExportOptionsVduseBlk     `qapi:",variant=vduse-blk"`
}

// BlockExportRemoveMode is safe (refuse while clients use the export)
// or hard (disconnect them).
type BlockExportRemoveMode string

func (BlockExportRemoveMode) EnumValues() []string { return []string{"safe", "hard"} }

// BlockExportDelArgs are block-export-del's arguments.
type BlockExportDelArgs struct {
	ID   string                 `qapi:"id"`
	Mode *BlockExportRemoveMode `qapi:"mode,optional"`
}

// NbdServerAddArgs are nbd-server-add's arguments (deprecated command).
type NbdServerAddArgs struct {
	Name        *string `qapi:"name,optional"`
	Description *string `qapi:"description,optional"`
	Device      string  `qapi:"device"`
	Writable    *bool   `qapi:"writable,optional"`
	Bitmap      *string `qapi:"bitmap,optional"`
}

// NbdServerRemoveArgs are nbd-server-remove's arguments.
type NbdServerRemoveArgs struct {
	Name string                 `qapi:"name"`
	Mode *BlockExportRemoveMode `qapi:"mode,optional"`
}

// BlockExportInfo is one entry of query-block-exports.
type BlockExportInfo struct {
	ID           string          `qapi:"id"`
	Type         BlockExportType `qapi:"type"`
	NodeName     string          `qapi:"node-name"`
	ShuttingDown bool            `qapi:"shutting-down"`
}

// BlockExportDeleted is BLOCK_EXPORT_DELETED.
type BlockExportDeleted struct {
	ID string `qapi:"id"`
}

// EventName implements events.Payload.
func (BlockExportDeleted) EventName() string { return "BLOCK_EXPORT_DELETED" }
