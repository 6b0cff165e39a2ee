package schema

// ThrottleLimits are a throttle group's limits (block-core.json): rates
// per second, burst rates and their length in seconds, and iops-size.
type ThrottleLimits struct {
	IopsTotal          *int64 `qapi:"iops-total,optional"`
	IopsTotalMax       *int64 `qapi:"iops-total-max,optional"`
	IopsTotalMaxLength *int64 `qapi:"iops-total-max-length,optional"`
	IopsRead           *int64 `qapi:"iops-read,optional"`
	IopsReadMax        *int64 `qapi:"iops-read-max,optional"`
	IopsReadMaxLength  *int64 `qapi:"iops-read-max-length,optional"`
	IopsWrite          *int64 `qapi:"iops-write,optional"`
	IopsWriteMax       *int64 `qapi:"iops-write-max,optional"`
	IopsWriteMaxLength *int64 `qapi:"iops-write-max-length,optional"`
	BpsTotal           *int64 `qapi:"bps-total,optional"`
	BpsTotalMax        *int64 `qapi:"bps-total-max,optional"`
	BpsTotalMaxLength  *int64 `qapi:"bps-total-max-length,optional"`
	BpsRead            *int64 `qapi:"bps-read,optional"`
	BpsReadMax         *int64 `qapi:"bps-read-max,optional"`
	BpsReadMaxLength   *int64 `qapi:"bps-read-max-length,optional"`
	BpsWrite           *int64 `qapi:"bps-write,optional"`
	BpsWriteMax        *int64 `qapi:"bps-write-max,optional"`
	BpsWriteMaxLength  *int64 `qapi:"bps-write-max-length,optional"`
	IopsSize           *int64 `qapi:"iops-size,optional"`
}

// BlockdevOptionsThrottle are the throttle filter's options.
type BlockdevOptionsThrottle struct {
	ThrottleGroup string      `qapi:"throttle-group"`
	File          BlockdevRef `qapi:"file"`
}

// BlockdevOptionsCor are the copy-on-read filter's options: bottom is the
// lowest node whose data it copies up (default: the whole chain).
type BlockdevOptionsCor struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	Bottom                       *string `qapi:"bottom,optional"`
}

// BlkdebugEvent names the points of the block layer where blkdebug rules
// trigger.
type BlkdebugEvent string

func (BlkdebugEvent) EnumValues() []string {
	return []string{"l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
		"l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write", "read_aio",
		"read_backing_aio", "read_compressed", "write_aio", "write_compressed", "vmstate_load", "vmstate_save",
		"cow_read", "cow_write", "reftable_load", "reftable_grow", "reftable_update", "refblock_load",
		"refblock_update", "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
		"refblock_alloc_write", "refblock_alloc_write_blocks", "refblock_alloc_write_table",
		"refblock_alloc_switch_table", "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
		"flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail",
		"pwritev_rmw_after_tail", "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
		"l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none"}
}

// BlkdebugIOType is the kind of request an injected error applies to.
type BlkdebugIOType string

func (BlkdebugIOType) EnumValues() []string {
	return []string{"read", "write", "write-zeroes", "discard", "flush", "block-status"}
}

// BlkdebugInjectErrorOptions is one inject-error rule.
type BlkdebugInjectErrorOptions struct {
	Event       BlkdebugEvent   `qapi:"event"`
	State       *int64          `qapi:"state,optional"`
	Iotype      *BlkdebugIOType `qapi:"iotype,optional"`
	Errno       *int64          `qapi:"errno,optional"`
	Sector      *int64          `qapi:"sector,optional"`
	Once        *bool           `qapi:"once,optional"`
	Immediately *bool           `qapi:"immediately,optional"`
}

// BlkdebugSetStateOptions is one set-state rule.
type BlkdebugSetStateOptions struct {
	Event    BlkdebugEvent `qapi:"event"`
	State    *int64        `qapi:"state,optional"`
	NewState int64         `qapi:"new_state"`
}

// BlockdevOptionsBlkdebug are the blkdebug driver's options.
type BlockdevOptionsBlkdebug struct {
	Image             BlockdevRef                  `qapi:"image"`
	Config            *string                      `qapi:"config,optional"`
	Align             *int64                       `qapi:"align,optional"`
	MaxTransfer       *int32                       `qapi:"max-transfer,optional"`
	OptWriteZero      *int32                       `qapi:"opt-write-zero,optional"`
	MaxWriteZero      *int32                       `qapi:"max-write-zero,optional"`
	OptDiscard        *int32                       `qapi:"opt-discard,optional"`
	MaxDiscard        *int32                       `qapi:"max-discard,optional"`
	InjectError       []BlkdebugInjectErrorOptions `qapi:"inject-error,optional"`
	SetState          []BlkdebugSetStateOptions    `qapi:"set-state,optional"`
	TakeChildPerms    []BlockPermission            `qapi:"take-child-perms,optional"`
	UnshareChildPerms []BlockPermission            `qapi:"unshare-child-perms,optional"`
}

// QuorumReadPattern says how quorum reads: all children and a vote, or
// the first that answers.
type QuorumReadPattern string

func (QuorumReadPattern) EnumValues() []string { return []string{"quorum", "fifo"} }

// BlockdevOptionsQuorum are the quorum driver's options.
type BlockdevOptionsQuorum struct {
	Blkverify        *bool              `qapi:"blkverify,optional"`
	Children         []BlockdevRef      `qapi:"children"`
	VoteThreshold    int64              `qapi:"vote-threshold"`
	RewriteCorrupted *bool              `qapi:"rewrite-corrupted,optional"`
	ReadPattern      *QuorumReadPattern `qapi:"read-pattern,optional"`
}

// XBlockdevChangeArgs are x-blockdev-change's arguments: remove the child
// named child from parent, or add node as a new child.
type XBlockdevChangeArgs struct {
	Parent string  `qapi:"parent"`
	Child  *string `qapi:"child,optional"`
	Node   *string `qapi:"node,optional"`
}

// QuorumOpType is the kind of request a quorum event is about.
type QuorumOpType string

func (QuorumOpType) EnumValues() []string { return []string{"read", "write", "flush"} }

// QuorumFailure is QUORUM_FAILURE: no version of a range reached the
// vote threshold (or too many children failed).
type QuorumFailure struct {
	Reference    string `qapi:"reference"`
	SectorNum    int64  `qapi:"sector-num"`
	SectorsCount int64  `qapi:"sectors-count"`
}

// EventName implements events.Payload.
func (QuorumFailure) EventName() string { return "QUORUM_FAILURE" }

// QuorumReportBad is QUORUM_REPORT_BAD: one child failed a request or
// was outvoted.
type QuorumReportBad struct {
	Type         QuorumOpType `qapi:"type"`
	Error        *string      `qapi:"error,optional"`
	NodeName     string       `qapi:"node-name"`
	SectorNum    int64        `qapi:"sector-num"`
	SectorsCount int64        `qapi:"sectors-count"`
}

// EventName implements events.Payload.
func (QuorumReportBad) EventName() string { return "QUORUM_REPORT_BAD" }

// ThrottleKey implements events.ThrottleKeyer: each child's reports are
// throttled apart, as QEMU hashes them by node-name.
func (e QuorumReportBad) ThrottleKey() string { return e.NodeName }

// BlockdevOptionsBlkverify are blkverify's options: the image under test
// and the raw image it must read the same as.
type BlockdevOptionsBlkverify struct {
	Test BlockdevRef `qapi:"test"`
	Raw  BlockdevRef `qapi:"raw"`
}

// BlockdevOptionsPreallocate are the preallocate filter's options.
type BlockdevOptionsPreallocate struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	PreallocAlign                *int64 `qapi:"prealloc-align,optional"`
	PreallocSize                 *int64 `qapi:"prealloc-size,optional"`
}
