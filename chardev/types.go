package chardev

import "blockd/schema"

// The chardev commands' types as QEMU 7.2's qapi/char.json declares them
// (the whole ChardevBackend union, so that decoding and introspection
// answer as the reference does; backends blockd does not have are
// refused when opened).

// BackendKind is ChardevBackendKind.
type BackendKind string

func (BackendKind) EnumValues() []string {
	return []string{"file", "serial", "parallel", "pipe", "socket", "udp", "pty", "null", "mux",
		"msmouse", "wctablet", "braille", "testdev", "stdio", "console", "spicevmc", "spiceport",
		"qemu-vdagent", "dbus", "vc", "ringbuf", "memory"}
}

// QAPIName keeps the enum's name in error texts.
func (BackendKind) QAPIName() string { return "ChardevBackendKind" }

// Common is ChardevCommon: every backend can log what it sees to a file.
type Common struct {
	Logfile   *string `qapi:"logfile,optional"`
	Logappend *bool   `qapi:"logappend,optional"`
}

// File is ChardevFile.
type File struct {
	Common `qapi:",base"`
	In     *string `qapi:"in,optional"`
	Out    string  `qapi:"out"`
	Append *bool   `qapi:"append,optional"`
}

// Hostdev is ChardevHostdev (serial, parallel, pipe).
type Hostdev struct {
	Common `qapi:",base"`
	Device string `qapi:"device"`
}

// Socket is ChardevSocket.
type Socket struct {
	Common    `qapi:",base"`
	Addr      schema.SocketAddressLegacy `qapi:"addr"`
	TLSCreds  *string                    `qapi:"tls-creds,optional"`
	TLSAuthz  *string                    `qapi:"tls-authz,optional"`
	Server    *bool                      `qapi:"server,optional"`
	Wait      *bool                      `qapi:"wait,optional"`
	Nodelay   *bool                      `qapi:"nodelay,optional"`
	Telnet    *bool                      `qapi:"telnet,optional"`
	Tn3270    *bool                      `qapi:"tn3270,optional"`
	Websocket *bool                      `qapi:"websocket,optional"`
	Reconnect *int64                     `qapi:"reconnect,optional"`
}

// UDP is ChardevUdp.
type UDP struct {
	Common `qapi:",base"`
	Remote schema.SocketAddressLegacy  `qapi:"remote"`
	Local  *schema.SocketAddressLegacy `qapi:"local,optional"`
}

// Mux is ChardevMux.
type Mux struct {
	Common  `qapi:",base"`
	Chardev string `qapi:"chardev"`
}

// Stdio is ChardevStdio.
type Stdio struct {
	Common `qapi:",base"`
	Signal *bool `qapi:"signal,optional"`
}

// SpiceChannel is ChardevSpiceChannel.
type SpiceChannel struct {
	Common `qapi:",base"`
	Type   string `qapi:"type"`
}

// SpicePort is ChardevSpicePort.
type SpicePort struct {
	Common `qapi:",base"`
	Fqdn   string `qapi:"fqdn"`
}

// QemuVDAgent is ChardevQemuVDAgent.
type QemuVDAgent struct {
	Common    `qapi:",base"`
	Mouse     *bool `qapi:"mouse,optional"`
	Clipboard *bool `qapi:"clipboard,optional"`
}

// DBus is ChardevDBus.
type DBus struct {
	Common `qapi:",base"`
	Name   string `qapi:"name"`
}

// VC is ChardevVC.
type VC struct {
	Common `qapi:",base"`
	Width  *int64 `qapi:"width,optional"`
	Height *int64 `qapi:"height,optional"`
	Cols   *int64 `qapi:"cols,optional"`
	Rows   *int64 `qapi:"rows,optional"`
}

// Ringbuf is ChardevRingbuf (ringbuf and memory).
type Ringbuf struct {
	Common `qapi:",base"`
	Size   *int64 `qapi:"size,optional"`
}

// The simple union's wrappers nest each branch under "data".
type (
	FileWrapper struct {
		Data File `qapi:"data"`
	}
	HostdevWrapper struct {
		Data Hostdev `qapi:"data"`
	}
	SocketWrapper struct {
		Data Socket `qapi:"data"`
	}
	UDPWrapper struct {
		Data UDP `qapi:"data"`
	}
	CommonWrapper struct {
		Data Common `qapi:"data"`
	}
	MuxWrapper struct {
		Data Mux `qapi:"data"`
	}
	StdioWrapper struct {
		Data Stdio `qapi:"data"`
	}
	SpiceChannelWrapper struct {
		Data SpiceChannel `qapi:"data"`
	}
	SpicePortWrapper struct {
		Data SpicePort `qapi:"data"`
	}
	QemuVDAgentWrapper struct {
		Data QemuVDAgent `qapi:"data"`
	}
	DBusWrapper struct {
		Data DBus `qapi:"data"`
	}
	VCWrapper struct {
		Data VC `qapi:"data"`
	}
	RingbufWrapper struct {
		Data Ringbuf `qapi:"data"`
	}
)

// Backend is ChardevBackend.
type Backend struct {
	Type        BackendKind          `qapi:"type,discriminator"`
	File        *FileWrapper         `qapi:",variant=file"`
	Hostdev     *HostdevWrapper      `qapi:",variant=serial|parallel|pipe"`
	Socket      *SocketWrapper       `qapi:",variant=socket"`
	UDP         *UDPWrapper          `qapi:",variant=udp"`
	Common      *CommonWrapper       `qapi:",variant=pty|null|msmouse|wctablet|braille|testdev|console"`
	Mux         *MuxWrapper          `qapi:",variant=mux"`
	Stdio       *StdioWrapper        `qapi:",variant=stdio"`
	SpiceVMC    *SpiceChannelWrapper `qapi:",variant=spicevmc"`
	SpicePort   *SpicePortWrapper    `qapi:",variant=spiceport"`
	QemuVDAgent *QemuVDAgentWrapper  `qapi:",variant=qemu-vdagent"`
	DBus        *DBusWrapper         `qapi:",variant=dbus"`
	VC          *VCWrapper           `qapi:",variant=vc"`
	Ringbuf     *RingbufWrapper      `qapi:",variant=ringbuf|memory"`
}

// common returns the backend's ChardevCommon, whichever branch it is.
func (b *Backend) common() Common {
	switch {
	case b.File != nil:
		return b.File.Data.Common
	case b.Hostdev != nil:
		return b.Hostdev.Data.Common
	case b.Socket != nil:
		return b.Socket.Data.Common
	case b.UDP != nil:
		return b.UDP.Data.Common
	case b.Common != nil:
		return b.Common.Data
	case b.Mux != nil:
		return b.Mux.Data.Common
	case b.Stdio != nil:
		return b.Stdio.Data.Common
	case b.Ringbuf != nil:
		return b.Ringbuf.Data.Common
	}
	return Common{}
}

// AddArgs is chardev-add's and chardev-change's argument.
type AddArgs struct {
	ID      string  `qapi:"id"`
	Backend Backend `qapi:"backend"`
}

// Return is ChardevReturn.
type Return struct {
	Pty *string `qapi:"pty,optional"`
}

// IDArgs is chardev-remove's and chardev-send-break's argument.
type IDArgs struct {
	ID string `qapi:"id"`
}

// Info is ChardevInfo.
type Info struct {
	Label        string `qapi:"label"`
	Filename     string `qapi:"filename"`
	FrontendOpen bool   `qapi:"frontend-open" json:"frontend-open"`
}

// BackendInfo is ChardevBackendInfo.
type BackendInfo struct {
	Name string `qapi:"name"`
}

// DataFormat is ringbuf-read's and ringbuf-write's encoding.
type DataFormat string

func (DataFormat) EnumValues() []string { return []string{"utf8", "base64"} }

// RingbufWriteArgs is ringbuf-write's argument.
type RingbufWriteArgs struct {
	Device string      `qapi:"device"`
	Data   string      `qapi:"data"`
	Format *DataFormat `qapi:"format,optional"`
}

// RingbufReadArgs is ringbuf-read's argument.
type RingbufReadArgs struct {
	Device string      `qapi:"device"`
	Size   int64       `qapi:"size"`
	Format *DataFormat `qapi:"format,optional"`
}

// VserportChange is the VSERPORT_CHANGE event's data. blockd has no
// virtio-serial ports, so it never fires; it is declared because the
// reference's schema has it.
type VserportChange struct {
	ID   string `qapi:"id"`
	Open bool   `qapi:"open"`
}
