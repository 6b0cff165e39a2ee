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
