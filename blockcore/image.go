package blockcore

import (
	"io"
	"os"

	"blockd/schema"
)

// CreateImage is bdrv_img_create as monitor commands use it
// (blockdev-snapshot-sync, drive-mirror, drive-backup): an image file of
// the given format and size, naming backing (in backingFmt) in its
// header unless backing is empty.
func CreateImage(format, filename string, size int64, backing, backingFmt string) error {
	drv, ok := LookupDriver(format)
	if !ok {
		return schema.Errorf("Unknown file format '%s'", format)
	}
	if backing != "" && !drv.SupportsBacking {
		return schema.Errorf("Backing file not supported for file format '%s'", format)
	}
	if drv.Create == nil {
		return schema.Errorf("Format driver '%s' does not support image creation", format)
	}
	return drv.Create(filename, (size+sectorSize-1)&^(sectorSize-1), backing, backingFmt)
}

// ImageOpen says how OpenImage opens an image file.
type ImageOpen struct {
	Filename string
	Format   string // "" probes it, as bdrv_open without a driver
	NodeName *string
	ReadOnly bool
	// NoBacking leaves the backing chain the header names unopened
	// (BDRV_O_NO_BACKING); the caller attaches a backing later, or not.
	NoBacking bool
	// Unmap opens with discard=unmap and detect-zeroes=unmap (a backup
	// target of drive-backup).
	Unmap bool
}

// OpenImage opens an image file as bdrv_open does for drive-mirror and
// drive-backup: a format node over a file node, both implicit. Nothing
// holds the node when OpenImage returns: the caller attaches its edges
// or calls ReleaseUnused, and the node closes when its last user leaves.
func (g *Graph) OpenImage(o ImageOpen) (*Node, error) {
	format := o.Format
	if format == "" {
		format = probeFormat(o.Filename)
	}
	opts := imageOptions(format, o.Filename, o.NodeName)
	if o.Unmap {
		unmap, dz := schema.BlockdevDiscardOptions("unmap"), schema.BlockdevDetectZeroesOptions("unmap")
		opts.Discard, opts.DetectZeroes = &unmap, &dz
	}
	t := g.begin()
	n, err := g.open(opts, inherited{readOnly: &o.ReadOnly, noBacking: o.NoBacking}, t)
	if err == nil {
		err = g.refreshPerms([]*Node{n}, nil, t)
	}
	if err := t.finish(err); err != nil {
		return nil, err
	}
	return n, nil
}

// ReleaseUnused closes n (and what only it held) if nothing holds it and
// the monitor does not own it: the last bdrv_unref of an implicit node.
func (g *Graph) ReleaseUnused(n *Node) {
	if g.nodes[n.name] != n {
		return
	}
	t := g.begin()
	roots := g.releaseIfUnused(n, t)
	if err := t.finish(g.refreshPerms(roots, nil, t)); err != nil {
		g.log.Sugar().Warnf("releasing the unused node '%s': %v", n.name, err)
	}
}

// OpenBackingFromHeader attaches the backing chain n's header names,
// opened as bdrv_open_backing_file does for a node opened without it
// (drive-mirror's mode=existing target when the job completes).
func (g *Graph) OpenBackingFromHeader(n *Node) error {
	bu, ok := n.impl.(BackingUser)
	if !ok || !n.drv.SupportsBacking || n.Backing() != nil {
		return nil
	}
	t := g.begin()
	return t.finish(g.openBacking(n, bu, inherited{}, t))
}

// imageOptions are the blockdev options of format over a file node
// named filename (implicit nodes unless nodeName names the top).
func imageOptions(format, filename string, nodeName *string) *schema.BlockdevOptions {
	opts := &schema.BlockdevOptions{Driver: schema.BlockdevDriver(format), NodeName: nodeName}
	fileOpts := &schema.BlockdevOptions{Driver: "file", File: &schema.BlockdevOptionsFile{Filename: filename}}
	switch format {
	case "qcow2":
		opts.Qcow2 = &schema.BlockdevOptionsQcow2{}
		opts.Qcow2.File = schema.BlockdevRef{Definition: fileOpts}
	case "raw":
		opts.Raw = &schema.BlockdevOptionsRaw{}
		opts.Raw.File = schema.BlockdevRef{Definition: fileOpts}
	case "file":
		opts.File = fileOpts.File
	}
	return opts
}

// probeFormat tells qcow2 from raw by the header magic; a file that
// cannot be read is left to the raw driver's open to report.
func probeFormat(filename string) string {
	f, err := os.Open(filename)
	if err != nil {
		return "raw"
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == "QFI\xfb" {
		return "qcow2"
	}
	return "raw"
}
