package schema

// Block node options and information, as QEMU 7.2's qapi/block-core.json
// declares them, limited to the drivers and members blockd implements so
// that introspection tells clients exactly what they can use.

// BlockdevDriver names the block drivers blockd has.
type BlockdevDriver string

// EnumValues lists the implemented drivers (a subset of QEMU's).
func (BlockdevDriver) EnumValues() []string {
	return []string{"blkdebug", "blkverify", "compress", "copy-before-write", "copy-on-read", "file", "luks", "nbd", "null-co", "preallocate", "qcow2", "quorum", "raw", "rbd", "snapshot-access", "throttle"}
}

// BlockdevDiscardOptions says whether discard requests reach the file.
type BlockdevDiscardOptions string

func (BlockdevDiscardOptions) EnumValues() []string { return []string{"ignore", "unmap"} }

// BlockdevDetectZeroesOptions controls zero-write detection.
type BlockdevDetectZeroesOptions string

func (BlockdevDetectZeroesOptions) EnumValues() []string { return []string{"off", "on", "unmap"} }

// OnOffAuto is QEMU's tri-state switch.
type OnOffAuto string

func (OnOffAuto) EnumValues() []string { return []string{"auto", "on", "off"} }

// BlockdevAioOptions selects the file driver's I/O engine.
type BlockdevAioOptions string

func (BlockdevAioOptions) EnumValues() []string { return []string{"threads", "native", "io_uring"} }

// BlockdevCacheOptions are the cache options of a node.
type BlockdevCacheOptions struct {
	Direct  *bool `qapi:"direct,optional"`
	NoFlush *bool `qapi:"no-flush,optional"`
}

// BlockdevOptions is blockdev-add's argument: a union on driver.
type BlockdevOptions struct {
	Driver       BlockdevDriver               `qapi:"driver,discriminator"`
	NodeName     *string                      `qapi:"node-name,optional"`
	Discard      *BlockdevDiscardOptions      `qapi:"discard,optional"`
	Cache        *BlockdevCacheOptions        `qapi:"cache,optional"`
	ReadOnly     *bool                        `qapi:"read-only,optional"`
	AutoReadOnly *bool                        `qapi:"auto-read-only,optional"`
	ForceShare   *bool                        `qapi:"force-share,optional"`
	DetectZeroes *BlockdevDetectZeroesOptions `qapi:"detect-zeroes,optional"`

	Blkdebug  *BlockdevOptionsBlkdebug  `qapi:",variant=blkdebug"`
	Blkverify *BlockdevOptionsBlkverify `qapi:",variant=blkverify"`
	Cbw       *BlockdevOptionsCbw       `qapi:",variant=copy-before-write"`
	Cor       *BlockdevOptionsCor       `qapi:",variant=copy-on-read"`
	// Compress is the compress filter: only its file child.
	Compress *BlockdevOptionsGenericFormat `qapi:",variant=compress"`
	File     *BlockdevOptionsFile          `qapi:",variant=file"`
	Luks     *BlockdevOptionsLUKS          `qapi:",variant=luks"`
	Nbd      *BlockdevOptionsNbd           `qapi:",variant=nbd"`
	Null     *BlockdevOptionsNull          `qapi:",variant=null-co"`
	Prealloc *BlockdevOptionsPreallocate   `qapi:",variant=preallocate"`
	Qcow2    *BlockdevOptionsQcow2         `qapi:",variant=qcow2"`
	Quorum   *BlockdevOptionsQuorum        `qapi:",variant=quorum"`
	Raw      *BlockdevOptionsRaw           `qapi:",variant=raw"`
	Rbd      *BlockdevOptionsRbd           `qapi:",variant=rbd"`
	// SnapshotAccess reads the point in time a copy-before-write filter
	// (its file) keeps.
	SnapshotAccess *BlockdevOptionsGenericFormat `qapi:",variant=snapshot-access"`
	Throttle       *BlockdevOptionsThrottle      `qapi:",variant=throttle"`
}

// OnCbwError says what a failed copy-before-write breaks.
type OnCbwError string

func (OnCbwError) EnumValues() []string { return []string{"break-guest-write", "break-snapshot"} }

// BlockdevOptionsCbw are the copy-before-write filter's options.
type BlockdevOptionsCbw struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	Target                       BlockdevRef       `qapi:"target"`
	Bitmap                       *BlockDirtyBitmap `qapi:"bitmap,optional"`
	OnCbwError                   *OnCbwError       `qapi:"on-cbw-error,optional"`
	CbwTimeout                   *uint32           `qapi:"cbw-timeout,optional"`
}

// BlockdevOptionsFile are the file driver's options.
type BlockdevOptionsFile struct {
	Filename    string              `qapi:"filename"`
	PrManager   *string             `qapi:"pr-manager,optional"`
	Locking     *OnOffAuto          `qapi:"locking,optional"`
	Aio         *BlockdevAioOptions `qapi:"aio,optional"`
	AioMaxBatch *int64              `qapi:"aio-max-batch,optional"`
	DropCache   *bool               `qapi:"drop-cache,optional"`
	// XCheckCacheDropped is accepted as QEMU does; it only matters to
	// cache invalidation on incoming migration, which blockd has not.
	XCheckCacheDropped *bool `qapi:"x-check-cache-dropped,optional"`
}

// BlockdevOptionsLUKS are the luks format driver's options.
type BlockdevOptionsLUKS struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	KeySecret                    *string `qapi:"key-secret,optional"`
}

// QCryptoCipherAlgorithm names a cipher.
type QCryptoCipherAlgorithm string

func (QCryptoCipherAlgorithm) EnumValues() []string {
	return []string{"aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128", "serpent-128", "serpent-192",
		"serpent-256", "twofish-128", "twofish-192", "twofish-256", "sm4"}
}

// QCryptoCipherMode names a block cipher mode.
type QCryptoCipherMode string

func (QCryptoCipherMode) EnumValues() []string { return []string{"ecb", "cbc", "xts", "ctr"} }

// QCryptoIVGenAlgorithm names an IV generator.
type QCryptoIVGenAlgorithm string

func (QCryptoIVGenAlgorithm) EnumValues() []string { return []string{"plain", "plain64", "essiv"} }

// QCryptoHashAlgorithm names a hash.
type QCryptoHashAlgorithm string

func (QCryptoHashAlgorithm) EnumValues() []string {
	return []string{"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160"}
}

// BlockdevOptionsNbd are the nbd (client) driver's options.
type BlockdevOptionsNbd struct {
	Server         SocketAddress `qapi:"server"`
	Export         *string       `qapi:"export,optional"`
	TLSCreds       *string       `qapi:"tls-creds,optional"`
	TLSHostname    *string       `qapi:"tls-hostname,optional"`
	XDirtyBitmap   *string       `qapi:"x-dirty-bitmap,optional,features=unstable"`
	ReconnectDelay *uint32       `qapi:"reconnect-delay,optional"`
	OpenTimeout    *uint32       `qapi:"open-timeout,optional"`
}

// BlockdevOptionsNull are the null-co driver's options.
type BlockdevOptionsNull struct {
	Size       *int64  `qapi:"size,optional"`
	LatencyNs  *uint64 `qapi:"latency-ns,optional"`
	ReadZeroes *bool   `qapi:"read-zeroes,optional"`
}

// RbdAuthMode is a Ceph authentication mode.
type RbdAuthMode string

func (RbdAuthMode) EnumValues() []string { return []string{"cephx", "none"} }

// InetSocketAddressBase is a host and a port, without options.
type InetSocketAddressBase struct {
	Host string `qapi:"host"`
	Port string `qapi:"port"`
}

// BlockdevOptionsRbd are the rbd driver's options. Encryption is decoded
// as any value: blockd refuses it whatever its format.
type BlockdevOptionsRbd struct {
	Pool               string                  `qapi:"pool"`
	Namespace          *string                 `qapi:"namespace,optional"`
	Image              string                  `qapi:"image"`
	Conf               *string                 `qapi:"conf,optional"`
	Snapshot           *string                 `qapi:"snapshot,optional"`
	Encrypt            Any                     `qapi:"encrypt,optional"`
	User               *string                 `qapi:"user,optional"`
	AuthClientRequired []RbdAuthMode           `qapi:"auth-client-required,optional"`
	KeySecret          *string                 `qapi:"key-secret,optional"`
	Server             []InetSocketAddressBase `qapi:"server,optional"`
}

// BlockdevOptionsGenericFormat is the base of format drivers' options.
type BlockdevOptionsGenericFormat struct {
	File BlockdevRef `qapi:"file"`
}

// BlockdevOptionsGenericCOWFormat adds a backing file.
type BlockdevOptionsGenericCOWFormat struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	Backing                      *BlockdevRefOrNull `qapi:"backing,optional"`
}

// BlockdevOptionsRaw are the raw driver's options.
type BlockdevOptionsRaw struct {
	BlockdevOptionsGenericFormat `qapi:",base"`
	Offset                       *int64 `qapi:"offset,optional"`
	Size                         *int64 `qapi:"size,optional"`
}

// Qcow2OverlapCheckMode selects a preset of metadata overlap checks.
type Qcow2OverlapCheckMode string

func (Qcow2OverlapCheckMode) EnumValues() []string {
	return []string{"none", "constant", "cached", "all"}
}

// BlockdevOptionsQcow2 are the qcow2 driver's options.
type BlockdevOptionsQcow2 struct {
	BlockdevOptionsGenericCOWFormat `qapi:",base"`
	LazyRefcounts                   *bool                  `qapi:"lazy-refcounts,optional"`
	PassDiscardRequest              *bool                  `qapi:"pass-discard-request,optional"`
	PassDiscardSnapshot             *bool                  `qapi:"pass-discard-snapshot,optional"`
	PassDiscardOther                *bool                  `qapi:"pass-discard-other,optional"`
	OverlapCheck                    *Qcow2OverlapCheckMode `qapi:"overlap-check,optional"`
	CacheSize                       *int64                 `qapi:"cache-size,optional"`
	L2CacheSize                     *int64                 `qapi:"l2-cache-size,optional"`
	L2CacheEntrySize                *int64                 `qapi:"l2-cache-entry-size,optional"`
	RefcountCacheSize               *int64                 `qapi:"refcount-cache-size,optional"`
	CacheCleanInterval              *int64                 `qapi:"cache-clean-interval,optional"`
	DataFile                        *BlockdevRef           `qapi:"data-file,optional"`
}

// BlockdevRef names an existing node or defines a new one inline.
type BlockdevRef struct {
	Definition *BlockdevOptions
	Reference  *string
}

// Alternate marks BlockdevRef as an alternate type.
func (BlockdevRef) Alternate() {}

// BlockdevRefOrNull is BlockdevRef, or null for "no node".
type BlockdevRefOrNull struct {
	Definition *BlockdevOptions
	Reference  *string
	Null       *Null
}

// Alternate marks BlockdevRefOrNull as an alternate type.
func (BlockdevRefOrNull) Alternate() {}

// BlockdevDelArgs is blockdev-del's argument.
type BlockdevDelArgs struct {
	NodeName string `qapi:"node-name"`
}

// BlockdevSnapshotArgs are blockdev-snapshot's arguments.
type BlockdevSnapshotArgs struct {
	Node    string `qapi:"node"`
	Overlay string `qapi:"overlay"`
}

// QueryNamedBlockNodesArgs is query-named-block-nodes' argument.
type QueryNamedBlockNodesArgs struct {
	Flat *bool `qapi:"flat,optional"`
}

// BlockdevCacheInfo describes a node's cache mode.
type BlockdevCacheInfo struct {
	Writeback bool `qapi:"writeback"`
	Direct    bool `qapi:"direct"`
	NoFlush   bool `qapi:"no-flush"`
}

// Qcow2CompressionType is the compression of a qcow2 image's clusters.
type Qcow2CompressionType string

func (Qcow2CompressionType) EnumValues() []string { return []string{"zlib", "zstd"} }

// ImageInfoSpecificQCow2 is qcow2's format-specific information.
type ImageInfoSpecificQCow2 struct {
	Compat          string               `qapi:"compat"`
	DataFile        *string              `qapi:"data-file,optional"`
	DataFileRaw     *bool                `qapi:"data-file-raw,optional"`
	ExtendedL2      *bool                `qapi:"extended-l2,optional"`
	LazyRefcounts   *bool                `qapi:"lazy-refcounts,optional"`
	Corrupt         *bool                `qapi:"corrupt,optional"`
	RefcountBits    int64                `qapi:"refcount-bits"`
	Bitmaps         []Qcow2BitmapInfo    `qapi:"bitmaps,optional"`
	CompressionType Qcow2CompressionType `qapi:"compression-type"`
}

// ImageInfoSpecificKind tags ImageInfoSpecific.
type ImageInfoSpecificKind string

func (ImageInfoSpecificKind) EnumValues() []string { return []string{"qcow2", "luks", "rbd"} }

// QCryptoBlockInfoLUKSSlot describes one LUKS key slot.
type QCryptoBlockInfoLUKSSlot struct {
	Active    bool   `qapi:"active"`
	Iters     *int64 `qapi:"iters,optional"`
	Stripes   *int64 `qapi:"stripes,optional"`
	KeyOffset int64  `qapi:"key-offset"`
}

// QCryptoBlockInfoLUKS is luks's format-specific information.
type QCryptoBlockInfoLUKS struct {
	CipherAlg      QCryptoCipherAlgorithm     `qapi:"cipher-alg"`
	CipherMode     QCryptoCipherMode          `qapi:"cipher-mode"`
	IvgenAlg       QCryptoIVGenAlgorithm      `qapi:"ivgen-alg"`
	IvgenHashAlg   *QCryptoHashAlgorithm      `qapi:"ivgen-hash-alg,optional"`
	HashAlg        QCryptoHashAlgorithm       `qapi:"hash-alg"`
	PayloadOffset  int64                      `qapi:"payload-offset"`
	MasterKeyIters int64                      `qapi:"master-key-iters"`
	UUID           string                     `qapi:"uuid"`
	Slots          []QCryptoBlockInfoLUKSSlot `qapi:"slots"`
}

// ImageInfoSpecificLUKSWrapper wraps QCryptoBlockInfoLUKS.
type ImageInfoSpecificLUKSWrapper struct {
	Data QCryptoBlockInfoLUKS `qapi:"data"`
}

// ImageInfoSpecificRbd is rbd's format-specific information (empty
// without encryption, which blockd does not open).
type ImageInfoSpecificRbd struct {
	EncryptionFormat *string `qapi:"encryption-format,optional"`
}

// ImageInfoSpecificRbdWrapper is the {"data": ...} wrapper of rbd's branch.
type ImageInfoSpecificRbdWrapper struct {
	Data ImageInfoSpecificRbd `qapi:"data"`
}

// ImageInfoSpecificQCow2Wrapper is QAPI's {"data": ...} wrapper of a
// simple union branch.
type ImageInfoSpecificQCow2Wrapper struct {
	Data ImageInfoSpecificQCow2 `qapi:"data"`
}

// ImageInfoSpecific is the format-specific part of ImageInfo.
type ImageInfoSpecific struct {
	Type  ImageInfoSpecificKind          `qapi:"type,discriminator"`
	Qcow2 *ImageInfoSpecificQCow2Wrapper `qapi:",variant=qcow2"`
	Luks  *ImageInfoSpecificLUKSWrapper  `qapi:",variant=luks"`
	Rbd   *ImageInfoSpecificRbdWrapper   `qapi:",variant=rbd"`
}

// ImageInfo describes the image a node presents.
type ImageInfo struct {
	Filename              string             `qapi:"filename"`
	Format                string             `qapi:"format"`
	DirtyFlag             *bool              `qapi:"dirty-flag,optional"`
	ActualSize            *int64             `qapi:"actual-size,optional"`
	VirtualSize           int64              `qapi:"virtual-size"`
	ClusterSize           *int64             `qapi:"cluster-size,optional"`
	Encrypted             *bool              `qapi:"encrypted,optional"`
	Compressed            *bool              `qapi:"compressed,optional"`
	BackingFilename       *string            `qapi:"backing-filename,optional"`
	FullBackingFilename   *string            `qapi:"full-backing-filename,optional"`
	BackingFilenameFormat *string            `qapi:"backing-filename-format,optional"`
	Snapshots             []SnapshotInfo     `qapi:"snapshots,optional"`
	BackingImage          *ImageInfo         `qapi:"backing-image,optional"`
	FormatSpecific        *ImageInfoSpecific `qapi:"format-specific,optional"`
}

// BlockDeviceInfo describes one node (query-named-block-nodes).
type BlockDeviceInfo struct {
	File             string                      `qapi:"file"`
	NodeName         *string                     `qapi:"node-name,optional"`
	Ro               bool                        `qapi:"ro"`
	Drv              string                      `qapi:"drv"`
	BackingFile      *string                     `qapi:"backing_file,optional"`
	BackingFileDepth int64                       `qapi:"backing_file_depth"`
	Encrypted        bool                        `qapi:"encrypted"`
	DetectZeroes     BlockdevDetectZeroesOptions `qapi:"detect_zeroes"`
	Bps              int64                       `qapi:"bps"`
	BpsRd            int64                       `qapi:"bps_rd"`
	BpsWr            int64                       `qapi:"bps_wr"`
	Iops             int64                       `qapi:"iops"`
	IopsRd           int64                       `qapi:"iops_rd"`
	IopsWr           int64                       `qapi:"iops_wr"`
	Image            ImageInfo                   `qapi:"image"`
	Cache            BlockdevCacheInfo           `qapi:"cache"`
	WriteThreshold   int64                       `qapi:"write_threshold"`
	DirtyBitmaps     []BlockDirtyInfo            `qapi:"dirty-bitmaps,optional"`
}

// BlockDirtyInfo describes a dirty bitmap on a node (a job's bitmaps are
// anonymous).
type BlockDirtyInfo struct {
	Name         *string `qapi:"name,optional"`
	Count        int64   `qapi:"count"`
	Granularity  uint32  `qapi:"granularity"`
	Recording    bool    `qapi:"recording"`
	Busy         bool    `qapi:"busy"`
	Persistent   bool    `qapi:"persistent"`
	Inconsistent *bool   `qapi:"inconsistent,optional"`
}

// BlockPermission names one permission in graph dumps.
type BlockPermission string

func (BlockPermission) EnumValues() []string {
	return []string{"consistent-read", "write", "write-unchanged", "resize"}
}

// XDbgBlockGraphNodeType says what a graph vertex is.
type XDbgBlockGraphNodeType string

func (XDbgBlockGraphNodeType) EnumValues() []string {
	return []string{"block-backend", "block-job", "block-driver"}
}

// XDbgBlockGraphNode is one vertex of x-debug-query-block-graph.
type XDbgBlockGraphNode struct {
	ID   uint64                 `qapi:"id"`
	Type XDbgBlockGraphNodeType `qapi:"type"`
	Name string                 `qapi:"name"`
}

// XDbgBlockGraphEdge is one edge of x-debug-query-block-graph.
type XDbgBlockGraphEdge struct {
	Parent     uint64            `qapi:"parent"`
	Child      uint64            `qapi:"child"`
	Name       string            `qapi:"name"`
	Perm       []BlockPermission `qapi:"perm"`
	SharedPerm []BlockPermission `qapi:"shared-perm"`
}

// XDbgBlockGraph is x-debug-query-block-graph's return value.
type XDbgBlockGraph struct {
	Nodes []XDbgBlockGraphNode `qapi:"nodes"`
	Edges []XDbgBlockGraphEdge `qapi:"edges"`
}

// StrOrNull is a string, or null for "none" (x-blockdev-set-iothread's
// iothread).
type StrOrNull struct {
	S *string
	N *Null
}

// Alternate marks StrOrNull as an alternate type.
func (StrOrNull) Alternate() {}

// XBlockdevSetIothreadArgs is x-blockdev-set-iothread's argument.
type XBlockdevSetIothreadArgs struct {
	NodeName string    `qapi:"node-name"`
	Iothread StrOrNull `qapi:"iothread"`
	Force    *bool     `qapi:"force,optional"`
}
