package schema

// BlockDirtyBitmapAddArgs are block-dirty-bitmap-add's arguments.
type BlockDirtyBitmapAddArgs struct {
	Node        string  `qapi:"node"`
	Name        string  `qapi:"name"`
	Granularity *uint32 `qapi:"granularity,optional"`
	Persistent  *bool   `qapi:"persistent,optional"`
	Disabled    *bool   `qapi:"disabled,optional"`
}

func (BlockDirtyBitmapAddArgs) QAPIName() string { return "BlockDirtyBitmapAdd" }

// BlockDirtyBitmapMergeArgs are block-dirty-bitmap-merge's arguments.
type BlockDirtyBitmapMergeArgs struct {
	Node    string                  `qapi:"node"`
	Target  string                  `qapi:"target"`
	Bitmaps []BlockDirtyBitmapOrStr `qapi:"bitmaps"`
}

func (BlockDirtyBitmapMergeArgs) QAPIName() string { return "BlockDirtyBitmapMerge" }

// BlockDirtyBitmapSha256 is x-debug-block-dirty-bitmap-sha256's reply.
type BlockDirtyBitmapSha256 struct {
	Sha256 string `qapi:"sha256"`
}
