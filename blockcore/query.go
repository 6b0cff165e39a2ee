package blockcore

import (
	"bytes"
	"encoding/json"

	"blockd/blockio"
	"blockd/schema"
)

// Optional driver interfaces used by queries.
type (
	// Filenamer: protocol drivers know their own filename.
	Filenamer interface{ ExactFilename() string }
	// StrongOptioner: options that change what a node presents, so that
	// its filename must describe them (QEMU's strong_runtime_opts).
	StrongOptioner interface{ StrongOptions() map[string]any }
	// ImageInfoer fills format-specific image information.
	ImageInfoer interface{ FillImageInfo(info *schema.ImageInfo) }
	// AllocatedSizer reports bytes allocated on the host.
	AllocatedSizer interface{ AllocatedSize() (int64, bool) }
	// InfoProvider marks drivers that answer bdrv_get_info, which makes
	// "dirty-flag" appear in queries.
	InfoProvider interface{ DirtyFlag() bool }
)

// Filename is the node's filename as QEMU's bdrv_refresh_filename makes it:
// its own for protocol nodes, its file's when it adds nothing that changes
// the data, otherwise a json: description of its options.
func (g *Graph) Filename(n *Node) string {
	if f, ok := n.impl.(Filenamer); ok {
		if name := f.ExactFilename(); name != "" {
			return name
		}
	} else if file := n.File(); file != nil && len(strongOptions(n)) == 0 {
		return g.Filename(file)
	}
	b, _ := json.Marshal(orderedOptions(g, n))
	return "json:" + string(b)
}

func strongOptions(n *Node) map[string]any {
	if so, ok := n.impl.(StrongOptioner); ok {
		return so.StrongOptions()
	}
	return nil
}

// orderedOptions builds the full options of a node for json: filenames:
// strong options, then the driver, then the children.
func orderedOptions(g *Graph, n *Node) json.Marshaler {
	var kv orderedMap
	if f, ok := n.impl.(Filenamer); ok && f.ExactFilename() != "" {
		kv = append(kv, pair{"driver", n.drv.Name}, pair{"filename", f.ExactFilename()})
		return kv
	}
	for k, v := range strongOptions(n) {
		kv = append(kv, pair{k, v})
	}
	kv = append(kv, pair{"driver", n.drv.Name})
	for _, c := range n.children {
		if c.Name == "file" {
			kv = append(kv, pair{"file", orderedOptions(g, c.Node)})
		}
	}
	return kv
}

type pair struct {
	k string
	v any
}

type orderedMap []pair

// MarshalJSON writes the members in order, with QEMU's ", " and ": ".
func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range m {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(p.k)
		v, err := json.Marshal(p.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// imageInfo describes what a node presents (bdrv_query_image_info).
func (g *Graph) imageInfo(n *Node) schema.ImageInfo {
	size, _ := n.impl.Size()
	info := schema.ImageInfo{Filename: g.Filename(n), Format: n.drv.Name, VirtualSize: size}
	if as, ok := allocatedSize(n); ok {
		info.ActualSize = &as
	}
	if ip, ok := n.impl.(InfoProvider); ok {
		d := ip.DirtyFlag()
		info.DirtyFlag = &d
	}
	if ii, ok := n.impl.(ImageInfoer); ok {
		ii.FillImageInfo(&info)
	}
	if b := n.Backing(); b != nil {
		full := g.Filename(b)
		info.FullBackingFilename = &full
	}
	return info
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
	if o := n.options; o != nil {
		if o.DetectZeroes != nil {
			di.DetectZeroes = *o.DetectZeroes
		}
		if o.Cache != nil {
			di.Cache.Direct = boolOr(o.Cache.Direct, false)
			di.Cache.NoFlush = boolOr(o.Cache.NoFlush, false)
		}
	}
	if b := n.Backing(); b != nil {
		bf := g.Filename(b)
		di.BackingFile = &bf
	}
	if !flat {
		img := &di.Image
		for b := n.Backing(); b != nil; b = b.Backing() {
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

// DebugGraph is x-debug-query-block-graph.
func (g *Graph) DebugGraph() schema.XDbgBlockGraph {
	out := schema.XDbgBlockGraph{Nodes: []schema.XDbgBlockGraphNode{}, Edges: []schema.XDbgBlockGraphEdge{}}
	ids := map[any]uint64{}
	id := func(v any, typ schema.XDbgBlockGraphNodeType, name string) uint64 {
		if x, ok := ids[v]; ok {
			return x
		}
		x := uint64(len(ids) + 1)
		ids[v] = x
		out.Nodes = append(out.Nodes, schema.XDbgBlockGraphNode{ID: x, Type: typ, Name: name})
		return x
	}
	nodes := g.Nodes()
	for _, n := range nodes {
		id(n, "block-driver", n.name)
	}
	for _, n := range nodes {
		for _, c := range n.parents {
			var pid uint64
			if pn, ok := c.Parent.(*Node); ok {
				pid = id(pn, "block-driver", pn.name)
			} else if v, ok := c.Parent.(graphVertex); ok {
				pid = id(c.Parent, v.VertexType(), v.VertexName())
			} else {
				continue
			}
			out.Edges = append(out.Edges, schema.XDbgBlockGraphEdge{
				Parent: pid, Child: ids[n], Name: c.Name,
				Perm: permList(c.Perm), SharedPerm: permList(c.Shared),
			})
		}
	}
	return out
}

func permList(p blockio.Perm) []schema.BlockPermission {
	out := []schema.BlockPermission{}
	for _, name := range (p & blockio.PermAll).Names() {
		out = append(out, schema.BlockPermission(name))
	}
	return out
}
