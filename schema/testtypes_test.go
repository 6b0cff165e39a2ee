package schema

// Test declarations modelled on QEMU 7.2's block-core.json, qom.json and
// sockets.json, trimmed to what the error-text tables need. They are the
// shapes the real QSD commands have, so the texts QSD printed for those
// commands must come out of Decode unchanged. The Go names carry a "t"
// prefix to stay clear of the package's real declarations; alternates
// whose QAPI name appears in error texts say it with QAPIName.

type tBlockdevDriver string

func (tBlockdevDriver) EnumValues() []string {
	return []string{"blkdebug", "file", "host_device", "qcow2", "raw", "vvfat", "null-co"}
}

type tBlockdevDiscardOptions string

func (tBlockdevDiscardOptions) EnumValues() []string { return []string{"ignore", "unmap"} }

type tBlockdevCacheOptions struct {
	Direct  *bool `qapi:"direct,optional"`
	NoFlush *bool `qapi:"no-flush,optional"`
}

// tBlockdevOptions is QEMU's BlockdevOptions, the flat union blockdev-add takes (boxed).
type tBlockdevOptions struct {
	Driver   tBlockdevDriver          `qapi:"driver,discriminator"`
	NodeName *string                  `qapi:"node-name,optional"`
	Discard  *tBlockdevDiscardOptions `qapi:"discard,optional"`
	Cache    *tBlockdevCacheOptions   `qapi:"cache,optional"`
	ReadOnly *bool                    `qapi:"read-only,optional"`

	Blkdebug *tBlockdevOptionsBlkdebug `qapi:",variant=blkdebug"`
	File     *tBlockdevOptionsFile     `qapi:",variant=file|host_device"`
	Qcow2    *tBlockdevOptionsQcow2    `qapi:",variant=qcow2"`
	Raw      *tBlockdevOptionsRaw      `qapi:",variant=raw"`
	Null     *tBlockdevOptionsNull     `qapi:",variant=null-co"`
}

type tBlockdevOptionsNull struct {
	Size       *int64  `qapi:"size,optional"`
	LatencyNs  *uint64 `qapi:"latency-ns,optional"`
	ReadZeroes *bool   `qapi:"read-zeroes,optional"`
}

type tBlockdevOptionsFile struct {
	Filename           string `qapi:"filename"`
	AioMaxBatch        *int64 `qapi:"aio-max-batch,optional"`
	XCheckCacheDropped *bool  `qapi:"x-check-cache-dropped,optional,features=unstable"`
}

func (tBlockdevOptionsFile) QAPIFeatures() []string { return []string{"dynamic-auto-read-only"} }

type tBlockdevOptionsGenericFormat struct {
	File tBlockdevRef `qapi:"file"`
}

type tBlockdevOptionsGenericCOWFormat struct {
	tBlockdevOptionsGenericFormat `qapi:",base"`
	Backing                       *tBlockdevRefOrNull `qapi:"backing,optional"`
}

type tBlockdevOptionsQcow2 struct {
	tBlockdevOptionsGenericCOWFormat
	LazyRefcounts *bool                `qapi:"lazy-refcounts,optional"`
	OverlapCheck  *tQcow2OverlapChecks `qapi:"overlap-check,optional"`
	CacheSize     *int64               `qapi:"cache-size,optional"`
}

type tBlockdevOptionsRaw struct {
	tBlockdevOptionsGenericFormat
	Offset *int64 `qapi:"offset,optional"`
	Size   *int64 `qapi:"size,optional"`
}

type tQcow2OverlapCheckMode string

func (tQcow2OverlapCheckMode) EnumValues() []string {
	return []string{"none", "constant", "cached", "all"}
}

type tQcow2OverlapCheckFlags struct {
	Template   *tQcow2OverlapCheckMode `qapi:"template,optional"`
	MainHeader *bool                   `qapi:"main-header,optional"`
}

type tQcow2OverlapChecks struct {
	Flags *tQcow2OverlapCheckFlags
	Mode  *tQcow2OverlapCheckMode
}

func (tQcow2OverlapChecks) Alternate()       {}
func (tQcow2OverlapChecks) QAPIName() string { return "Qcow2OverlapChecks" }

type tBlockdevOptionsBlkdebug struct {
	Image          tBlockdevRef                  `qapi:"image"`
	InjectError    []tBlkdebugInjectErrorOptions `qapi:"inject-error,optional"`
	TakeChildPerms []tBlockPermission            `qapi:"take-child-perms,optional"`
}

type tBlkdebugEvent string

func (tBlkdebugEvent) EnumValues() []string { return []string{"l1_update", "l2_load"} }

type tBlkdebugInjectErrorOptions struct {
	Event tBlkdebugEvent `qapi:"event"`
	Errno *int64         `qapi:"errno,optional"`
	Once  *bool          `qapi:"once,optional"`
}

type tBlockPermission string

func (tBlockPermission) EnumValues() []string {
	return []string{"consistent-read", "write", "write-unchanged", "resize"}
}

type tBlockdevRef struct {
	Definition *tBlockdevOptions
	Reference  *string
}

func (tBlockdevRef) Alternate()       {}
func (tBlockdevRef) QAPIName() string { return "BlockdevRef" }

type tBlockdevRefOrNull struct {
	Definition *tBlockdevOptions
	Reference  *string
	Null       *Null
}

func (tBlockdevRefOrNull) Alternate()       {}
func (tBlockdevRefOrNull) QAPIName() string { return "BlockdevRefOrNull" }

type tBlockdevReopenArgs struct {
	Options []tBlockdevOptions `qapi:"options"`
}

type tBlockdevOnError string

func (tBlockdevOnError) EnumValues() []string {
	return []string{"report", "ignore", "enospc", "stop", "auto"}
}

type tBlockCommitArgs struct {
	JobID   *string           `qapi:"job-id,optional"`
	Device  string            `qapi:"device"`
	Base    *string           `qapi:"base,optional,features=deprecated"`
	Speed   *int64            `qapi:"speed,optional"`
	OnError *tBlockdevOnError `qapi:"on-error,optional"`
}

type tBlockDirtyBitmapAddArgs struct {
	Node        string  `qapi:"node"`
	Name        string  `qapi:"name"`
	Granularity *uint32 `qapi:"granularity,optional"`
	Persistent  *bool   `qapi:"persistent,optional"`
}

type tBlockSetWriteThresholdArgs struct {
	NodeName       string `qapi:"node-name"`
	WriteThreshold uint64 `qapi:"write-threshold"`
}

type tBlockDirtyBitmap struct {
	Node string `qapi:"node"`
	Name string `qapi:"name"`
}

type tBlockDirtyBitmapOrStr struct {
	Local    *string
	External *tBlockDirtyBitmap
}

func (tBlockDirtyBitmapOrStr) Alternate()       {}
func (tBlockDirtyBitmapOrStr) QAPIName() string { return "BlockDirtyBitmapOrStr" }

type tBlockDirtyBitmapMergeArgs struct {
	Node    string                   `qapi:"node"`
	Target  string                   `qapi:"target"`
	Bitmaps []tBlockDirtyBitmapOrStr `qapi:"bitmaps"`
}

type tStrOrNull struct {
	S *string
	N *Null
}

func (tStrOrNull) Alternate()       {}
func (tStrOrNull) QAPIName() string { return "StrOrNull" }

type tXBlockdevSetIothreadArgs struct {
	NodeName string     `qapi:"node-name"`
	Iothread tStrOrNull `qapi:"iothread"`
	Force    *bool      `qapi:"force,optional"`
}

type tObjectType string

func (tObjectType) EnumValues() []string {
	return []string{"can-bus", "memory-backend-file", "secret_keyring"}
}

type tHostMemPolicy string

func (tHostMemPolicy) EnumValues() []string {
	return []string{"default", "preferred", "bind", "interleave"}
}

type tMemoryBackendFileProperties struct {
	HostNodes []uint16        `qapi:"host-nodes,optional"`
	Policy    *tHostMemPolicy `qapi:"policy,optional"`
	Size      Size            `qapi:"size"`
	MemPath   string          `qapi:"mem-path"`
	Prealloc  *bool           `qapi:"prealloc,optional"`
}

type tSecretKeyringProperties struct {
	Serial int32 `qapi:"serial"`
}

type tObjectOptions struct {
	QomType tObjectType `qapi:"qom-type,discriminator"`
	ID      string      `qapi:"id"`

	MemoryBackendFile *tMemoryBackendFileProperties `qapi:",variant=memory-backend-file"`
	SecretKeyring     *tSecretKeyringProperties     `qapi:",variant=secret_keyring"`
}

type tSocketAddressType string

func (tSocketAddressType) EnumValues() []string { return []string{"inet", "unix", "vsock", "fd"} }

type tInetSocketAddress struct {
	Host string `qapi:"host"`
	Port string `qapi:"port"`
}

type tUnixSocketAddress struct {
	Path string `qapi:"path"`
}

type tInetSocketAddressWrapper struct {
	Data tInetSocketAddress `qapi:"data"`
}

type tUnixSocketAddressWrapper struct {
	Data tUnixSocketAddress `qapi:"data"`
}

type tSocketAddressLegacy struct {
	Type tSocketAddressType         `qapi:"type,discriminator"`
	Inet *tInetSocketAddressWrapper `qapi:",variant=inet"`
	Unix *tUnixSocketAddressWrapper `qapi:",variant=unix"`
}

type tNbdServerStartArgs struct {
	Addr           tSocketAddressLegacy `qapi:"addr"`
	MaxConnections *uint32              `qapi:"max-connections,optional"`
}

// tSizedArgs has the member types no QSD 7.2 command takes as an
// argument ('number', a bare 'null', int8/int16/uint8), whose texts
// therefore come from QEMU's source rather than from a QSD run.
type tSizedArgs struct {
	I8  *int8          `qapi:"i8,optional"`
	I16 *int16         `qapi:"i16,optional"`
	U8  *uint8         `qapi:"u8,optional"`
	U16 *uint16        `qapi:"u16,optional"`
	N   *float64       `qapi:"n,optional"`
	Nul *Null          `qapi:"nul,optional"`
	A   Any            `qapi:"a,optional"`
	M   []tIntOrNumber `qapi:"m,optional"`
}

// tIntOrNumber is an alternate whose integer branch takes integers and
// whose number branch takes the rest.
type tIntOrNumber struct {
	I *int64
	F *float64
}

func (tIntOrNumber) Alternate()       {}
func (tIntOrNumber) QAPIName() string { return "IntOrNumber" }
