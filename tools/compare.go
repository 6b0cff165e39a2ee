package tools

import (
	"bytes"

	"blockd/blockio"
)

// compareBuf is the most compare reads from each image at a time
// (qemu-img's IO_BUF_SIZE).
const compareBuf = 2 << 20

// compare is `blockd img compare`, after qemu-img compare: both images are
// opened read-only with their backing chains; ranges that read as zeroes
// in both (block status of the whole chain) are skipped, everything else
// is read and compared. A mismatch is reported at the first 512-byte
// sector that differs. Exit codes: 0 identical, 1 different, 2 open
// error, 4 read error (3, block status error, is reported as 4 too).
func (t *tool) compare(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:F:T:pqsU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "force-share": {'U', false},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 2
	}
	var fmt1, fmt2 string
	var quiet, strict, force bool
	for _, o := range opts {
		switch o.key {
		case 'f':
			fmt1 = o.arg
		case 'F':
			fmt2 = o.arg
		case 'q':
			quiet = true
		case 's':
			strict = true
		case 'U':
			force = true
		case 'T':
			if _, ok := parseCacheMode(o.arg); !ok {
				t.errorf("Invalid source cache option: %s", o.arg)
				return 2
			}
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		}
	}
	if len(operands) != 2 {
		t.usageErrorf("Expecting two image file names")
		return 2
	}
	qprintf := func(format string, args ...any) {
		if !quiet {
			t.printf(format, args...)
		}
	}
	open := func(name, format string) *image {
		im, err := openImage(openOptions{filename: name, format: format, readOnly: true, forceShare: force,
			perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
		if err != nil {
			t.errorf("Could not open '%s': %s", name, errText(err))
			return nil
		}
		return im
	}
	im1 := open(operands[0], fmt1)
	if im1 == nil {
		return 2
	}
	defer im1.close()
	im2 := open(operands[1], fmt2)
	if im2 == nil {
		return 2
	}
	defer im2.close()
	size1, err1 := im1.dev.Size()
	size2, err2 := im2.dev.Size()
	if err1 != nil || err2 != nil {
		t.errorf("Can't get size of image: %s", errText(firstErr(err1, err2)))
		return 4
	}
	if strict && size1 != size2 {
		qprintf("Strict mode: Image size mismatch!\n")
		return 1
	}
	buf1 := make([]byte, compareBuf)
	buf2 := make([]byte, compareBuf)
	common := min(size1, size2)
	for off := int64(0); off < common; {
		e1, err := chainStatus(im1.node, off, common-off)
		if err != nil {
			t.errorf("Sector allocation test failed for %s", operands[0])
			return 3
		}
		e2, err := chainStatus(im2.node, off, common-off)
		if err != nil {
			t.errorf("Sector allocation test failed for %s", operands[1])
			return 3
		}
		chunk := min(e1.length, e2.length, compareBuf)
		if strict && (e1.present != e2.present || e1.zero != e2.zero || e1.data != e2.data) {
			qprintf("Strict mode: Offset %d block status mismatch!\n", off)
			return 1
		}
		if !(e1.zero && e2.zero) {
			if err := im1.dev.ReadAt(buf1[:chunk], off); err != nil {
				t.errorf("Error while reading offset %d of %s: %s", off, operands[0], errText(err))
				return 4
			}
			if err := im2.dev.ReadAt(buf2[:chunk], off); err != nil {
				t.errorf("Error while reading offset %d of %s: %s", off, operands[1], errText(err))
				return 4
			}
			if i := firstDiffSector(buf1[:chunk], buf2[:chunk]); i >= 0 {
				qprintf("Content mismatch at offset %d!\n", off+i)
				return 1
			}
		}
		off += chunk
	}
	if size1 != size2 {
		qprintf("Warning: Image size mismatch!\n")
		over, name, total := im1, operands[0], size1
		if size2 > size1 {
			over, name, total = im2, operands[1], size2
		}
		for off := common; off < total; {
			e, err := chainStatus(over.node, off, total-off)
			if err != nil {
				t.errorf("Sector allocation test failed for %s", name)
				return 3
			}
			chunk := min(e.length, compareBuf)
			if !e.zero {
				if err := over.dev.ReadAt(buf1[:chunk], off); err != nil {
					t.errorf("Error while reading offset %d of %s: %s", off, name, errText(err))
					return 4
				}
				if i := firstNonzeroSector(buf1[:chunk]); i >= 0 {
					qprintf("Content mismatch at offset %d!\n", off+i)
					return 1
				}
			}
			off += chunk
		}
	}
	qprintf("Images are identical.\n")
	return 0
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// firstDiffSector returns the offset of the first 512-byte sector where a
// and b differ, or -1.
func firstDiffSector(a, b []byte) int64 {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := 0; i < len(a); i += 512 {
		end := min(i+512, len(a))
		if !bytes.Equal(a[i:end], b[i:end]) {
			return int64(i)
		}
	}
	return -1
}

// firstNonzeroSector is qemu-img's find_nonzero.
func firstNonzeroSector(a []byte) int64 {
	for i := 0; i < len(a); i += 512 {
		if !blockio.AllZero(a[i:min(i+512, len(a))]) {
			return int64(i)
		}
	}
	return -1
}
