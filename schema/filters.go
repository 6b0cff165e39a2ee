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
