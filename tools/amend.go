package tools

import (
	"math"
	"strconv"
	"strings"

	"blockd/blockio"
	"blockd/drivers/qcow2"
)

// amendOptsHelp is qemu-img 7.2's list for `amend -o help` on qcow2.
const amendOptsHelp = `Amend options for 'qcow2':
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
  data_file=<str>        - File name of an external data file
  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image
  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds
  encrypt.keyslot=<num>  - Select a single keyslot to modify explicitly
  encrypt.new-secret=<str> - New secret to set in the matching keyslots. Empty string to erase
  encrypt.old-secret=<str> - Select all keyslots that match this password
  encrypt.state=<str>    - Select new state of affected keyslots (active/inactive)
  lazy_refcounts=<bool (on/off)> - Postpone refcount updates
  refcount_bits=<num>    - Width of a reference count entry in bits
  size=<size>            - Virtual disk size
`

// qcow2 options qemu-img accepts only when creating an image.
var qcow2CreateOnly = []string{"cluster_size", "preallocation", "encryption", "encrypt.format",
	"encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg",
	"encrypt.ivgen-hash-alg", "encrypt.hash-alg", "compression_type", "extended_l2"}

// amender is what `blockd img amend` changes in a qcow2 image.
type amender interface {
	Info() qcow2.Info
	AmendLazyRefcounts(on bool) error
	AmendRefcountBits(width int) error
	AmendCompat(version int) error
}

// amend is `blockd img amend [-p] [-q] [-f fmt] [-t cache] [--force] -o
// options filename`, after qemu-img amend (qcow2_amend_options), in its
// order. blockd changes compat, refcount_bits, lazy_refcounts and the
// size; the backing file is changed by rebase, as qemu-img says;
// encryption and external data files do not exist in images blockd
// opens, so their options are refused with qemu-img's texts.
func (t *tool) amend(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "ho:qf:t:p", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "force": {'F', false}, "image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, options string
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'o':
			if options != "" {
				options += ","
			}
			options += o.arg
		case 'f':
			format = o.arg
		case 'i', 'j':
			t.errorf("blockd img amend does not support -%s", optName(o.key))
			return 1
		}
	}
	if options == "" {
		t.usageErrorf("Must specify options (-o)")
		return 1
	}
	filename, ok := t.oneImage(operands)
	if !ok {
		return 1
	}
	im, err := openImage(openOptions{filename: filename, format: format,
		perm: blockio.PermConsistentRead | blockio.PermWrite | blockio.PermResize, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	var am amender
	_ = im.do(func() error { am, _ = im.node.Impl().(amender); return nil })
	if am == nil {
		t.errorf("Format driver '%s' does not support option amendment", im.format)
		return 1
	}
	if options == "help" || options == "?" {
		t.printf("%s", amendOptsHelp)
		return 0
	}
	list, err := splitOpts(options)
	if err != nil {
		t.errorf("%s", err)
		return 1
	}
	in := am.Info()
	var (
		size                    int64  = -1
		lazy                           = in.LazyRefcounts
		version                        = in.Version
		compat                  string // an unknown level, refused after the parse
		refcountBits            = in.RefcountBits
		backingFile, backingFmt *string
		dataFile                *string
		dataFileRaw, encrypt    bool
	)
	for _, kv := range list {
		k, v := kv[0], kv[1]
		switch {
		case k == "size":
			n, err := parseSizeMax(v, math.MaxInt64)
			if err != nil {
				t.errorf("Parameter 'size' expects a non-negative number below 2^64\n" +
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
					"and exabytes, respectively.")
				return 1
			}
			size = n
		case k == "lazy_refcounts":
			b, ok := parseBool(v)
			if !ok {
				t.errorf("Parameter 'lazy_refcounts' expects 'on' or 'off'")
				return 1
			}
			lazy = b
		case k == "compat":
			compat = ""
			switch v {
			case "0.10", "v2":
				version = 2
			case "1.1", "v3":
				version = 3
			default:
				compat = v
			}
		case k == "refcount_bits":
			n, err := strconv.ParseUint(v, 0, 64)
			if err != nil {
				t.errorf("Parameter 'refcount_bits' expects a number")
				return 1
			}
			refcountBits = int(min(n, 128))
		case k == "backing_file":
			backingFile = &v
		case k == "backing_fmt":
			backingFmt = &v
		case k == "data_file":
			dataFile = &v
		case k == "data_file_raw":
			b, ok := parseBool(v)
			if !ok {
				t.errorf("Parameter 'data_file_raw' expects 'on' or 'off'")
				return 1
			}
			dataFileRaw = b
		case strings.HasPrefix(k, "encrypt.") && !contains(qcow2CreateOnly, k):
			encrypt = true
		case contains(qcow2CreateOnly, k):
			t.errorf("Invalid parameter '%s'\nThis option is only supported for image creation", k)
			return 1
		default:
			t.errorf("Invalid parameter '%s'", k)
			return 1
		}
	}
	// qcow2_amend_options' checks of the values, in the order of its
	// option list (encrypt.*, then size, compat, backing_file,
	// backing_fmt, data_file, data_file_raw, lazy_refcounts,
	// refcount_bits).
	switch {
	case encrypt:
		t.errorf("Can't amend encryption options - encryption not present")
		return 1
	case compat != "":
		t.errorf("Unknown compatibility level %s", compat)
		return 1
	case dataFile != nil:
		t.errorf("data-file can only be set for images that use an external data file")
		return 1
	case dataFileRaw:
		t.errorf("data-file-raw cannot be set on existing images")
		return 1
	case refcountBits <= 0 || refcountBits > 64 || refcountBits&(refcountBits-1) != 0:
		t.errorf("Refcount width must be a power of two and may not exceed 64 bits")
		return 1
	}
	// Then the changes in QEMU's order: an upgrade first (the others may
	// need compat=1.1), a downgrade last (the others may remove what v2
	// cannot hold). What one step changed stays changed when a later one
	// fails, as with qemu-img.
	fail := func(err error) int {
		t.errorf("%s", errText(err))
		return 1
	}
	if version > in.Version {
		if err := am.AmendCompat(version); err != nil {
			return fail(err)
		}
	}
	if refcountBits != in.RefcountBits {
		if version < 3 && refcountBits != 16 {
			t.errorf("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
			return 1
		}
		if err := am.AmendRefcountBits(refcountBits); err != nil {
			return fail(err)
		}
	}
	if (backingFile != nil || backingFmt != nil) &&
		(deref(backingFile) != in.BackingFile || deref(backingFmt) != in.BackingFormat) {
		t.errorf("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
		return 1
	}
	if lazy != in.LazyRefcounts {
		if lazy && version < 3 {
			t.errorf("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
			return 1
		}
		if err := am.AmendLazyRefcounts(lazy); err != nil {
			return fail(err)
		}
	}
	if size > 0 && size != in.VirtualSize { // size=0 means none, as in QEMU
		if err := im.dev.Truncate(size); err != nil {
			return fail(err)
		}
	}
	if version < in.Version {
		if err := am.AmendCompat(version); err != nil {
			return fail(err)
		}
	}
	if err := im.dev.Flush(); err != nil {
		t.errorf("%s", errText(err))
		return 1
	}
	return 0
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
