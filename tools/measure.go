package tools

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/qcow2"
	"blockd/internal/qdict"
)

// measure is `blockd img measure`, after qemu-img measure: the size a
// new image of the -O format would need, for the data of an existing
// image (its whole backing chain, as convert would copy it) or for an
// empty image of --size. The figures follow qcow2_measure and
// raw_measure exactly, so the output is byte for byte qemu-img's.
func (t *tool) measure(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:O:o:l:U", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "output": {'u', true}, "size": {'s', true}, "force-share": {'U', false},
		"image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var fmtIn string
	outFmt := "raw"
	size := int64(-1)
	json, force, sizeGiven := false, false, false
	var optList []string
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			fmtIn = o.arg
		case 'O':
			outFmt = o.arg
		case 'o':
			optList = append(optList, o.arg)
		case 'U':
			force = true
		case 'u':
			var ok bool
			if json, ok = t.outputFormat(o.arg); !ok {
				return 1
			}
		case 's':
			v, err := parseSizeMax(o.arg, math.MaxInt64)
			if err != nil {
				t.sizeError("image size", err)
				return 1
			}
			size, sizeGiven = v, true
		case 'l', 'i', 'j':
			t.errorf("blockd img measure does not support -%s", optName(o.key))
			return 1
		}
	}
	if len(operands) > 1 {
		t.errorf("At most one filename argument is allowed.")
		return 1
	}
	filename := ""
	if len(operands) == 1 {
		filename = operands[0]
	}
	switch {
	case filename == "" && fmtIn != "":
		t.errorf("--image-opts, -f, and -l require a filename argument.")
		return 1
	case filename != "" && sizeGiven:
		t.errorf("--size N cannot be used together with a filename.")
		return 1
	case filename == "" && !sizeGiven:
		t.errorf("Either --size N or one filename must be specified.")
		return 1
	}
	var in *image
	if filename != "" {
		in, err = openImage(openOptions{filename: filename, format: fmtIn, readOnly: true, forceShare: force,
			perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
		if err != nil {
			t.errorf("Could not open '%s': %s", filename, errText(err))
			return 1
		}
		defer in.close()
	}
	if !t.checkFormat(outFmt) {
		return 1
	}
	mo, err := parseMeasureOptions(outFmt, optList)
	if err != nil {
		t.errorf("%s", err)
		var pe optParseError
		if errors.As(err, &pe) {
			t.errorf("Invalid options for file format '%s'", outFmt)
		}
		return 1
	}
	if sizeGiven {
		mo.size = size
	}
	var res measureResult
	if outFmt == "raw" {
		res, err = measureRaw(mo, in)
	} else {
		res, err = measureQcow2(mo, in)
	}
	if err != nil {
		t.errorf("%s", err)
		return 1
	}
	if json {
		var d qdict.Dict
		if res.hasBitmaps {
			d = d.Set("bitmaps", int64(res.bitmaps))
		}
		d = d.Set("required", int64(res.required)).Set("fully-allocated", int64(res.fullyAllocated))
		t.printf("%s\n", prettyJSON(d))
		return 0
	}
	t.printf("required size: %d\n", res.required)
	t.printf("fully allocated size: %d\n", res.fullyAllocated)
	if res.hasBitmaps {
		t.printf("bitmaps size: %d\n", res.bitmaps)
	}
	return 0
}

// optParseError is an -o option qemu_opts_do_parse itself refuses (an
// unknown key, a value of the wrong type), as opposed to one the format
// refuses later; qemu-img measure adds a line for the former only.
type optParseError struct{ error }

type measureResult struct {
	required, fullyAllocated uint64
	hasBitmaps               bool
	bitmaps                  uint64
}

// measureOpts are the creation options measure takes into account.
type measureOpts struct {
	size         int64
	clusterSize  int64
	version      int
	refcountBits int
	extendedL2   bool
	prealloc     string
	hasBacking   bool
}

// parseMeasureOptions reads -o as qemu-img measure does: the format's
// creation options plus the file protocol's, checked as qcow2_measure
// checks them.
func parseMeasureOptions(format string, list []string) (measureOpts, error) {
	mo := measureOpts{clusterSize: 65536, version: 3, refcountBits: 16, prealloc: "off"}
	keys := []string{"size", "preallocation", "nocow", "extent_size_hint"}
	if format == "qcow2" {
		keys = append(append([]string{}, qcow2CreateKeys...), "nocow", "extent_size_hint", "encrypt.format",
			"data_file", "data_file_raw")
	}
	raw := map[string]string{}
	for _, s := range list {
		kvs, err := splitOpts(s)
		if err != nil {
			return mo, optParseError{err}
		}
		for _, kv := range kvs {
			if !contains(keys, kv[0]) {
				return mo, optParseError{fmt.Errorf("Invalid parameter '%s'", kv[0])}
			}
			raw[kv[0]] = kv[1]
		}
	}
	sizeOpt := func(key string) (int64, bool, error) {
		v, ok := raw[key]
		if !ok {
			return 0, false, nil
		}
		n, err := parseSizeMax(v, math.MaxInt64)
		if err != nil {
			return 0, false, optParseError{fmt.Errorf("Parameter '%s' expects a non-negative number below 2^64\n"+
				"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
				"and exabytes, respectively.", key)}
		}
		return n, true, nil
	}
	if n, ok, err := sizeOpt("size"); err != nil {
		return mo, err
	} else if ok {
		mo.size = n
	}
	if v, ok := raw["preallocation"]; ok {
		switch v {
		case "off", "metadata", "falloc", "full":
			mo.prealloc = v
		default:
			return mo, fmt.Errorf("invalid parameter value: %s", v)
		}
	}
	if format != "qcow2" {
		return mo, nil
	}
	if v, ok := raw["extended_l2"]; ok {
		b, ok := parseBool(v)
		if !ok {
			return mo, optParseError{errors.New("Parameter 'extended_l2' expects 'on' or 'off'")}
		}
		mo.extendedL2 = b
	}
	if n, ok, err := sizeOpt("cluster_size"); err != nil {
		return mo, err
	} else if ok {
		mo.clusterSize = n
	}
	cs := mo.clusterSize
	if cs < 512 || cs > 2<<20 || cs&(cs-1) != 0 {
		return mo, errors.New("Cluster size must be a power of two between 512 and 2048k")
	}
	if mo.extendedL2 && cs < 16384 {
		return mo, fmt.Errorf("Extended L2 entries are only supported with cluster sizes of at least %d bytes", 16384)
	}
	switch v := raw["compat"]; v {
	case "", "1.1", "v3":
	case "0.10", "v2":
		mo.version = 2
	default:
		return mo, fmt.Errorf("Invalid compatibility level: '%s'", v)
	}
	if v, ok := raw["refcount_bits"]; ok {
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return mo, optParseError{errors.New("Parameter 'refcount_bits' expects a number")}
		}
		if n == 0 || n > 64 || n&(n-1) != 0 {
			return mo, errors.New("Refcount width must be a power of two and may not exceed 64 bits")
		}
		mo.refcountBits = int(n)
	}
	if mo.version < 3 && mo.refcountBits != 16 {
		return mo, errors.New("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	_, mo.hasBacking = raw["backing_file"]
	if v, ok := raw["encrypt.format"]; ok && v == "luks" {
		return mo, errors.New("blockd img measure does not support encrypt.format=luks")
	}
	return mo, nil
}

// measureRaw is raw_measure: the input's size, or --size rounded to a sector.
func measureRaw(mo measureOpts, in *image) (measureResult, error) {
	req := uint64(roundUp512(mo.size))
	if in != nil {
		sz, err := in.dev.Size()
		if err != nil {
			return measureResult{}, fmt.Errorf("Unable to get image size: %s", errText(err))
		}
		req = uint64(sz)
	}
	return measureResult{required: req, fullyAllocated: req}, nil
}

// measureQcow2 is qcow2_measure.
func measureQcow2(mo measureOpts, in *image) (measureResult, error) {
	cs := uint64(mo.clusterSize)
	l2eSize := uint64(8)
	if mo.extendedL2 {
		l2eSize = 16
	}
	virtual := roundUpU(uint64(mo.size), cs)
	l2Tables := divRoundUp(virtual/cs, cs/l2eSize)
	if l2Tables*8 > 32<<20 {
		return measureResult{}, errors.New("The image size is too large (try using a larger cluster size)")
	}
	var required uint64
	if in != nil {
		ssize, err := in.dev.Size()
		if err != nil {
			return measureResult{}, fmt.Errorf("Unable to get image virtual_size: %s", errText(err))
		}
		virtual = roundUpU(uint64(ssize), cs)
		if mo.hasBacking {
			// The new image's backing file may share nothing with the input.
			required = virtual
		} else {
			for off, pnum := int64(0), int64(0); off < ssize; off += pnum {
				e, err := chainStatus(in.node, off, ssize-off)
				if err != nil {
					return measureResult{}, fmt.Errorf("Unable to get block status: %s", errText(err))
				}
				pnum = e.length
				if !e.zero && e.data && e.present {
					// Count whole clusters; the next query starts at the
					// next cluster boundary.
					pnum = int64(roundUpU(uint64(off+pnum), cs)) - off
					required += uint64(off)%cs + uint64(pnum)
				}
			}
		}
	}
	if mo.prealloc == "full" || mo.prealloc == "falloc" {
		required = virtual
	}
	res := measureResult{fullyAllocated: qcow2PreallocSize(virtual, cs, mo.refcountBits, mo.extendedL2)}
	res.required = res.fullyAllocated - virtual + required
	if mo.version >= 3 && in != nil {
		if q, ok := in.node.Impl().(interface{ Info() qcow2.Info }); ok && q.Info().Version >= 3 {
			res.hasBitmaps = true
			res.bitmaps = persistentBitmapsSize(in.node, cs)
		}
	}
	return res, nil
}

// persistentBitmapsSize is qcow2_get_persistent_dirty_bitmap_size: what
// the source's persistent bitmaps take in a new image of cluster size cs,
// each as if wholly allocated (its data clusters and a cluster-rounded
// bitmap table), plus their directory entries, rounded to a cluster.
func persistentBitmapsSize(n *blockcore.Node, cs uint64) uint64 {
	var size, dir uint64
	for _, d := range n.Bitmaps() {
		if !d.Persistent() {
			continue
		}
		bm := d.Bits()
		dataBytes := divRoundUp(divRoundUp(uint64(bm.Size()), bm.Granularity()), 8)
		clusters := divRoundUp(dataBytes, cs)
		size += clusters*cs + roundUpU(clusters*8, cs)
		// A directory entry: 24 bytes of fields and the name, 8-aligned.
		dir += roundUpU(24+uint64(len(d.Name())), 8)
	}
	return size + roundUpU(dir, cs)
}

// qcow2PreallocSize is qcow2_calc_prealloc_size: the file size of a fully
// allocated image, metadata included.
func qcow2PreallocSize(total, cs uint64, refcountBits int, extL2 bool) uint64 {
	l2eSize := uint64(8)
	if extL2 {
		l2eSize = 16
	}
	aligned := roundUpU(total, cs)
	meta := cs // header
	nl2e := roundUpU(aligned/cs, cs/l2eSize)
	meta += nl2e * l2eSize
	nl1e := roundUpU(nl2e*l2eSize/cs, cs/8)
	meta += nl1e * 8
	meta += qcow2RefcountMetadataSize((meta+aligned)/cs, cs, bits.TrailingZeros(uint(refcountBits)))
	return meta + aligned
}

// qcow2RefcountMetadataSize is qcow2_refcount_metadata_size without the
// generous increase: the fixed point of refcount blocks and table
// clusters needed to count clusters and themselves.
func qcow2RefcountMetadataSize(clusters, cs uint64, refcountOrder int) uint64 {
	perTable := cs / 8
	perBlock := cs * 8 / (1 << refcountOrder)
	var table, blocks, n uint64
	for {
		last := n
		blocks = divRoundUp(clusters+table+blocks, perBlock)
		table = divRoundUp(blocks, perTable)
		n = clusters + blocks + table
		if n == last {
			break
		}
	}
	return (blocks + table) * cs
}

func roundUpU(x, a uint64) uint64   { return (x + a - 1) / a * a }
func divRoundUp(x, a uint64) uint64 { return (x + a - 1) / a }
