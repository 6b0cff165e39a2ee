package schema

// BlockImageCorrupted is BLOCK_IMAGE_CORRUPTED: a format driver found
// its metadata inconsistent and (if fatal) stopped writing to the image.
type BlockImageCorrupted struct {
	Device   string  `qapi:"device"`
	NodeName *string `qapi:"node-name,optional"`
	Msg      string  `qapi:"msg"`
	Offset   *int64  `qapi:"offset,optional"`
	Size     *int64  `qapi:"size,optional"`
	Fatal    bool    `qapi:"fatal"`
}

// EventName implements events.Payload.
func (BlockImageCorrupted) EventName() string { return "BLOCK_IMAGE_CORRUPTED" }

// BlockIOError is BLOCK_IO_ERROR: a device's request failed under its
// rerror/werror policy. A storage daemon has no devices, so it is
// declared (qemu-storage-daemon's schema has it) and never sent: an
// export's client gets the errno instead.
type BlockIOError struct {
	Device    string           `qapi:"device"`
	NodeName  *string          `qapi:"node-name,optional"`
	Operation IoOperationType  `qapi:"operation"`
	Action    BlockErrorAction `qapi:"action"`
	Nospace   *bool            `qapi:"nospace,optional"`
	Reason    string           `qapi:"reason"`
}

// EventName implements events.Payload.
func (BlockIOError) EventName() string { return "BLOCK_IO_ERROR" }
