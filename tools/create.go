package tools

import (
	"blockd/internal/keyval"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"blockd/blockio"
	"blockd/drivers/qcow2"
)

// create is `blockd img create`, after qemu-img create: the options are
// collected as key=value pairs (-b and -F are backing_file and
// backing_fmt), the backing file is opened to check it and to take its
// size, the "Formatting ..." line is printed, and the image is written
// through a file node that holds qemu's creation locks (write and resize,
// sharing all but resize).
func (t *tool) create(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "F:b:f:ho:qu", permute: true,
		long: map[string]longOpt{"help": {'h', false}}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	format := "raw"
	var optList []string
	var backing, backingFmt string
	quiet, unsafe := false, false
	for _, o := range opts {
		switch o.key {
		case 'f':
			format = o.arg
		case 'o':
			optList = append(optList, o.arg)
		case 'b':
			backing = o.arg
		case 'F':
			backingFmt = o.arg
		case 'q':
			quiet = true
		case 'u':
			unsafe = true
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		}
	}
	if len(operands) < 1 {
		t.usageErrorf("Expecting image file name")
		return 1
	}
	if len(operands) > 2 {
		t.usageErrorf("Unexpected argument: %s", operands[2])
		return 1
	}
	filename := operands[0]
	size := int64(-1)
	if len(operands) == 2 {
		v, err := parseSizeMax(operands[1], math.MaxInt64)
		if err != nil {
			t.sizeError("image size", err)
			return 1
		}
		size = v
	}
	if !t.checkFormat(format) {
		return 1
	}
	fail := func(format string, args ...any) int {
		t.errorf("%s: %s", filename, fmt.Sprintf(format, args...))
		return 1
	}
	co, err := parseCreateOptions(format, optList, backing, backingFmt, size)
	if err != nil {
		return fail("%s", err)
	}
	if co.backingFile != "" && !unsafe {
		bsize, err := t.openBacking(filename, co)
		if err != nil {
			if errors.Is(err, errNoBackingFormat) {
				// QEMU's hint ends without a newline.
				t.out.Flush()
				fmt.Fprintf(t.err, "%s: %s: %s", t.name, filename, err)
				return 1
			}
			return fail("%s", err)
		}
		if co.size < 0 {
			co.size = bsize
		}
	}
	if co.size < 0 {
		return fail("Image creation needs a size parameter")
	}
	if !quiet {
		t.printf("Formatting '%s', fmt=%s %s\n", filename, format, co.describe())
		t.out.Flush()
	}
	if err := createImage(filename, co, t.err); err != nil {
		return fail("%s", err)
	}
	return 0
}

func (t *tool) sizeError(what string, err error) {
	if errors.Is(err, errSizeRange) {
		t.errorf("Invalid %s specified. Must be between 0 and %d.", what, int64(math.MaxInt64))
		return
	}
	t.errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"+
		"blockd img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", what)
}

// createOpts are the parsed -o options; raw keeps the strings for the
// "Formatting" line, which prints them as given.
type createOpts struct {
	format      string
	size        int64
	backingFile string
	backingFmt  string
	qcow2       qcow2.CreateOptions
	raw         map[string]string
}

// qcow2CreateKeys are the qcow2 creation options blockd understands (the
// others QEMU has are refused with "Invalid parameter").
var qcow2CreateKeys = []string{"size", "compat", "backing_file", "backing_fmt", "cluster_size",
	"preallocation", "lazy_refcounts", "refcount_bits", "compression_type", "extended_l2"}

func parseCreateOptions(format string, list []string, backing, backingFmt string, size int64) (*createOpts, error) {
	co := &createOpts{format: format, size: size, raw: map[string]string{}}
	keys := []string{"size", "preallocation"}
	if format == "qcow2" {
		keys = qcow2CreateKeys
	}
	// -b and -F come after -o, as qemu-img appends them to the options.
	if backing != "" {
		list = append(list, "backing_file="+escapeOpt(backing))
	}
	if backingFmt != "" {
		list = append(list, "backing_fmt="+escapeOpt(backingFmt))
	}
	for _, s := range list {
		kvs, err := splitOpts(s)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			if !contains(keys, kv[0]) {
				if (kv[0] == "backing_file" || kv[0] == "backing_fmt") && format == "raw" {
					return nil, fmt.Errorf("Backing file not supported for file format 'raw'")
				}
				return nil, fmt.Errorf("Invalid parameter '%s'", kv[0])
			}
			co.raw[kv[0]] = kv[1]
		}
	}
	if v, ok := co.raw["size"]; ok {
		if size >= 0 {
			return nil, errors.New("The image size must be specified only once")
		}
		n, err := parseSizeMax(v, math.MaxInt64)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
		}
		co.size = n
	}
	if v, ok := co.raw["preallocation"]; ok && v != "off" {
		return nil, fmt.Errorf("Unsupported preallocation mode '%s' (blockd creates images with preallocation=off only)", v)
	}
	co.backingFile, co.backingFmt = co.raw["backing_file"], co.raw["backing_fmt"]
	if format != "qcow2" {
		return co, nil
	}
	q := &co.qcow2
	q.Compat = co.raw["compat"]
	if v, ok := co.raw["cluster_size"]; ok {
		n, err := parseSizeMax(v, math.MaxInt64)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'cluster_size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
		}
		q.ClusterSize = n
		co.raw["cluster_size"] = strconv.FormatInt(n, 10)
	}
	for key, dst := range map[string]*bool{"lazy_refcounts": &q.LazyRefcounts, "extended_l2": &q.ExtendedL2} {
		if v, ok := co.raw[key]; ok {
			b, ok := parseBool(v)
			if !ok {
				return nil, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
			}
			*dst = b
		}
	}
	if v, ok := co.raw["refcount_bits"]; ok {
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'refcount_bits' expects a number")
		}
		if n == 0 || n > 64 {
			n = 3 // rejected below with QEMU's text
		}
		q.RefcountBits = int(n)
	}
	if v, ok := co.raw["compression_type"]; ok && v != "zlib" {
		if v != "zstd" {
			return nil, fmt.Errorf("Parameter 'compression-type' does not accept value '%s'", v)
		}
		q.CompressionType = v
	}
	switch q.Compat {
	case "", "0.10", "1.1", "v2", "v3":
	default:
		return nil, fmt.Errorf("Parameter 'version' does not accept value '%s'", q.Compat)
	}
	return co, nil
}

// describe is the option list of the "Formatting" line, in qemu-img's
// order; options not given print their defaults where qemu-img does.
func (co *createOpts) describe() string {
	var parts []string
	add := func(key, def string) {
		if v, ok := co.raw[key]; ok {
			parts = append(parts, key+"="+v)
		} else if def != "" {
			parts = append(parts, key+"="+def)
		}
	}
	if co.format == "raw" {
		parts = append(parts, fmt.Sprintf("size=%d", co.size))
		add("preallocation", "")
		return strings.Join(parts, " ")
	}
	add("cluster_size", "65536")
	add("extended_l2", "off")
	add("preallocation", "")
	add("compression_type", "zlib")
	parts = append(parts, fmt.Sprintf("size=%d", co.size))
	add("compat", "")
	add("backing_file", "")
	add("backing_fmt", "")
	add("lazy_refcounts", "off")
	add("refcount_bits", "16")
	return strings.Join(parts, " ")
}

var errNoBackingFormat = errors.New("Backing file specified without backing format")

// openBacking opens the backing file through the graph, read-only and
// sharing everything, with its own backing chain (as bdrv_img_create
// does), and returns its size.
func (t *tool) openBacking(filename string, co *createOpts) (int64, error) {
	path := co.backingFile
	if !filepath.IsAbs(path) && !strings.Contains(path, "://") {
		path = filepath.Join(filepath.Dir(filename), path)
	}
	im, err := openImage(openOptions{filename: path, format: co.backingFmt, readOnly: true, forceShare: true,
		perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
	if err != nil {
		return 0, fmt.Errorf("%s\nCould not open backing image.", errText(err))
	}
	defer im.close()
	if co.backingFmt == "" {
		return 0, fmt.Errorf("%w\nDetected format of %s.", errNoBackingFormat, im.format)
	}
	size, err := im.dev.Size()
	if err != nil {
		return 0, fmt.Errorf("Could not get size of '%s': %s", path, errText(err))
	}
	return size, nil
}

// createImage makes the file, opens it as a file node holding the
// creation locks and writes the format onto it.
func createImage(filename string, co *createOpts, stderr io.Writer) error {
	f, err := os.OpenFile(filename, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("Could not create '%s': %s", filename, errnoText(err))
	}
	f.Close()
	im, err := openImage(openOptions{filename: filename, format: "file",
		perm:   blockio.PermWrite | blockio.PermResize,
		shared: blockio.PermAll &^ blockio.PermResize}, stderr)
	if err != nil {
		return err
	}
	defer im.close()
	size := (co.size + 511) &^ 511
	if co.format == "raw" {
		if err := im.dev.Truncate(0); err != nil {
			return err
		}
		return im.dev.Truncate(size)
	}
	q := co.qcow2
	q.Size, q.BackingFile, q.BackingFormat = size, co.backingFile, co.backingFmt
	return qcow2.Create(im.dev, q)
}

// splitOpts splits a QemuOpts string: "a=1,b=x,,y" (",," is a comma).
func splitOpts(s string) ([][2]string, error) {
	var out [][2]string
	for _, p := range keyval.Split(s) {
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("Invalid parameter '%s'", k)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// parseBool is qapi_bool_parse.
func parseBool(s string) (bool, bool) {
	switch s {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
