package schema

// Job and block job types, as QEMU 7.2's qapi/job.json and block-core.json
// declare them.

// JobType is the kind of a job.
type JobType string

func (JobType) EnumValues() []string {
	return []string{"commit", "stream", "mirror", "backup", "create", "amend",
		"snapshot-load", "snapshot-save", "snapshot-delete"}
}

// JobStatus is a job's state in QEMU's job state machine.
type JobStatus string

func (JobStatus) EnumValues() []string {
	return []string{"undefined", "created", "running", "paused", "ready", "standby",
		"waiting", "pending", "aborting", "concluded", "null"}
}

// BlockdevOnError is the policy for I/O errors in a job.
type BlockdevOnError string

func (BlockdevOnError) EnumValues() []string {
	return []string{"report", "ignore", "enospc", "stop", "auto"}
}

// BlockCommitArgs are block-commit's arguments.
type BlockCommitArgs struct {
	JobID            *string          `qapi:"job-id,optional"`
	Device           string           `qapi:"device"`
	BaseNode         *string          `qapi:"base-node,optional"`
	Base             *string          `qapi:"base,optional,features=deprecated"`
	TopNode          *string          `qapi:"top-node,optional"`
	Top              *string          `qapi:"top,optional,features=deprecated"`
	BackingFile      *string          `qapi:"backing-file,optional"`
	BackingMaskProto *bool            `qapi:"backing-mask-protocol,optional"`
	Speed            *int64           `qapi:"speed,optional"`
	OnError          *BlockdevOnError `qapi:"on-error,optional"`
	FilterNodeName   *string          `qapi:"filter-node-name,optional"`
	AutoFinalize     *bool            `qapi:"auto-finalize,optional"`
	AutoDismiss      *bool            `qapi:"auto-dismiss,optional"`
}

// JobIDArgs name a job (job-* commands).
type JobIDArgs struct {
	ID string `qapi:"id"`
}

// JobCancelArgs are job-cancel's arguments.
type JobCancelArgs = JobIDArgs

// BlockJobDeviceArgs name a block job by its device (block-job-pause…).
type BlockJobDeviceArgs struct {
	Device string `qapi:"device"`
}

// BlockJobCancelArgs are block-job-cancel's arguments.
type BlockJobCancelArgs struct {
	Device string `qapi:"device"`
	Force  *bool  `qapi:"force,optional"`
}

// BlockJobSetSpeedArgs are block-job-set-speed's arguments.
type BlockJobSetSpeedArgs struct {
	Device string `qapi:"device"`
	Speed  int64  `qapi:"speed"`
}

// JobInfo is one entry of query-jobs.
type JobInfo struct {
	ID              string    `qapi:"id"`
	Type            JobType   `qapi:"type"`
	Status          JobStatus `qapi:"status"`
	CurrentProgress int64     `qapi:"current-progress"`
	TotalProgress   int64     `qapi:"total-progress"`
	Error           *string   `qapi:"error,optional"`
}

// BlockDeviceIoStatus is a job's I/O status.
type BlockDeviceIoStatus string

func (BlockDeviceIoStatus) EnumValues() []string { return []string{"ok", "failed", "nospace"} }

// BlockJobInfo is one entry of query-block-jobs.
type BlockJobInfo struct {
	Type         string              `qapi:"type"`
	Device       string              `qapi:"device"`
	Len          int64               `qapi:"len"`
	Offset       int64               `qapi:"offset"`
	Busy         bool                `qapi:"busy"`
	Paused       bool                `qapi:"paused"`
	Speed        int64               `qapi:"speed"`
	IoStatus     BlockDeviceIoStatus `qapi:"io-status"`
	Ready        bool                `qapi:"ready"`
	Status       JobStatus           `qapi:"status"`
	AutoFinalize bool                `qapi:"auto-finalize"`
	AutoDismiss  bool                `qapi:"auto-dismiss"`
	Error        *string             `qapi:"error,optional"`
}

// JobStatusChange is JOB_STATUS_CHANGE.
type JobStatusChange struct {
	ID     string    `qapi:"id"`
	Status JobStatus `qapi:"status"`
}

func (JobStatusChange) EventName() string { return "JOB_STATUS_CHANGE" }

// BlockJobProgress is the data of BLOCK_JOB_COMPLETED, _CANCELLED and
// _READY (QEMU declares them separately with these members).
type BlockJobProgress struct {
	Type   JobType `qapi:"type"`
	Device string  `qapi:"device"`
	Len    int64   `qapi:"len"`
	Offset int64   `qapi:"offset"`
	Speed  int64   `qapi:"speed"`
	Error  *string `qapi:"error,optional"`
}

// BlockJobCompleted is BLOCK_JOB_COMPLETED.
type BlockJobCompleted BlockJobProgress

func (BlockJobCompleted) EventName() string { return "BLOCK_JOB_COMPLETED" }

// BlockJobCancelled is BLOCK_JOB_CANCELLED.
type BlockJobCancelled struct {
	Type   JobType `qapi:"type"`
	Device string  `qapi:"device"`
	Len    int64   `qapi:"len"`
	Offset int64   `qapi:"offset"`
	Speed  int64   `qapi:"speed"`
}

func (BlockJobCancelled) EventName() string { return "BLOCK_JOB_CANCELLED" }

// BlockJobReady is BLOCK_JOB_READY.
type BlockJobReady BlockJobCancelled

func (BlockJobReady) EventName() string { return "BLOCK_JOB_READY" }

// BlockJobPending is BLOCK_JOB_PENDING.
type BlockJobPending struct {
	Type JobType `qapi:"type"`
	ID   string  `qapi:"id"`
}

func (BlockJobPending) EventName() string { return "BLOCK_JOB_PENDING" }

// IoOperationType says whether a failed request was a read or a write.
type IoOperationType string

func (IoOperationType) EnumValues() []string { return []string{"read", "write"} }

// BlockErrorAction is what a job did about an I/O error.
type BlockErrorAction string

func (BlockErrorAction) EnumValues() []string { return []string{"ignore", "report", "stop"} }

// BlockJobError is BLOCK_JOB_ERROR.
type BlockJobError struct {
	Device    string           `qapi:"device"`
	Operation IoOperationType  `qapi:"operation"`
	Action    BlockErrorAction `qapi:"action"`
}

func (BlockJobError) EventName() string { return "BLOCK_JOB_ERROR" }

// BlockStreamArgs are block-stream's arguments.
type BlockStreamArgs struct {
	JobID          *string          `qapi:"job-id,optional"`
	Device         string           `qapi:"device"`
	Base           *string          `qapi:"base,optional"`
	BaseNode       *string          `qapi:"base-node,optional"`
	BackingFile    *string          `qapi:"backing-file,optional"`
	Bottom         *string          `qapi:"bottom,optional"`
	Speed          *int64           `qapi:"speed,optional"`
	OnError        *BlockdevOnError `qapi:"on-error,optional"`
	FilterNodeName *string          `qapi:"filter-node-name,optional"`
	AutoFinalize   *bool            `qapi:"auto-finalize,optional"`
	AutoDismiss    *bool            `qapi:"auto-dismiss,optional"`
}

// MirrorSyncMode says what a mirror or backup job copies.
type MirrorSyncMode string

func (MirrorSyncMode) EnumValues() []string {
	return []string{"top", "full", "none", "incremental", "bitmap"}
}

// MirrorCopyMode says whether guest writes wait for the mirror target.
type MirrorCopyMode string

func (MirrorCopyMode) EnumValues() []string { return []string{"background", "write-blocking"} }

// BlockdevMirrorArgs are blockdev-mirror's arguments.
type BlockdevMirrorArgs struct {
	JobID          *string          `qapi:"job-id,optional"`
	Device         string           `qapi:"device"`
	Target         string           `qapi:"target"`
	Replaces       *string          `qapi:"replaces,optional"`
	Sync           MirrorSyncMode   `qapi:"sync"`
	Speed          *int64           `qapi:"speed,optional"`
	Granularity    *uint32          `qapi:"granularity,optional"`
	BufSize        *int64           `qapi:"buf-size,optional"`
	OnSourceError  *BlockdevOnError `qapi:"on-source-error,optional"`
	OnTargetError  *BlockdevOnError `qapi:"on-target-error,optional"`
	FilterNodeName *string          `qapi:"filter-node-name,optional"`
	CopyMode       *MirrorCopyMode  `qapi:"copy-mode,optional"`
	AutoFinalize   *bool            `qapi:"auto-finalize,optional"`
	AutoDismiss    *bool            `qapi:"auto-dismiss,optional"`
}

// BitmapSyncMode says when a backup's bitmap is synchronized.
type BitmapSyncMode string

func (BitmapSyncMode) EnumValues() []string { return []string{"on-success", "never", "always"} }

// BackupPerf are a backup's x-perf tunables.
type BackupPerf struct {
	UseCopyRange *bool  `qapi:"use-copy-range,optional"`
	MaxWorkers   *int64 `qapi:"max-workers,optional"`
	MaxChunk     *int64 `qapi:"max-chunk,optional"`
}

// BackupCommon are the arguments blockdev-backup and drive-backup share.
type BackupCommon struct {
	JobID          *string          `qapi:"job-id,optional"`
	Device         string           `qapi:"device"`
	Sync           MirrorSyncMode   `qapi:"sync"`
	Speed          *int64           `qapi:"speed,optional"`
	Bitmap         *string          `qapi:"bitmap,optional"`
	BitmapMode     *BitmapSyncMode  `qapi:"bitmap-mode,optional"`
	Compress       *bool            `qapi:"compress,optional"`
	OnSourceError  *BlockdevOnError `qapi:"on-source-error,optional"`
	OnTargetError  *BlockdevOnError `qapi:"on-target-error,optional"`
	AutoFinalize   *bool            `qapi:"auto-finalize,optional"`
	AutoDismiss    *bool            `qapi:"auto-dismiss,optional"`
	FilterNodeName *string          `qapi:"filter-node-name,optional"`
	XPerf          *BackupPerf      `qapi:"x-perf,optional,features=unstable"`
}

// BlockdevBackupArgs are blockdev-backup's arguments.
type BlockdevBackupArgs struct {
	BackupCommon `qapi:",base"`
	Target       string `qapi:"target"`
}

// DriveMirrorArgs are drive-mirror's arguments: blockdev-mirror's, with
// the target an image file that the command creates (or opens).
type DriveMirrorArgs struct {
	JobID         *string          `qapi:"job-id,optional"`
	Device        string           `qapi:"device"`
	Target        string           `qapi:"target"`
	Format        *string          `qapi:"format,optional"`
	NodeName      *string          `qapi:"node-name,optional"`
	Replaces      *string          `qapi:"replaces,optional"`
	Sync          MirrorSyncMode   `qapi:"sync"`
	Mode          *NewImageMode    `qapi:"mode,optional"`
	Speed         *int64           `qapi:"speed,optional"`
	Granularity   *uint32          `qapi:"granularity,optional"`
	BufSize       *int64           `qapi:"buf-size,optional"`
	OnSourceError *BlockdevOnError `qapi:"on-source-error,optional"`
	OnTargetError *BlockdevOnError `qapi:"on-target-error,optional"`
	Unmap         *bool            `qapi:"unmap,optional"`
	CopyMode      *MirrorCopyMode  `qapi:"copy-mode,optional"`
	AutoFinalize  *bool            `qapi:"auto-finalize,optional"`
	AutoDismiss   *bool            `qapi:"auto-dismiss,optional"`
}

// DriveBackupArgs are drive-backup's arguments.
type DriveBackupArgs struct {
	BackupCommon `qapi:",base"`
	Target       string        `qapi:"target"`
	Format       *string       `qapi:"format,optional"`
	Mode         *NewImageMode `qapi:"mode,optional"`
}
