package schema

// VersionTriple is QEMU's version triple.
type VersionTriple struct {
	Major int64 `qapi:"major"`
	Minor int64 `qapi:"minor"`
	Micro int64 `qapi:"micro"`
}

// VersionInfo is query-version's return value.
type VersionInfo struct {
	Qemu    VersionTriple `qapi:"qemu"`
	Package string        `qapi:"package"`
}
