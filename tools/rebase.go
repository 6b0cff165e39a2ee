package tools

import (
	"bytes"
	"path/filepath"
	"strings"

	"blockd/blockcore"
	"blockd/blockio"
)

// rebase is `blockd img rebase`, after qemu-img rebase. In safe mode
// every range the image does not define itself is read from the old and
// the new backing file, and where they differ the old content is written
// into the image, so that what the guest sees is unchanged; then the
// header's backing file is rewritten. With -u only the header changes.
func (t *tool) rebase(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:F:b:upt:T:qU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "force-share": {'U', false}, "image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, newFmt, newBacking string
	haveBacking, unsafe, progressOn, quiet, force := false, false, false, false, false
	cache, srcCache := "writeback", "writeback"
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			format = o.arg
		case 'F':
			newFmt = o.arg
		case 'b':
			newBacking, haveBacking = o.arg, true
		case 'u':
			unsafe = true
		case 'p':
			progressOn = true
		case 't':
			cache = o.arg
		case 'T':
			srcCache = o.arg
		case 'q':
			quiet = true
		case 'U':
			force = true
		case 'i', 'j':
			t.errorf("blockd img rebase does not support -%s", optName(o.key))
			return 1
		}
	}
	if quiet {
		progressOn = false
	}
	if len(operands) != 1 {
		t.usageErrorf("Expecting one image file name")
		return 1
	}
	if !unsafe && !haveBacking {
		t.usageErrorf("Must specify backing file (-b) or use unsafe mode (-u)")
		return 1
	}
	filename := operands[0]
	prog := newProgress(t, progressOn, 2)
	prog.print(0, 100)
	defer prog.end()
	cm, ok := parseCacheMode(cache)
	if !ok {
		t.errorf("Invalid cache option: %s", cache)
		return 1
	}
	if _, ok := parseCacheMode(srcCache); !ok {
		t.errorf("Invalid source cache option: %s", srcCache)
		return 1
	}
	// -u ignores the old backing file, which may be gone (the reason to
	// rebase unsafely is often that it was renamed or moved).
	im, err := openImage(openOptions{filename: filename, format: format, noBacking: unsafe, cache: cm,
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	if newFmt != "" && !t.checkFormatName(newFmt) {
		return 1
	}
	if !unsafe {
		if code := t.rebaseCopy(im, filename, newBacking, newFmt, force, prog); code != 0 {
			return code
		}
	}
	hb, ok := im.node.Impl().(interface {
		SetBackingFile(name, format string) error
	})
	if !ok {
		t.errorf("Could not change the backing file to '%s': Operation not supported", newBacking)
		return 1
	}
	if newBacking != "" && newFmt == "" {
		t.errorf("Could not change the backing file to '%s': backing format must be specified", newBacking)
		return 1
	}
	if err := hb.SetBackingFile(newBacking, newFmt); err != nil {
		t.errorf("Could not change the backing file to '%s': %s", newBacking, errText(err))
		return 1
	}
	if err := im.dev.Flush(); err != nil {
		t.errorf("%s", errText(err))
		return 1
	}
	prog.print(100, 0)
	return 0
}

// checkFormatName is the -F check: a format blockd has a driver for.
func (t *tool) checkFormatName(f string) bool {
	switch f {
	case "qcow2", "raw", "file":
		return true
	}
	t.errorf("Invalid format name: '%s'", f)
	return false
}

// rebaseCopy is the safe part of rebase: it copies into im what would
// change when the backing file becomes newBacking.
func (t *tool) rebaseCopy(im *image, filename, newBacking, newFmt string, force bool, prog *progress) int {
	oldB := im.node.Backing()
	var newB *blockcore.Node // the new backing file, when it is in the chain already
	var newDev blockio.Device
	if newBacking != "" {
		path := newBacking
		if !filepath.IsAbs(path) && !strings.Contains(path, "://") {
			path = filepath.Join(filepath.Dir(filename), path)
		}
		if newB = findBackingImage(im.graph, im.node, realPath(path)); newB != nil {
			newDev = newB.IO()
		} else {
			nim, err := openImage(openOptions{filename: path, format: newFmt, readOnly: true, forceShare: force,
				perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
			if err != nil {
				t.errorf("Could not open new backing file '%s': %s", newBacking, errText(err))
				return 1
			}
			defer nim.close()
			newDev = nim.dev
		}
	}
	size, err := im.dev.Size()
	if err != nil {
		t.errorf("Could not get size of '%s': %s", filename, errText(err))
		return 1
	}
	var oldSize, newSize int64
	if oldB != nil {
		if oldSize, err = oldB.IO().Size(); err != nil {
			t.errorf("Could not get size of '%s': %s", blockcore.Filename(oldB), errText(err))
			return 1
		}
	}
	if newDev != nil {
		if newSize, err = newDev.Size(); err != nil {
			t.errorf("Could not get size of '%s': %s", newBacking, errText(err))
			return 1
		}
	}
	var step float32
	if size != 0 {
		step = float32(100) / float32(size/min(size, compareBuf))
	}
	bufOld := make([]byte, compareBuf)
	bufNew := make([]byte, compareBuf)
	for off, n := int64(0), int64(0); off < size; off += n {
		n = min(compareBuf, size-off)
		st, err := im.dev.BlockStatus(off, n)
		if err != nil {
			t.errorf("error while reading image metadata: %s", errText(err))
			return 1
		}
		n = min(n, st.Length)
		if st.Flags&blockio.StatusAllocated != 0 {
			continue
		}
		if newB != nil {
			// Unchanged since the new backing file: nothing to do.
			alloc, m, err := allocatedAbove(oldB, newB, off, n)
			if err != nil {
				t.errorf("error while reading image metadata: %s", errText(err))
				return 1
			}
			n = m
			if !alloc {
				continue
			}
		}
		if off >= oldSize {
			clear(bufOld[:n])
		} else {
			n = min(n, oldSize-off)
			if err := oldB.IO().ReadAt(bufOld[:n], off); err != nil {
				t.errorf("error while reading from old backing file")
				return 1
			}
		}
		if off >= newSize || newDev == nil {
			clear(bufNew[:n])
		} else {
			n = min(n, newSize-off)
			if err := newDev.ReadAt(bufNew[:n], off); err != nil {
				t.errorf("error while reading from new backing file")
				return 1
			}
		}
		for w := int64(0); w < n; {
			differ, pnum := compareSectors(bufOld[w:n], bufNew[w:n])
			if differ {
				if err := im.dev.WriteAt(bufOld[w:w+pnum], off+w, 0); err != nil {
					t.errorf("Error while writing to COW image: %s", errText(err))
					return 1
				}
			}
			w += pnum
		}
		prog.print(step, 100)
	}
	return 0
}

// compareSectors is qemu-img's compare_buffers: whether the first sectors
// differ, and how many bytes (whole sectors, or the rest) share that answer.
func compareSectors(a, b []byte) (bool, int64) {
	l := len(a)
	i := min(l, 512)
	differ := !bytes.Equal(a[:i], b[:i])
	for i < l {
		e := min(i+512, l)
		if !bytes.Equal(a[i:e], b[i:e]) != differ {
			break
		}
		i = e
	}
	return differ, int64(i)
}

// findBackingImage is bdrv_find_backing_image: the node below top whose
// file is name (absolute, or relative to the image that refers to it),
// comparing canonical paths.
func findBackingImage(g *blockcore.Graph, top *blockcore.Node, name string) *blockcore.Node {
	for x := top; x.Backing() != nil; x = x.Backing() {
		b := x.Backing()
		want := name
		if !filepath.IsAbs(name) {
			want = g.ResolveBackingPath(x, name)
		}
		if got := g.Filename(b); got == name || realPath(got) == realPath(want) {
			return b
		}
	}
	return nil
}

// realPath is realpath(3), or the name itself when that fails.
func realPath(name string) string {
	if abs, err := filepath.Abs(name); err == nil {
		name = abs
	}
	if r, err := filepath.EvalSymlinks(name); err == nil {
		return r
	}
	return name
}

// allocatedAbove is bdrv_is_allocated_above(top, base): whether a layer
// from top down to (not including) base defines [off, off+n), and for how
// many bytes that answer holds.
func allocatedAbove(top, base *blockcore.Node, off, n int64) (bool, int64, error) {
	for x := top; x != nil && x != base; x = x.Backing() {
		size, err := x.IO().Size()
		if err != nil {
			return false, 0, err
		}
		if off >= size {
			return true, n, nil // a shorter layer defines zeroes past its end
		}
		st, err := x.IO().BlockStatus(off, min(n, size-off))
		if err != nil {
			return false, 0, err
		}
		if st.Flags&blockio.StatusAllocated != 0 {
			return true, min(n, st.Length), nil
		}
		n = min(n, st.Length)
	}
	return false, n, nil
}
