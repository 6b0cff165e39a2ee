package schema

// Image lifecycle commands (QEMU 7.2's block-core.json): resize, create,
// amend, snapshots, transaction.

// BlockResizeArgs are block_resize's arguments.
type BlockResizeArgs struct {
	Device   *string `qapi:"device,optional"`
	NodeName *string `qapi:"node-name,optional"`
	Size     int64   `qapi:"size"`
}

// PreallocMode is how much of an image creation allocates up front.
type PreallocMode string

func (PreallocMode) EnumValues() []string { return []string{"off", "metadata", "falloc", "full"} }

// BlockdevQcow2Version is the qcow2 header version to create.
type BlockdevQcow2Version string

func (BlockdevQcow2Version) EnumValues() []string { return []string{"v2", "v3"} }

// BlockdevCreateArgs are blockdev-create's arguments.
type BlockdevCreateArgs struct {
	JobID   string                `qapi:"job-id"`
	Options BlockdevCreateOptions `qapi:"options"`
}

// BlockdevCreateOptions is a union on driver; drivers without a branch
// accept no other member and are refused by the command.
type BlockdevCreateOptions struct {
	Driver BlockdevDriver `qapi:"driver,discriminator"`

	File  *BlockdevCreateOptionsFile  `qapi:",variant=file"`
	Luks  *BlockdevCreateOptionsLUKS  `qapi:",variant=luks"`
	Qcow2 *BlockdevCreateOptionsQcow2 `qapi:",variant=qcow2"`
	Rbd   *BlockdevCreateOptionsRbd   `qapi:",variant=rbd"`
}

// BlockdevCreateOptionsRbd creates an rbd image.
type BlockdevCreateOptionsRbd struct {
	Location    BlockdevOptionsRbd `qapi:"location"`
	Size        Size               `qapi:"size"`
	ClusterSize *Size              `qapi:"cluster-size,optional"`
	Encrypt     Any                `qapi:"encrypt,optional"`
}

// BlockdevCreateOptionsFile creates a file.
type BlockdevCreateOptionsFile struct {
	Filename       string        `qapi:"filename"`
	Size           Size          `qapi:"size"`
	Preallocation  *PreallocMode `qapi:"preallocation,optional"`
	Nocow          *bool         `qapi:"nocow,optional"`
	ExtentSizeHint *Size         `qapi:"extent-size-hint,optional"`
}

// BlockdevCreateOptionsLUKS creates a LUKS image on an open node.
type BlockdevCreateOptionsLUKS struct {
	KeySecret     *string                 `qapi:"key-secret,optional"`
	CipherAlg     *QCryptoCipherAlgorithm `qapi:"cipher-alg,optional"`
	CipherMode    *QCryptoCipherMode      `qapi:"cipher-mode,optional"`
	IvgenAlg      *QCryptoIVGenAlgorithm  `qapi:"ivgen-alg,optional"`
	IvgenHashAlg  *QCryptoHashAlgorithm   `qapi:"ivgen-hash-alg,optional"`
	HashAlg       *QCryptoHashAlgorithm   `qapi:"hash-alg,optional"`
	IterTime      *int64                  `qapi:"iter-time,optional"`
	File          BlockdevRef             `qapi:"file"`
	Size          Size                    `qapi:"size"`
	Preallocation *PreallocMode           `qapi:"preallocation,optional"`
}

// BlockdevCreateOptionsQcow2 creates a qcow2 image on an open node.
type BlockdevCreateOptionsQcow2 struct {
	File            BlockdevRef           `qapi:"file"`
	DataFile        *BlockdevRef          `qapi:"data-file,optional"`
	DataFileRaw     *bool                 `qapi:"data-file-raw,optional"`
	ExtendedL2      *bool                 `qapi:"extended-l2,optional"`
	Size            Size                  `qapi:"size"`
	Version         *BlockdevQcow2Version `qapi:"version,optional"`
	BackingFile     *string               `qapi:"backing-file,optional"`
	BackingFmt      *BlockdevDriver       `qapi:"backing-fmt,optional"`
	Encrypt         Any                   `qapi:"encrypt,optional"`
	ClusterSize     *Size                 `qapi:"cluster-size,optional"`
	Preallocation   *PreallocMode         `qapi:"preallocation,optional"`
	LazyRefcounts   *bool                 `qapi:"lazy-refcounts,optional"`
	RefcountBits    *int64                `qapi:"refcount-bits,optional"`
	CompressionType *Qcow2CompressionType `qapi:"compression-type,optional"`
}

// NewImageMode says whether blockdev-snapshot-sync creates the overlay.
type NewImageMode string

func (NewImageMode) EnumValues() []string { return []string{"existing", "absolute-paths"} }

// BlockdevSnapshotSyncArgs are blockdev-snapshot-sync's arguments.
type BlockdevSnapshotSyncArgs struct {
	Device           *string       `qapi:"device,optional"`
	NodeName         *string       `qapi:"node-name,optional"`
	SnapshotFile     string        `qapi:"snapshot-file"`
	SnapshotNodeName *string       `qapi:"snapshot-node-name,optional"`
	Format           *string       `qapi:"format,optional"`
	Mode             *NewImageMode `qapi:"mode,optional"`
}

// ChangeBackingFileArgs are change-backing-file's arguments.
type ChangeBackingFileArgs struct {
	Device        string `qapi:"device"`
	ImageNodeName string `qapi:"image-node-name"`
	BackingFile   string `qapi:"backing-file"`
}

// SnapshotInfo describes an internal snapshot.
type SnapshotInfo struct {
	ID          string `qapi:"id"`
	Name        string `qapi:"name"`
	VMStateSize int64  `qapi:"vm-state-size"`
	DateSec     int64  `qapi:"date-sec"`
	DateNsec    int64  `qapi:"date-nsec"`
	VMClockSec  int64  `qapi:"vm-clock-sec"`
	VMClockNsec int64  `qapi:"vm-clock-nsec"`
	Icount      *int64 `qapi:"icount,optional"`
}

// BlockdevSnapshotInternalArgs are blockdev-snapshot-internal-sync's
// arguments.
type BlockdevSnapshotInternalArgs struct {
	Device string `qapi:"device"`
	Name   string `qapi:"name"`
}

// BlockdevSnapshotDeleteInternalArgs are
// blockdev-snapshot-delete-internal-sync's arguments.
type BlockdevSnapshotDeleteInternalArgs struct {
	Device string  `qapi:"device"`
	ID     *string `qapi:"id,optional"`
	Name   *string `qapi:"name,optional"`
}

// BlockSetWriteThresholdArgs are block-set-write-threshold's arguments.
type BlockSetWriteThresholdArgs struct {
	NodeName       string `qapi:"node-name"`
	WriteThreshold uint64 `qapi:"write-threshold"`
}

// BlockWriteThreshold is BLOCK_WRITE_THRESHOLD: a write ended past the
// node's threshold, which is then cleared.
type BlockWriteThreshold struct {
	NodeName       string `qapi:"node-name"`
	AmountExceeded uint64 `qapi:"amount-exceeded"`
	WriteThreshold uint64 `qapi:"write-threshold"`
}

// EventName implements events.Payload.
func (BlockWriteThreshold) EventName() string { return "BLOCK_WRITE_THRESHOLD" }

// BlockdevAmendArgs are x-blockdev-amend's arguments.
type BlockdevAmendArgs struct {
	JobID    string               `qapi:"job-id"`
	NodeName string               `qapi:"node-name"`
	Options  BlockdevAmendOptions `qapi:"options"`
	Force    *bool                `qapi:"force,optional"`
}

// BlockdevAmendOptions is a union on driver: only the drivers QEMU 7.2
// can amend have a branch (blockd has no luks driver).
type BlockdevAmendOptions struct {
	Driver BlockdevDriver             `qapi:"driver,discriminator"`
	Qcow2  *BlockdevAmendOptionsQcow2 `qapi:",variant=qcow2"`
}

// BlockdevAmendOptionsQcow2 is what QEMU 7.2 amends in a qcow2 image
// through QMP: its encryption keys.
type BlockdevAmendOptionsQcow2 struct {
	Encrypt *QCryptoBlockAmendOptions `qapi:"encrypt,optional"`
}

// QCryptoBlockFormat is an encryption format.
type QCryptoBlockFormat string

func (QCryptoBlockFormat) EnumValues() []string { return []string{"qcow", "luks"} }

// QCryptoBlockAmendOptions are encryption changes, a union on format.
type QCryptoBlockAmendOptions struct {
	Format QCryptoBlockFormat            `qapi:"format,discriminator"`
	Luks   *QCryptoBlockAmendOptionsLUKS `qapi:",variant=luks"`
}

// QCryptoBlockLUKSKeyslotState is what a LUKS keyslot amend does.
type QCryptoBlockLUKSKeyslotState string

func (QCryptoBlockLUKSKeyslotState) EnumValues() []string { return []string{"active", "inactive"} }

// QCryptoBlockAmendOptionsLUKS changes LUKS keyslots.
type QCryptoBlockAmendOptionsLUKS struct {
	State     QCryptoBlockLUKSKeyslotState `qapi:"state"`
	NewSecret *string                      `qapi:"new-secret,optional"`
	OldSecret *string                      `qapi:"old-secret,optional"`
	Keyslot   *int64                       `qapi:"keyslot,optional"`
	IterTime  *int64                       `qapi:"iter-time,optional"`
	Secret    *string                      `qapi:"secret,optional"`
}
