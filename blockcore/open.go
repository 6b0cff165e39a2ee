package blockcore

import (
	"fmt"
	"path/filepath"
	"strings"

	"blockd/blockio"
	"blockd/schema"
)

// OpenContext is what a driver's Open sees.
type OpenContext struct {
	Graph    *Graph
	Node     *Node
	Options  *schema.BlockdevOptions
	ReadOnly bool
	// AutoReadOnly lets a protocol driver fall back to read-only when the
	// image cannot be opened for writing.
	AutoReadOnly bool
	// DiscardUnmap: discard requests may free space (discard=unmap, which
	// children inherit by default).
	DiscardUnmap bool
	File         *Child // the file child of format and filter drivers
	// Children are a quorum's children, in order, or blkverify's test
	// child.
	Children []*Child

	t        *tx
	childInh inherited
}

// OpenChild opens or finds the node ref names and attaches it as the
// node's child called name (bdrv_open_child): a driver's children other
// than file and backing, such as copy-before-write's target.
func (oc *OpenContext) OpenChild(name string, ref schema.BlockdevRef, role Role) (*Child, error) {
	child, err := oc.Graph.resolveRef(ref, oc.childInh, oc.t)
	if err != nil {
		return nil, err
	}
	c := oc.Graph.attach(oc.Node, child, name, role, oc.t)
	if ref.Definition != nil {
		child.reopen.inheritsFrom = oc.Node
	}
	return c, nil
}

// BackingUser is implemented by drivers with a backing chain: the header
// names the backing file, and the graph hands over the opened backing
// node's data path (nil for none).
type BackingUser interface {
	BackingFile() (name, format string)
	SetBacking(dev blockio.Device)
}

// inherited carries the options a child takes from its parent unless it
// sets them itself (bdrv_inherited_options / bdrv_backing_options).
type inherited struct {
	readOnly, autoReadOnly, forceShare *bool
	cacheDirect, cacheNoFlush          *bool
	discardUnmap                       bool
	noBacking                          bool // BDRV_O_NO_BACKING: the root's backing is attached later
}

func boolOr(p *bool, def bool) bool {
	if p != nil {
		return *p
	}
	return def
}

// Add is blockdev-add: open a node tree and give it to the monitor. On
// any failure nothing remains: no node, no edge, no open file, no lock.
func (g *Graph) Add(opts *schema.BlockdevOptions) error {
	if opts.NodeName == nil {
		return schema.Errorf("'node-name' must be specified for the root node")
	}
	t := g.begin()
	n, err := g.open(opts, inherited{}, t)
	if err == nil {
		err = g.refreshPerms([]*Node{n}, nil, t)
	}
	if err == nil {
		n.monitorOwned = true
	}
	return t.finish(err)
}

// open opens one node and its children within t, without permissions.
func (g *Graph) open(opts *schema.BlockdevOptions, inh inherited, t *tx) (*Node, error) {
	drv, ok := LookupDriver(string(opts.Driver))
	if !ok {
		return nil, schema.Errorf("Unknown driver '%s'", opts.Driver)
	}
	n := &Node{drv: drv, options: opts}
	n.readOnly = boolOr(opts.ReadOnly, boolOr(inh.readOnly, false))
	n.forceShare = boolOr(opts.ForceShare, boolOr(inh.forceShare, false))
	autoRO := boolOr(opts.AutoReadOnly, boolOr(inh.autoReadOnly, false))
	if n.forceShare && !n.readOnly {
		return nil, schema.Errorf("force-share=on can only be used with read-only images")
	}
	if opts.DetectZeroes != nil && *opts.DetectZeroes == "unmap" &&
		(opts.Discard == nil || *opts.Discard != "unmap") && !inh.discardUnmap {
		return nil, schema.Errorf("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")
	}
	childInh := inherited{
		readOnly: &n.readOnly, autoReadOnly: &autoRO, forceShare: opts.ForceShare,
		discardUnmap: true,
	}
	if opts.Cache != nil {
		childInh.cacheDirect, childInh.cacheNoFlush = opts.Cache.Direct, opts.Cache.NoFlush
	}
	if opts.Cache == nil && (inh.cacheDirect != nil || inh.cacheNoFlush != nil) {
		opts.Cache = &schema.BlockdevCacheOptions{Direct: inh.cacheDirect, NoFlush: inh.cacheNoFlush}
	}

	discardUnmap := inh.discardUnmap
	if opts.Discard != nil {
		discardUnmap = *opts.Discard == "unmap"
	}
	oc := &OpenContext{Graph: g, Node: n, Options: opts, ReadOnly: n.readOnly, AutoReadOnly: autoRO,
		DiscardUnmap: discardUnmap, t: t, childInh: childInh}
	if drv.OwnChildren {
		if err := g.assignName(n, nodeName(opts), t); err != nil {
			return nil, err
		}
	}
	if drv.CheckOptions != nil {
		if err := drv.CheckOptions(opts); err != nil {
			return nil, err
		}
	}
	if opts.Quorum != nil {
		for i, ref := range opts.Quorum.Children {
			c, err := oc.OpenChild(fmt.Sprintf("children.%d", i), ref, RoleData)
			if err != nil {
				return nil, err
			}
			oc.Children = append(oc.Children, c)
		}
	}
	if ref := fileRef(opts); ref != nil {
		child, err := g.resolveRef(*ref, childInh, t)
		if err != nil {
			return nil, err
		}
		role := RoleImage
		if drv.Filter && !rawHasRange(opts) {
			role = RoleFilteredPrimary
		} else if drv.Filter {
			role = RoleData | RolePrimary
		}
		oc.File = g.attach(n, child, drv.fileChildName(), role, t)
		if ref.Definition != nil {
			child.reopen.inheritsFrom = n
		}
	}
	if opts.Blkverify != nil {
		// blkverify's image under test, after its raw reference.
		c, err := oc.OpenChild("test", opts.Blkverify.Test, RoleData)
		if err != nil {
			return nil, err
		}
		oc.Children = append(oc.Children, c)
	}
	if !drv.OwnChildren {
		if err := g.assignName(n, nodeName(opts), t); err != nil {
			return nil, err
		}
	}
	impl, err := drv.Open(oc)
	if err != nil {
		return nil, err
	}
	n.impl = impl
	n.readOnly = oc.ReadOnly // auto-read-only may have switched it
	n.reopen.autoReadOnly, n.reopen.discardUnmap = autoRO, discardUnmap
	n.io = newGate(impl, n.readOnly)
	n.io.discardUnmap = discardUnmap
	if opts.DetectZeroes != nil && *opts.DetectZeroes != "off" {
		n.io.detectZeroes = string(*opts.DetectZeroes)
	}
	t.onAbort(func() { g.closeImpl(n) })
	if err := n.loadBitmaps(); err != nil {
		return nil, schema.Errorf("Could not load bitmaps: %s", err)
	}
	if bu, ok := impl.(BackingUser); ok && drv.SupportsBacking && inh.noBacking {
		n.autoBackingFile, _ = bu.BackingFile()
	} else if ok && drv.SupportsBacking {
		if err := g.openBacking(n, bu, childInh, t); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func nodeName(opts *schema.BlockdevOptions) string {
	if opts.NodeName != nil {
		return *opts.NodeName
	}
	return ""
}

func fileRef(opts *schema.BlockdevOptions) *schema.BlockdevRef {
	switch {
	case opts.Raw != nil:
		return &opts.Raw.File
	case opts.Qcow2 != nil:
		return &opts.Qcow2.File
	case opts.Throttle != nil:
		return &opts.Throttle.File
	case opts.Cor != nil:
		return &opts.Cor.File
	case opts.Blkdebug != nil:
		return &opts.Blkdebug.Image
	case opts.Blkverify != nil:
		return &opts.Blkverify.Raw
	case opts.Prealloc != nil:
		return &opts.Prealloc.File
	case opts.Cbw != nil:
		return &opts.Cbw.File
	case opts.SnapshotAccess != nil:
		return &opts.SnapshotAccess.File
	case opts.Compress != nil:
		return &opts.Compress.File
	case opts.Luks != nil:
		return &opts.Luks.File
	}
	return nil
}

func rawHasRange(opts *schema.BlockdevOptions) bool {
	return opts.Raw != nil && (opts.Raw.Offset != nil && *opts.Raw.Offset != 0 || opts.Raw.Size != nil)
}

// resolveRef finds a referenced node or opens an inline definition.
func (g *Graph) resolveRef(ref schema.BlockdevRef, inh inherited, t *tx) (*Node, error) {
	if ref.Reference != nil {
		n := g.nodes[*ref.Reference]
		if n == nil {
			return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", *ref.Reference, *ref.Reference)
		}
		return n, nil
	}
	return g.open(ref.Definition, inh, t)
}

// openBacking attaches the backing child: the one named in the options,
// none for null, or the chain recorded in the image header, opened
// read-only as implicit nodes.
func (g *Graph) openBacking(n *Node, bu BackingUser, inh inherited, t *tx) error {
	ro := true
	backInh := inherited{readOnly: &ro, cacheDirect: inh.cacheDirect, cacheNoFlush: inh.cacheNoFlush}
	var spec *schema.BlockdevRefOrNull
	if n.options.Qcow2 != nil {
		spec = n.options.Qcow2.Backing
	}
	n.autoBackingFile, _ = bu.BackingFile()
	var child *Node
	switch {
	case spec != nil && spec.Null != nil:
		return nil
	case spec != nil:
		var err error
		child, err = g.resolveRef(schema.BlockdevRef{Definition: spec.Definition, Reference: spec.Reference}, backInh, t)
		if err != nil {
			return err
		}
	default:
		name, format := bu.BackingFile()
		if name == "" {
			return nil
		}
		path := g.ResolveBackingPath(n, name)
		if format == "" {
			format = "raw"
		}
		opts := &schema.BlockdevOptions{
			Driver:   schema.BlockdevDriver(format),
			ReadOnly: &ro,
		}
		fileOpts, err := ProtocolOptions(path)
		if err != nil {
			return schema.Errorf("Could not open backing file: %s", schema.AsError(err).Desc)
		}
		switch format {
		case "qcow2":
			opts.Qcow2 = &schema.BlockdevOptionsQcow2{}
			opts.Qcow2.File = schema.BlockdevRef{Definition: fileOpts}
		case "raw":
			opts.Raw = &schema.BlockdevOptionsRaw{}
			opts.Raw.File = schema.BlockdevRef{Definition: fileOpts}
		default:
			return schema.Errorf("Could not open backing file: Unknown driver '%s'", format)
		}
		child, err = g.open(opts, backInh, t)
		if err != nil {
			return schema.Errorf("Could not open backing file: %s", schema.AsError(err).Desc)
		}
		n.autoBackingFile = g.Filename(child)
	}
	g.attach(n, child, "backing", RoleBacking, t)
	if spec == nil || spec.Definition != nil {
		child.reopen.inheritsFrom = n // opened for n, not added by name
	}
	// Attaching the backing settles its permissions at once, so that a
	// conflict (another user's lock) is reported as a backing failure,
	// as QEMU's bdrv_open_backing_file does.
	if err := g.refreshPerms([]*Node{child}, nil, t); err != nil {
		return schema.Errorf("Could not open backing file: %s", schema.AsError(err).Desc)
	}
	bu.SetBacking(child.io)
	t.onAbort(func() { bu.SetBacking(nil) })
	return nil
}

// ResolveBackingPath makes a relative backing file name relative to the
// directory of the image that names it, as QEMU does (bdrv_dirname: the
// directory of the protocol node at the bottom of the node's file chain).
func (g *Graph) ResolveBackingPath(n *Node, name string) string {
	if filepath.IsAbs(name) || strings.Contains(name, "://") || strings.HasPrefix(name, "json:") || isProtocolName(name) {
		return name
	}
	dir, ok := dirname(n)
	if !ok {
		return name
	}
	return filepath.Join(dir, name)
}

// isProtocolName: a driver's own filename syntax ("rbd:..."), never a
// path relative to the image that names it.
func isProtocolName(name string) bool {
	for _, d := range drivers {
		if d.FilenamePrefix != "" && strings.HasPrefix(name, d.FilenamePrefix) {
			return true
		}
	}
	return false
}

func dirname(n *Node) (string, bool) {
	if f, ok := n.impl.(Filenamer); ok {
		name := f.ExactFilename()
		if name == "" || strings.Contains(name, "://") {
			return "", false
		}
		return filepath.Dir(name), true
	}
	if file := n.File(); file != nil {
		return dirname(file)
	}
	return "", false
}
