package qcow2

import (
	"errors"
	"time"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "qcow2", Format: true, SupportsBacking: true, Open: openNode,
		Create: createImage})
}

// createImage makes a qcow2 image file as bdrv_img_create does: the
// file created (or emptied) under the creation locks, then the image
// written, with the backing file in its header if there is one.
func createImage(filename string, size int64, backing, backingFmt string) error {
	f, err := file.CreateOpen(file.CreateOptions{Filename: filename})
	if err != nil {
		return err
	}
	err = Create(f, CreateOptions{Size: size, BackingFile: backing, BackingFormat: backingFmt})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// node adapts an Image to the block graph.
type node struct {
	*Image
	graph *blockcore.Graph
	self  *blockcore.Node
}

func openNode(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Qcow2
	if o.DataFile != nil {
		return nil, schema.Errorf("'data-file' can only be set for images with an external data file")
	}
	n := &node{graph: oc.Graph, self: oc.Node}
	opts := OpenOptions{ReadOnly: oc.ReadOnly, LazyRefcounts: o.LazyRefcounts, OnCorrupt: n.signalCorruption}
	for _, c := range []struct {
		dst *int64
		src *int64
	}{{&opts.CacheSize, o.CacheSize}, {&opts.L2CacheSize, o.L2CacheSize},
		{&opts.L2CacheEntrySize, o.L2CacheEntrySize}, {&opts.RefcountCacheSize, o.RefcountCacheSize}} {
		if c.src != nil {
			*c.dst = *c.src
		}
	}
	img, err := Open(oc.File.Node.IO(), opts)
	if err != nil {
		return nil, err
	}
	n.Image = img
	return n, nil
}

// signalCorruption publishes BLOCK_IMAGE_CORRUPTED as qcow2_signal_corruption
// does; nodes without a device have an empty "device".
func (n *node) signalCorruption(msg string, offset, size int64, fatal bool) {
	name := n.self.Name()
	ev := schema.BlockImageCorrupted{NodeName: &name, Msg: msg, Fatal: fatal}
	if offset >= 0 {
		ev.Offset = &offset
	}
	if size >= 0 {
		ev.Size = &size
	}
	if bus := n.graph.Bus(); bus != nil {
		bus.Publish(ev)
	}
}

// DirtyFlag reports the header's dirty bit (lazy refcounts in use).
func (n *node) DirtyFlag() bool { return n.Info().Dirty }

// FillImageInfo adds what qemu-storage-daemon reports for qcow2 images.
func (n *node) FillImageInfo(info *schema.ImageInfo) {
	in := n.Info()
	cs := in.ClusterSize
	info.ClusterSize = &cs
	if in.BackingFile != "" {
		bf := in.BackingFile
		full := n.graph.ResolveBackingPath(n.self, bf)
		info.BackingFilename, info.FullBackingFilename = &bf, &full
		if in.BackingFormat != "" {
			fmt := in.BackingFormat
			info.BackingFilenameFormat = &fmt
		}
	}
	for _, s := range n.Snapshots() {
		info.Snapshots = append(info.Snapshots, snapshotInfo(s))
	}
	spec := schema.ImageInfoSpecificQCow2{
		RefcountBits:    int64(in.RefcountBits),
		CompressionType: schema.Qcow2CompressionType(in.CompressionType),
	}
	if in.Version == 2 {
		spec.Compat = "0.10"
	} else {
		spec.Compat = "1.1"
		lazy, corrupt, ext := in.LazyRefcounts, in.Corrupt, in.ExtendedL2
		spec.LazyRefcounts, spec.Corrupt, spec.ExtendedL2 = &lazy, &corrupt, &ext
	}
	if bms, err := n.Bitmaps(); err == nil {
		for _, b := range bms {
			bi := schema.Qcow2BitmapInfo{Name: b.Name, Granularity: uint32(b.Granularity),
				Flags: []schema.Qcow2BitmapInfoFlags{}}
			if b.InUse {
				bi.Flags = append(bi.Flags, "in-use")
			}
			if b.Auto {
				bi.Flags = append(bi.Flags, "auto")
			}
			spec.Bitmaps = append(spec.Bitmaps, bi)
		}
	}
	info.FormatSpecific = &schema.ImageInfoSpecific{Type: "qcow2",
		Qcow2: &schema.ImageInfoSpecificQCow2Wrapper{Data: spec}}
}

// ReopenPrepare prepares reopening the image with the reopen's access
// mode and qcow2 runtime options (QEMU's qcow2_reopen_prepare).
func (n *node) ReopenPrepare(rs *blockcore.ReopenState) (commit, abort func(), err error) {
	o := ReopenOptions{ReadOnly: rs.ReadOnly}
	for _, c := range []struct {
		key string
		dst *int64
	}{{"cache-size", &o.CacheSize}, {"l2-cache-size", &o.L2CacheSize},
		{"l2-cache-entry-size", &o.L2CacheEntrySize}, {"refcount-cache-size", &o.RefcountCacheSize}} {
		if v, ok := rs.Int(c.key); ok {
			*c.dst = v
		}
	}
	if v, ok := rs.Bool("lazy-refcounts"); ok {
		o.LazyRefcounts = &v
	}
	r, err := n.Image.ReopenPrepare(o)
	if err != nil {
		return nil, nil, err
	}
	return r.Commit, r.Abort, nil
}

// SetFile follows a reopen that switched the file child.
func (n *node) SetFile(dev blockio.Device) { n.Image.SetFile(dev) }

var (
	_ blockcore.Reopener = (*node)(nil)
	_ blockcore.FileUser = (*node)(nil)
)

// snapshotInfo converts to QMP's SnapshotInfo.
func snapshotInfo(s SnapshotInfo) schema.SnapshotInfo {
	out := schema.SnapshotInfo{ID: s.ID, Name: s.Name, VMStateSize: int64(s.VMStateSize),
		DateSec: int64(s.DateSec), DateNsec: int64(s.DateNsec),
		VMClockSec: int64(s.VMClockNsec / 1e9), VMClockNsec: int64(s.VMClockNsec % 1e9)}
	if s.HasIcount {
		ic := int64(s.Icount)
		out.Icount = &ic
	}
	return out
}

// FindSnapshotInfo finds an internal snapshot for the QMP commands.
func (n *node) FindSnapshotInfo(id, name string) (schema.SnapshotInfo, bool) {
	s, ok := n.FindSnapshot(id, name)
	return snapshotInfo(s), ok
}

// TakeSnapshot is blockdev-snapshot-internal-sync's snapshot.
func (n *node) TakeSnapshot(name string, date time.Time, vmClockNsec uint64) error {
	_, err := n.CreateSnapshot(name, uint32(date.Unix()), uint32(date.Nanosecond()/1000*1000), vmClockNsec, NoIcount)
	return err
}

// DropSnapshot is blockdev-snapshot-delete-internal-sync's deletion.
func (n *node) DropSnapshot(id, name string) error {
	_, err := n.DeleteSnapshot(id, name)
	return err
}

// LoadBitmaps hands the image's persistent bitmaps to the graph.
func (n *node) LoadBitmaps() ([]blockcore.PersistentBitmap, error) {
	list, err := n.Image.LoadBitmaps()
	if err != nil {
		return nil, err
	}
	out := make([]blockcore.PersistentBitmap, len(list))
	for i, b := range list {
		out[i] = blockcore.PersistentBitmap{Name: b.Name, Bits: b.Bits, Enabled: b.Enabled, Inconsistent: b.InUse}
	}
	return out, nil
}

// StoreBitmaps writes the node's persistent bitmaps into the image.
func (n *node) StoreBitmaps(list []blockcore.PersistentBitmap) error {
	sb := make([]StoredBitmap, len(list))
	for i, b := range list {
		sb[i] = StoredBitmap{Name: b.Name, Granularity: b.Bits.Granularity(), Enabled: b.Enabled,
			InUse: b.Inconsistent, Bits: b.Bits}
	}
	return n.Image.StoreBitmaps(sb)
}

// RemoveStoredBitmap deletes a bitmap from the image.
func (n *node) RemoveStoredBitmap(name string) error { return n.Image.RemoveBitmap(name) }

// ReopenBitmapsRW flags the stored bitmaps in use once the image is
// writable again.
func (n *node) ReopenBitmapsRW() error { return n.Image.ReopenBitmapsRW() }

// Amend is x-blockdev-amend for qcow2 (qcow2_co_amend). QEMU 7.2 amends
// only encryption keys through QMP, and blockd opens only unencrypted
// images, so an encryption change is refused with QEMU's text and no
// change is needed otherwise.
func (n *node) Amend(opts *schema.BlockdevAmendOptions, force bool) error {
	if opts.Qcow2 != nil && opts.Qcow2.Encrypt != nil {
		return errors.New("image is not encrypted, can't amend")
	}
	return nil
}
