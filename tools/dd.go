package tools

import (
	"errors"
	"math"
	"strings"

	"blockd/blockio"
)

// dd is `blockd img dd`, after qemu-img dd: the input image (through its
// backing chain) is copied block by block from skip*bs, at most count
// blocks, into a new image of the -O format whose size is what is copied.
func (t *tool) dd(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:O:U", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "force-share": {'U', false}, "image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	format, outFmt := "", "raw"
	force := false
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			format = o.arg
		case 'O':
			outFmt = o.arg
		case 'U':
			force = true
		case 'i', 'j':
			t.errorf("blockd img dd does not support -%s", optName(o.key))
			return 1
		}
	}
	bs, count, skip := int64(512), int64(0), int64(0)
	var in, out string
	haveCount, haveSkip, haveIn, haveOut := false, false, false, false
	for _, a := range operands {
		key, val, ok := strings.Cut(a, "=")
		if !ok {
			t.errorf("unrecognized operand %s", a)
			return 1
		}
		num := func(name string, lo, hi uint64) (int64, bool) {
			v, err := parseSizeMax(val, hi)
			if err == nil && uint64(v) >= lo {
				return v, true
			}
			if errors.Is(err, errSizeRange) || err == nil {
				t.errorf("Invalid %s specified. Must be between %d and %d.", name, lo, hi)
			} else {
				t.errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"+
					"%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", name, t.name)
			}
			return 0, false
		}
		switch key {
		case "bs":
			if bs, ok = num("bs", 1, math.MaxInt32); !ok {
				return 1
			}
		case "count":
			if count, ok = num("count", 0, math.MaxInt64); !ok {
				return 1
			}
			haveCount = true
		case "if":
			in, haveIn = val, true
		case "of":
			out, haveOut = val, true
		case "skip":
			if skip, ok = num("skip", 0, math.MaxInt64); !ok {
				return 1
			}
			haveSkip = true
		default:
			t.errorf("unrecognized operand %s", key)
			return 1
		}
	}
	if !haveIn || !haveOut {
		t.errorf("Must specify both input and output files")
		return 1
	}
	src, err := openImage(openOptions{filename: in, format: format, readOnly: true, forceShare: force,
		perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", in, errText(err))
		return 1
	}
	defer src.close()
	switch outFmt {
	case "raw", "qcow2":
	default:
		t.errorf("Unknown file format")
		return 1
	}
	size, err := src.dev.Size()
	if err != nil {
		t.errorf("Failed to get size for '%s'", in)
		return 1
	}
	if haveCount && count <= math.MaxInt64/bs && count*bs < size {
		size = count * bs
	}
	// A skip past the end makes an empty output, as dd(1) does.
	pastEnd := haveSkip && (skip > math.MaxInt64/bs || size < skip*bs)
	outSize := int64(0)
	if !pastEnd {
		outSize = size - skip*bs
	}
	co, err := parseCreateOptions(outFmt, nil, "", "", outSize)
	if err == nil {
		err = createImage(out, co, t.err)
	}
	if err != nil {
		t.errorf("%s: error while creating output image: %s", out, errText(err))
		return 1
	}
	dst, err := openImage(openOptions{filename: out, format: outFmt,
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", out, errText(err))
		return 1
	}
	defer dst.close()
	inPos := skip * bs
	if pastEnd {
		t.errorf("%s: cannot skip to specified offset", in)
		inPos = size
	}
	// Blocks are contiguous on both sides, so whole groups of them are
	// copied at once.
	chunk := max(bs, convertBuf/bs*bs)
	buf := make([]byte, chunk)
	for outPos := int64(0); inPos < size; {
		n := min(chunk, size-inPos)
		if err := src.dev.ReadAt(buf[:n], inPos); err != nil {
			t.errorf("error while reading from input image file: %s", errText(err))
			return 1
		}
		if err := dst.dev.WriteAt(buf[:n], outPos, 0); err != nil {
			t.errorf("error while writing to output image file: %s", errText(err))
			return 1
		}
		inPos, outPos = inPos+n, outPos+n
	}
	if err := dst.dev.Flush(); err != nil {
		t.errorf("error while writing to output image file: %s", errText(err))
		return 1
	}
	return 0
}
