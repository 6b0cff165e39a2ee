package schema

// query-block and query-blockstats (QEMU 7.2's block-core.json).

// BlockInfo is one block backend with a name (query-block). A storage
// daemon has none: its exports' backends are anonymous.
type BlockInfo struct {
	Device    string               `qapi:"device"`
	Qdev      *string              `qapi:"qdev,optional"`
	Type      string               `qapi:"type"`
	Removable bool                 `qapi:"removable"`
	Locked    bool                 `qapi:"locked"`
	Inserted  *BlockDeviceInfo     `qapi:"inserted,optional"`
	TrayOpen  *bool                `qapi:"tray_open,optional"`
	IoStatus  *BlockDeviceIoStatus `qapi:"io-status,optional"`
}

// QueryBlockstatsArgs are query-blockstats' arguments.
type QueryBlockstatsArgs struct {
	QueryNodes *bool `qapi:"query-nodes,optional"`
}

// BlockDeviceTimedStats are latency statistics over an interval.
type BlockDeviceTimedStats struct {
	IntervalLength    int64   `qapi:"interval_length"`
	MinRdLatencyNs    int64   `qapi:"min_rd_latency_ns"`
	MaxRdLatencyNs    int64   `qapi:"max_rd_latency_ns"`
	AvgRdLatencyNs    int64   `qapi:"avg_rd_latency_ns"`
	MinWrLatencyNs    int64   `qapi:"min_wr_latency_ns"`
	MaxWrLatencyNs    int64   `qapi:"max_wr_latency_ns"`
	AvgWrLatencyNs    int64   `qapi:"avg_wr_latency_ns"`
	MinFlushLatencyNs int64   `qapi:"min_flush_latency_ns"`
	MaxFlushLatencyNs int64   `qapi:"max_flush_latency_ns"`
	AvgFlushLatencyNs int64   `qapi:"avg_flush_latency_ns"`
	AvgRdQueueDepth   float64 `qapi:"avg_rd_queue_depth"`
	AvgWrQueueDepth   float64 `qapi:"avg_wr_queue_depth"`
}

// BlockLatencyHistogramInfo is a latency histogram.
type BlockLatencyHistogramInfo struct {
	Boundaries []uint64 `qapi:"boundaries"`
	Bins       []uint64 `qapi:"bins"`
}

// BlockDeviceStats are the I/O counters of a backend or node.
type BlockDeviceStats struct {
	RdBytes                uint64                     `qapi:"rd_bytes"`
	WrBytes                uint64                     `qapi:"wr_bytes"`
	UnmapBytes             uint64                     `qapi:"unmap_bytes"`
	RdOperations           uint64                     `qapi:"rd_operations"`
	WrOperations           uint64                     `qapi:"wr_operations"`
	FlushOperations        uint64                     `qapi:"flush_operations"`
	UnmapOperations        uint64                     `qapi:"unmap_operations"`
	RdTotalTimeNs          uint64                     `qapi:"rd_total_time_ns"`
	WrTotalTimeNs          uint64                     `qapi:"wr_total_time_ns"`
	FlushTotalTimeNs       uint64                     `qapi:"flush_total_time_ns"`
	UnmapTotalTimeNs       uint64                     `qapi:"unmap_total_time_ns"`
	WrHighestOffset        int64                      `qapi:"wr_highest_offset"`
	RdMerged               uint64                     `qapi:"rd_merged"`
	WrMerged               uint64                     `qapi:"wr_merged"`
	UnmapMerged            uint64                     `qapi:"unmap_merged"`
	IdleTimeNs             *int64                     `qapi:"idle_time_ns,optional"`
	FailedRdOperations     uint64                     `qapi:"failed_rd_operations"`
	FailedWrOperations     uint64                     `qapi:"failed_wr_operations"`
	FailedFlushOperations  uint64                     `qapi:"failed_flush_operations"`
	FailedUnmapOperations  uint64                     `qapi:"failed_unmap_operations"`
	InvalidRdOperations    uint64                     `qapi:"invalid_rd_operations"`
	InvalidWrOperations    uint64                     `qapi:"invalid_wr_operations"`
	InvalidFlushOperations uint64                     `qapi:"invalid_flush_operations"`
	InvalidUnmapOperations uint64                     `qapi:"invalid_unmap_operations"`
	AccountInvalid         bool                       `qapi:"account_invalid"`
	AccountFailed          bool                       `qapi:"account_failed"`
	TimedStats             []BlockDeviceTimedStats    `qapi:"timed_stats"`
	RdLatencyHistogram     *BlockLatencyHistogramInfo `qapi:"rd_latency_histogram,optional"`
	WrLatencyHistogram     *BlockLatencyHistogramInfo `qapi:"wr_latency_histogram,optional"`
	FlushLatencyHistogram  *BlockLatencyHistogramInfo `qapi:"flush_latency_histogram,optional"`
}

// BlockStatsSpecific is what a driver adds (file and host_device: the
// discards it passed to the host).
type BlockStatsSpecific struct {
	Driver BlockdevDriver          `qapi:"driver,discriminator"`
	File   *BlockStatsSpecificFile `qapi:",variant=file"`
}

// BlockStatsSpecificFile counts a file node's discards.
type BlockStatsSpecificFile struct {
	DiscardNbOk     uint64 `qapi:"discard-nb-ok"`
	DiscardNbFailed uint64 `qapi:"discard-nb-failed"`
	DiscardBytesOk  uint64 `qapi:"discard-bytes-ok"`
}

// BlockStats is one entry of query-blockstats.
type BlockStats struct {
	Device         *string             `qapi:"device,optional"`
	Qdev           *string             `qapi:"qdev,optional"`
	NodeName       *string             `qapi:"node-name,optional"`
	Stats          BlockDeviceStats    `qapi:"stats"`
	DriverSpecific *BlockStatsSpecific `qapi:"driver-specific,optional"`
	Parent         *BlockStats         `qapi:"parent,optional"`
	Backing        *BlockStats         `qapi:"backing,optional"`
}
