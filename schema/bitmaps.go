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

// Qcow2BitmapInfoFlags is a flag of a bitmap stored in a qcow2 image.
type Qcow2BitmapInfoFlags string

func (Qcow2BitmapInfoFlags) EnumValues() []string { return []string{"in-use", "auto"} }

// Qcow2BitmapInfo describes a bitmap stored in a qcow2 image, as the
// image says (image info, qemu-img info).
type Qcow2BitmapInfo struct {
	Name        string                 `qapi:"name"`
	Granularity uint32                 `qapi:"granularity"`
	Flags       []Qcow2BitmapInfoFlags `qapi:"flags"`
}
