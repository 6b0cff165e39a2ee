package blockcore

import (
	"blockd/blockio"
	"blockd/internal/qdict"
	"blockd/schema"
	"cmp"
	"slices"
)

// Optional driver interfaces used by queries.
type (
	// Filenamer: protocol drivers know their own filename.
	Filenamer interface{ ExactFilename() string }
	// StrongOptioner: options that change what a node presents, so that
	// its filename must describe them (QEMU's strong_runtime_opts).
	StrongOptioner interface{ StrongOptions() map[string]any }
	// StrongOptionLister is StrongOptioner for drivers whose options
	// collide in QDict buckets: the list is in the order QEMU inserts
	// them into the json: description.
	StrongOptionLister interface{ StrongOptionList() qdict.Dict }
	// ImageInfoer fills format-specific image information.
	ImageInfoer interface{ FillImageInfo(info *schema.ImageInfo) }
	// AllocatedSizer reports bytes allocated on the host.
	AllocatedSizer interface{ AllocatedSize() (int64, bool) }
	// InfoProvider marks drivers that answer bdrv_get_info, which makes
	// "dirty-flag" appear in queries.
	InfoProvider interface{ DirtyFlag() bool }
	// InfoForwarder marks drivers whose bdrv_get_info asks their file
	// child (raw): they answer exactly when the child does.
	InfoForwarder interface{ ForwardsInfo() }
	// NoStrongOptionList marks drivers that declare no strong options
	// (copy-on-read): every option may matter, so the node is always
	// described by a json: filename.
	NoStrongOptionList interface{ NoStrongOptionList() }
)

// Filename is the node's filename as QEMU's bdrv_refresh_filename makes it:
// its own for protocol nodes, its file's when it adds nothing that changes
// the data, otherwise a json: description of its options.
func (g *Graph) Filename(n *Node) string { return Filename(n) }

// Filename is Graph.Filename for code that has a node but not the graph.
func Filename(n *Node) string {
	if f := jobFilterChild(n); f != nil {
		return Filename(f)
	}
	if f, ok := n.impl.(Filenamer); ok {
		if name := f.ExactFilename(); name != "" {
			return name
		}
	} else if _, all := n.impl.(NoStrongOptionList); !all && n.File() != nil && hasExactFilename(n.File()) &&
		len(strongOptions(n)) == 0 && !backingOverridden(n) {
		return Filename(n.File())
	}
	return "json:" + string(encodeQdict(fullOptions(n)))
}

// hasExactFilename: only a protocol node's own name can stand for its
// parent's (bdrv_refresh_filename takes the primary child's exact_filename
// only from a bdrv_file_open driver): raw over raw, or over a null-co with
// options, is described by a json: filename.
func hasExactFilename(n *Node) bool {
	f, ok := n.impl.(Filenamer)
	return ok && n.drv.Protocol && f.ExactFilename() != ""
}

func strongOptions(n *Node) map[string]any {
	if sl, ok := n.impl.(StrongOptionLister); ok {
		m := map[string]any{}
		for _, e := range sl.StrongOptionList() {
			m[e.Key] = e.Val
		}
		return m
	}
	if so, ok := n.impl.(StrongOptioner); ok {
		return so.StrongOptions()
	}
	return nil
}

// backingOverridden is bdrv_backing_overridden: the node's backing is not
// the one its image header names, so the header alone no longer describes
// the node and its filename must.
func backingOverridden(n *Node) bool {
	if _, ok := n.impl.(BackingUser); !ok {
		return false
	}
	if b := n.Backing(); b != nil {
		return n.autoBackingFile != Filename(b)
	}
	return n.autoBackingFile != ""
}

// fullOptions describes a node for json: filenames: its strong options,
// its driver and its children, in QEMU's QDict order.
func fullOptions(n *Node) qdict.Dict {
	var d qdict.Dict
	// A protocol node whose strong options are all in its filename (file,
	// null-co) is described by it; others (nbd's server.*) by the options.
	if f, ok := n.impl.(Filenamer); ok && f.ExactFilename() != "" && len(strongOptions(n)) == 0 {
		return d.Set("driver", n.drv.Name).Set("filename", f.ExactFilename())
	}
	// append_strong_runtime_options: "driver" first, then the options.
	d = d.Set("driver", n.drv.Name)
	if sl, ok := n.impl.(StrongOptionLister); ok {
		for _, e := range sl.StrongOptionList() {
			d = d.Set(e.Key, e.Val)
		}
	} else {
		for k, v := range strongOptions(n) {
			d = d.Set(k, v)
		}
	}
	if file := n.File(); file != nil {
		d = d.Set(n.drv.fileChildName(), fullOptions(file))
	}
	if n.drv.ChildList {
		// quorum's bdrv_gather_child_options: its children as a list.
		var list []qdict.Dict
		for _, c := range n.children {
			list = append(list, fullOptions(c.Node))
		}
		d = d.Set("children", list)
	}
	if backingOverridden(n) {
		if b := n.Backing(); b != nil {
			d = d.Set("backing", fullOptions(b))
		} else {
			d = d.Set("backing", nil)
		}
	}
	return d
}

// jobFilterChild returns the node a job's filter (commit_top, mirror_top)
// stands for: such filters are transparent in queries, as in QEMU, where
// their filename, allocation and bdrv_get_info answers are the child's.
func jobFilterChild(n *Node) *Node { return FilteredChild(n) }

// imageInfo describes what a node presents (bdrv_query_image_info).
func (g *Graph) imageInfo(n *Node) schema.ImageInfo {
	if c := jobFilterChild(n); c != nil {
		info := g.imageInfo(c)
		size, _ := n.io.Size()
		info.Format, info.VirtualSize = n.drv.Name, size
		info.BackingFilename, info.FullBackingFilename, info.BackingFilenameFormat = nil, nil, nil
		info.FormatSpecific = nil
		return info
	}
	size, _ := n.io.Size()
	info := schema.ImageInfo{Filename: g.Filename(n), Format: n.drv.Name, VirtualSize: size}
	if as, ok := allocatedSize(n); ok {
		info.ActualSize = &as
	}
	if d, ok := dirtyFlag(n); ok {
		info.DirtyFlag = &d
	}
	if _, fwd := n.impl.(InfoForwarder); (fwd || n.drv.IsFilter) && n.File() != nil {
		// bdrv_get_info answers for the file: a raw node over a qcow2
		// node reports the qcow2 cluster size. bdrv_snapshot_list falls
		// back to the same child, so its snapshots are listed too.
		fi := g.imageInfo(n.File())
		info.ClusterSize, info.Snapshots = fi.ClusterSize, fi.Snapshots
	}
	if ii, ok := n.impl.(ImageInfoer); ok {
		ii.FillImageInfo(&info)
	}
	return info
}

// ClusterSize is the cluster size bdrv_get_info gives for the node (a
// filter's or raw node's is its child's), or 0 when it gives none.
func (g *Graph) ClusterSize(n *Node) int64 {
	if cs := g.imageInfo(n).ClusterSize; cs != nil {
		return *cs
	}
	return 0
}

// dirtyFlag is what bdrv_get_info says of the node, if it answers.
func dirtyFlag(n *Node) (dirty, ok bool) {
	if _, fwd := n.impl.(InfoForwarder); fwd || n.drv.IsFilter {
		if f := n.File(); f != nil {
			return dirtyFlag(f)
		}
		return false, false
	}
	if ip, ok := n.impl.(InfoProvider); ok {
		return ip.DirtyFlag(), true
	}
	return false, false
}

// allocatedSize is the node's own allocation, or that of its data
// children (bdrv_get_allocated_file_size); backing files are not counted.
func allocatedSize(n *Node) (int64, bool) {
	if as, ok := n.impl.(AllocatedSizer); ok {
		return as.AllocatedSize()
	}
	if f := n.File(); f != nil {
		return allocatedSize(f)
	}
	return 0, false
}

// filterOrCow is bdrv_filter_or_cow_bs: a filter's filtered child, or
// the node's backing node.
func filterOrCow(n *Node) *Node {
	if n.drv.IsFilter {
		for _, c := range n.children {
			if c.Role&RoleFiltered != 0 {
				return c.Node
			}
		}
	}
	return n.Backing()
}

// DeviceInfo is one entry of query-named-block-nodes.
func (g *Graph) DeviceInfo(n *Node, flat bool) schema.BlockDeviceInfo {
	name := n.name
	di := schema.BlockDeviceInfo{
		File:         g.Filename(n),
		NodeName:     &name,
		Ro:           n.readOnly,
		Drv:          n.drv.Name,
		DetectZeroes: "off",
		Image:        g.imageInfo(n),
		Cache:        schema.BlockdevCacheInfo{Writeback: true},
	}
	// bs->encrypted: the node decrypts (luks), which its image info says.
	di.Encrypted = di.Image.Encrypted != nil && *di.Image.Encrypted
	if n.threshold != nil {
		di.WriteThreshold = int64(n.threshold.get())
	}
	if o := n.options; o != nil {
		if o.DetectZeroes != nil {
			di.DetectZeroes = *o.DetectZeroes
		}
		if o.Cache != nil {
			di.Cache.Direct = boolOr(o.Cache.Direct, false)
			di.Cache.NoFlush = boolOr(o.Cache.NoFlush, false)
		}
	}
	// QEMU's bs->backing_file: the opened backing node's filename; with
	// backing: null there is none, whatever the header says.
	if b := n.Backing(); b != nil && jobFilterChild(n) == nil {
		bf := g.Filename(b)
		di.BackingFile = &bf
	}
	for _, d := range n.dirty {
		di.DirtyBitmaps = append(di.DirtyBitmaps, d.query())
	}
	if !flat {
		img := &di.Image
		for b := filterOrCow(n); b != nil; b = filterOrCow(b) {
			di.BackingFileDepth++
			bi := g.imageInfo(b)
			img.BackingImage = &bi
			img = &bi
		}
	}
	return di
}

// graphVertex lets parents that are not nodes appear in graph dumps.
type graphVertex interface {
	VertexType() schema.XDbgBlockGraphNodeType
	VertexName() string
}

// DebugGraph is x-debug-query-block-graph, built the way QEMU 7.2's
// bdrv_get_xdbg_block_graph builds it: parents that are not nodes (block
// backends, then jobs) are visited first, then every node from the oldest
// named, each followed by its child edges newest first. A vertex gets its
// id the first time it is seen, as a parent or as a child, and QEMU
// prepends every node, edge and permission to its lists, so all of them
// come out in reverse visiting order.
func (g *Graph) DebugGraph() schema.XDbgBlockGraph {
	out := schema.XDbgBlockGraph{Nodes: []schema.XDbgBlockGraphNode{}, Edges: []schema.XDbgBlockGraphEdge{}}
	ids := map[any]uint64{}
	id := func(v any) uint64 {
		if x, ok := ids[v]; ok {
			return x
		}
		x := uint64(len(ids) + 1)
		ids[v] = x
		return x
	}
	addNode := func(v any, typ schema.XDbgBlockGraphNodeType, name string) {
		n := schema.XDbgBlockGraphNode{ID: id(v), Type: typ, Name: name}
		out.Nodes = append([]schema.XDbgBlockGraphNode{n}, out.Nodes...)
	}
	addEdge := func(parent any, c *Child) {
		e := schema.XDbgBlockGraphEdge{
			Parent: id(parent), Child: id(c.Node), Name: c.Name,
			Perm: permList(c.Perm), SharedPerm: permList(c.Shared),
		}
		out.Edges = append([]schema.XDbgBlockGraphEdge{e}, out.Edges...)
	}
	// Parents that are not nodes, grouped by type in QEMU's order, each
	// with the edges it holds.
	var vertices []graphVertex
	held := map[graphVertex][]*Child{}
	for n := range g.named.all() {
		for i := len(n.parents) - 1; i >= 0; i-- {
			c := n.parents[i]
			v, ok := c.Parent.(graphVertex)
			if _, isNode := c.Parent.(*Node); isNode || !ok {
				continue
			}
			if _, seen := held[v]; !seen {
				vertices = append(vertices, v)
			}
			held[v] = append(held[v], c)
		}
	}
	// In creation order (QEMU's lists of backends and jobs), which is
	// that of their first edges.
	slices.SortStableFunc(vertices, func(a, b graphVertex) int {
		first := func(v graphVertex) uint64 {
			m := held[v][0].seq
			for _, c := range held[v] {
				m = min(m, c.seq)
			}
			return m
		}
		return cmp.Compare(first(a), first(b))
	})
	for _, typ := range []schema.XDbgBlockGraphNodeType{"block-backend", "block-job"} {
		for _, v := range vertices {
			if v.VertexType() != typ {
				continue
			}
			addNode(v, typ, v.VertexName())
			// A job lists its nodes newest first (block_job_add_bdrv
			// prepends them).
			edges := held[v]
			slices.SortFunc(edges, func(a, b *Child) int { return cmp.Compare(b.seq, a.seq) })
			for _, c := range edges {
				addEdge(v, c)
			}
		}
	}
	for n := range g.named.all() {
		addNode(n, "block-driver", n.name)
		for i := len(n.children) - 1; i >= 0; i-- {
			addEdge(n, n.children[i])
		}
	}
	return out
}

// permList lists permissions as QEMU's debug graph does: prepended in
// enum order, so the last permission comes first.
func permList(p blockio.Perm) []schema.BlockPermission {
	out := []schema.BlockPermission{}
	for _, name := range (p & blockio.PermAll).Names() {
		out = append([]schema.BlockPermission{schema.BlockPermission(name)}, out...)
	}
	return out
}
