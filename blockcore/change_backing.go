package blockcore

import (
	"errors"
	"syscall"

	"blockd/schema"
)

// BackingFileWriter is implemented by formats whose header names the
// backing file (bdrv_change_backing_file).
type BackingFileWriter interface {
	SetBackingFile(name, format string) error
}

// rootNode is qmp_get_root_bs: a node that no other node uses.
func (g *Graph) rootNode(name string) (*Node, error) {
	n := g.nodes[name]
	if n == nil {
		return nil, schema.Errorf("Cannot find device='%s' nor node-name='%s'", name, name)
	}
	for _, c := range n.parents {
		if _, ok := c.Parent.(*Node); ok {
			return nil, schema.Errorf("Need a root block node")
		}
	}
	return n, nil
}

// ChangeBackingFile is qmp_change_backing_file: rewrite the backing file
// name in the header of image, a node of device's backing chain, making
// it writable for the rewrite if it is read-only. As QEMU 7.2 does, the
// backing format recorded is image's own format.
func (g *Graph) ChangeBackingFile(device, imageName, backing string) error {
	root, err := g.rootNode(device)
	if err != nil {
		return err
	}
	img := g.nodes[imageName]
	if img == nil {
		return schema.Errorf("Cannot find device='' nor node-name='%s'", imageName)
	}
	if img.Backing() == nil {
		return schema.Errorf("not allowing backing file change on an image without a backing file")
	}
	if b := opBlocker(root); b != "" {
		return schema.Errorf("Node '%s' is busy: %s", root.name, b)
	}
	inChain := false
	for n := root; n != nil && !inChain; n = n.Backing() {
		inChain = n == img
	}
	if !inChain {
		return schema.Errorf("'%s' and image file are not in the same chain", device)
	}
	ro := img.readOnly
	if ro {
		if err := g.SetReadOnly(img, false); err != nil {
			return err
		}
	}
	err = syscall.ENOTSUP
	if w, ok := img.impl.(BackingFileWriter); ok {
		err = w.SetBackingFile(backing, img.drv.Name)
	}
	if err == nil {
		img.autoBackingFile = backing
	} else {
		err = schema.Errorf("Could not change backing file to '%s': %s", backing, errnoText(err))
	}
	if ro {
		// As QEMU, the error of the change wins over the reopen's.
		if rerr := g.SetReadOnly(img, true); err == nil {
			err = rerr
		}
	}
	return err
}

// errnoText is strerror's text for an errno inside err, else err's text.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		if s != "" && s[0] >= 'a' && s[0] <= 'z' {
			s = string(s[0]-'a'+'A') + s[1:]
		}
		return s
	}
	return err.Error()
}
