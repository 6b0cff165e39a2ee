package tools

import (
	"errors"
	"fmt"
	"math"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// commitUser is the edge img commit holds on base while it writes there,
// as QEMU's commit job holds its target.
type commitUser struct{}

func (commitUser) ParentDesc() string                        { return "commit job 'commit'" }
func (commitUser) VertexType() schema.XDbgBlockGraphNodeType { return "block-job" }
func (commitUser) VertexName() string                        { return "commit" }

// commit is `blockd img commit`, after qemu-img commit: what the image and
// the layers between it and base (its backing file, or -b) define is
// written into base, which is reopened read-write for it (growing base if
// it is shorter); then, unless -d or -b, the image is emptied so that it
// reads through to base.
func (t *tool) commit(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "f:ht:b:dpqr:", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, baseName string
	cache := "writeback"
	drop, progressOn, quiet := false, false, false
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			format = o.arg
		case 't':
			cache = o.arg
		case 'b':
			baseName, drop = o.arg, true // -b implies -d
		case 'd':
			drop = true
		case 'p':
			progressOn = true
		case 'q':
			quiet = true
		case 'r':
			// A rate limit: accepted; blockd commits as fast as it can.
			if _, err := parseSizeMax(o.arg, math.MaxInt64); err != nil {
				t.errorf("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for ")
				return 1
			}
		case 'i', 'j':
			t.errorf("blockd img commit does not support -%s", optName(o.key))
			return 1
		}
	}
	if quiet {
		progressOn = false
	}
	filename, ok := t.oneImage(operands)
	if !ok {
		return 1
	}
	cm, ok := parseCacheMode(cache)
	if !ok {
		t.errorf("Invalid cache option: %s", cache)
		return 1
	}
	im, err := openImage(openOptions{filename: filename, format: format, cache: cm, discardUnmap: true,
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	prog := newProgress(t, progressOn, 1)
	prog.print(0, 100)
	err = t.commitTo(im, filename, baseName, drop, prog)
	prog.end()
	if err != nil {
		t.errorf("%s", err)
		return 1
	}
	if !quiet {
		t.printf("Image committed.\n")
	}
	return 0
}

func (t *tool) commitTo(im *image, filename, baseName string, drop bool, prog *progress) error {
	top := im.node
	var base *blockcore.Node
	if baseName != "" {
		if base = findBackingImage(im.graph, top, baseName); base == nil {
			return fmt.Errorf("Did not find '%s' in the backing chain of '%s'", baseName, filename)
		}
	} else if base = top.Backing(); base == nil {
		return errors.New("Image does not have a backing file")
	}
	// Reopen base read-write and hold it as the commit job does.
	var user *blockcore.Child
	wasRO := base.ReadOnly()
	err := im.do(func() error {
		if wasRO {
			if err := im.graph.SetReadOnly(base, false); err != nil {
				return err
			}
		}
		var err error
		user, err = im.graph.AttachUser(commitUser{}, base, "commit",
			blockio.PermConsistentRead|blockio.PermWrite|blockio.PermResize, blockio.PermAll)
		return err
	})
	if err != nil {
		return err
	}
	defer func() {
		_ = im.do(func() error {
			im.graph.DetachUser(user)
			if wasRO {
				return im.graph.SetReadOnly(base, true)
			}
			return nil
		})
	}()
	if err := copyAbove(top, base, prog); err != nil {
		return fmt.Errorf("Block job failed: %s", errText(err))
	}
	if err := base.IO().Flush(); err != nil {
		return fmt.Errorf("Block job failed: %s", errText(err))
	}
	prog.print(100, 0)
	if !drop {
		if e, ok := top.Impl().(interface{ MakeEmpty() error }); ok {
			if err := e.MakeEmpty(); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyAbove writes into base what the layers from top down to base
// define (the commit job's copy: data is copied, ranges that read as zero
// become zeroes), growing base to top's size first.
func copyAbove(top, base *blockcore.Node, prog *progress) error {
	size, err := top.IO().Size()
	if err != nil {
		return err
	}
	bsize, err := base.IO().Size()
	if err != nil {
		return err
	}
	if bsize < size {
		if err := base.IO().Truncate(size); err != nil {
			return err
		}
	}
	buf := make([]byte, convertBuf)
	for off, n := int64(0), int64(0); off < size; off += n {
		alloc, m, err := allocatedAbove(top, base, off, min(convertBuf, size-off))
		if err != nil {
			return err
		}
		n = m
		if alloc {
			e, err := chainStatus(top, off, n)
			if err != nil {
				return err
			}
			n = e.length
			if e.zero {
				err = base.IO().WriteZeroes(off, n, blockio.MayUnmap)
			} else if err = top.IO().ReadAt(buf[:n], off); err == nil {
				err = base.IO().WriteAt(buf[:n], off, 0)
			}
			if err != nil {
				return err
			}
		}
		prog.print(float32(100*float64(off+n)/float64(size)), 0)
	}
	return nil
}
