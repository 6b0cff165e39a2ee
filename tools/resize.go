package tools

import (
	"errors"
	"math"

	"blockd/blockio"
)

// resize is `blockd img resize`, after qemu-img resize: the size is the
// last argument (so that "-1G" is not taken for an option), absolute or
// relative (+/-); shrinking needs --shrink. The image is opened with the
// resize permission, so another user of it keeps blockd out (and the
// reverse) through the image locks.
func (t *tool) resize(args []string) int {
	if len(args) < 2 {
		t.usageErrorf("Not enough arguments")
		return 1
	}
	sizeArg := args[len(args)-1]
	opts, operands, err := getopt(args[:len(args)-1], optSpec{short: "f:hq", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "preallocation": {'P', true}, "shrink": {'S', false},
		"image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format string
	quiet, shrink := false, false
	prealloc := "off"
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			format = o.arg
		case 'q':
			quiet = true
		case 'S':
			shrink = true
		case 'P':
			switch o.arg {
			case "off", "metadata", "falloc", "full":
				prealloc = o.arg
			default:
				t.errorf("Invalid preallocation mode '%s'", o.arg)
				return 1
			}
		case 'i', 'j':
			t.errorf("blockd img resize does not support -%s", optName(o.key))
			return 1
		}
	}
	if len(operands) != 1 {
		t.usageErrorf("Expecting image file name and size")
		return 1
	}
	filename := operands[0]
	relative := int64(0)
	switch sizeArg[0] {
	case '+':
		relative, sizeArg = 1, sizeArg[1:]
	case '-':
		relative, sizeArg = -1, sizeArg[1:]
	}
	n, err := parseSizeMax(sizeArg, math.MaxInt64)
	if err != nil {
		t.errorf("Parameter 'size' expects a non-negative number below 2^64\n" +
			"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
			"and exabytes, respectively.")
		return 1
	}
	im, err := openImage(openOptions{filename: filename, format: format,
		perm: blockio.PermConsistentRead | blockio.PermWrite | blockio.PermResize, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	im.warnProbedRaw(t.err, filename)
	current, err := im.dev.Size()
	if err != nil {
		t.errorf("Failed to inquire current image length: %s", errText(err))
		return 1
	}
	total := n
	if relative != 0 {
		total = current + relative*n
	}
	switch {
	case total <= 0:
		t.errorf("New image size must be positive")
		return 1
	case total <= current && prealloc != "off":
		t.errorf("Preallocation can only be used for growing images")
		return 1
	case total < current && !shrink:
		t.errorf("Use the --shrink option to perform a shrink operation.")
		t.errorf("warning: Shrinking an image will delete all data beyond the shrunken image's end. " +
			"Before performing such an operation, make sure there is no important data there.")
		return 1
	}
	if prealloc != "off" && (im.format != "raw" || prealloc == "metadata") {
		if im.format == "raw" {
			t.errorf("Unsupported preallocation mode: %s", prealloc)
		} else {
			t.errorf("blockd img resize supports --preallocation=%s on raw images only", prealloc)
		}
		return 1
	}
	if err := im.dev.Truncate(total); err != nil {
		if errors.Is(err, blockio.ErrNotSupported) && total < current {
			t.errorf("Shrinking %s images is not supported by blockd", im.format)
		} else {
			t.errorf("%s", errText(err))
		}
		return 1
	}
	if prealloc != "off" && total > current {
		// full and falloc on raw: the new area is allocated, reading as zero.
		if err := im.dev.WriteZeroes(current, total-current, 0); err != nil {
			t.errorf("%s", errText(err))
			return 1
		}
	}
	if err := im.dev.Flush(); err != nil {
		t.errorf("%s", errText(err))
		return 1
	}
	if !quiet {
		t.printf("Image resized.\n")
	}
	return 0
}
