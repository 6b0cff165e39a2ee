// Package qcow2 is blockd's qcow2 format engine: it turns a blockio.Device
// holding a qcow2 image (versions 2 and 3, as QEMU 7.2 writes them) into a
// blockio.Device presenting the guest-visible disk. It knows nothing about
// the block graph: the caller hands it the file device and, optionally, a
// backing device (SetBacking), and gets back reads, writes, zeroing, discard,
// block status, resize (Truncate grows and shrinks), internal snapshots
// (CreateSnapshot, DeleteSnapshot, Snapshots), header maintenance
// (SetBackingFile) and a consistency checker (Check).
//
// On-disk format: QEMU's docs/interop/qcow2.txt. Layout of the package:
//
//	header.go     header and header extensions: parse, validate, serialize
//	geometry.go   derived sizes and L1/L2/refcount entry encodings
//	cache.go      bounded LRU of metadata blocks (L2 slices, refcount blocks)
//	metaflush.go  write-back ordering between data, refcounts and L2 tables
//	l1l2.go       guest → host mapping, L2 table allocation, L1 growth
//	refcount.go   refcount reads/updates, refcount blocks, refcount table growth
//	alloc.go      host cluster allocator and freeing
//	overlap.go    metadata overlap checks before any write
//	read.go       ReadAt and BlockStatus
//	write.go      WriteAt: in-place writes, allocation and copy-on-write
//	zero.go       WriteZeroes and Discard
//	compress.go   compressed cluster decoding and encoding (zlib raw
//	              deflate, zstd)
//	compwrite.go  compressed writes: byte-granular packing, linking
//	snapshot.go   snapshot and bitmap tables as found on disk
//	internal_snapshot.go  creating and deleting internal snapshots
//	resize.go     shrinking, and the checks every resize makes
//	check.go      Check: refcount verification (checkrefs.go: reference
//	              counting), rebuild.go: repair
//	create.go     Create: a fresh image on an empty file
//	open.go       Open: validation, table loading, cache sizing
//	image.go      the Image type, Info, SetBacking, shared helpers
//	ops.go        Flush, Close, Truncate (growing), SetBackingFile
//	corrupt.go    corruption signalling (BLOCK_IMAGE_CORRUPTED)
//	locks.go      per-cluster request serialization
//
// driver.go (the block graph adapter) is not part of the engine.
//
// Concurrency model: metadata (L1, caches, refcounts, allocator, header) is
// guarded by Image.mu. Guest clusters are additionally protected by striped
// reader/writer locks (locks.go): reads take them shared, anything that may
// change a cluster's mapping takes them exclusive, so two writes to the same
// cluster are serialized while writes to different clusters proceed in
// parallel. Data I/O is always done with mu released.
//
// Crash consistency: the on-disk image is consistent at every instant except
// for leaked clusters. Data is written before the L2 entry that points to it,
// refcount increments reach the disk before the L2/L1 entries that use the
// clusters, and L2 entries that drop a reference reach the disk before the
// refcount decrement (metaflush.go), with file flushes between the dependent
// steps, like QEMU's cache dependencies.
package qcow2
