package blockcore

import (
	"errors"

	"blockd/blockio"
	"blockd/schema"
)

// Backend is an unnamed block backend: the user edge a command or job
// holds on a node while it works on it (QEMU's anonymous BlockBackend).
type Backend struct{}

func (Backend) ParentDesc() string                        { return "an unnamed block device" }
func (Backend) VertexType() schema.XDbgBlockGraphNodeType { return "block-backend" }
func (Backend) VertexName() string                        { return "" }

// LookupDeviceOrNode is bdrv_lookup_bs: a storage daemon has no named
// block backends, so only the node name can match.
func (g *Graph) LookupDeviceOrNode(device, nodeName *string) (*Node, error) {
	if nodeName != nil {
		if n := g.nodes[*nodeName]; n != nil {
			return n, nil
		}
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", str(device), str(nodeName))
}

// Resize is qmp_block_resize: with a backend taking the resize
// permission (refused as QEMU refuses it when another user does not
// share it), the node drained, the driver truncates.
func (g *Graph) Resize(device, nodeName *string, size int64) error {
	n, err := g.LookupDeviceOrNode(device, nodeName)
	if err != nil {
		return err
	}
	if opBlocker(n) != "" {
		// QEMU 7.2 names the device argument here, printf'ing a missing
		// one as glibc does.
		dev := "(null)"
		if device != nil {
			dev = *device
		}
		return schema.Errorf("Device '%s' is in use", dev)
	}
	if size < 0 {
		return schema.Errorf("Parameter 'size' expects a >0 size")
	}
	c, err := g.AttachUser(Backend{}, n, "root", blockio.PermResize, blockio.PermAll)
	if err != nil {
		return err
	}
	defer g.DetachUser(c)
	if n.readOnly {
		return schema.Errorf("Image is read-only")
	}
	// Only n is drained: its driver still reaches its children.
	resume := g.drain([]*Node{n})
	defer resume()
	if err := n.impl.Truncate(size); err != nil {
		if errors.Is(err, blockio.ErrNotSupported) {
			return schema.Errorf("Image format driver does not support resize")
		}
		return err
	}
	if size, err := n.io.size(); err == nil {
		n.resizeBitmaps(size)
	}
	return nil
}
