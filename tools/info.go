package tools

import (
	"blockd/internal/qdict"
	"math"
	"strconv"
	"strings"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// info is `blockd img info`: what query-named-block-nodes says of the
// image node, printed as qemu-img info prints it. Like qemu-img, the image
// is opened without its backing file (its header still names it), so
// info works on an image whose backing file is missing; --backing-chain
// then opens each backing file in turn.
func (t *tool) info(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "f:hU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "output": {'O', true}, "backing-chain": {'c', false}, "force-share": {'U', false},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format string
	var jsonOut, chain, force bool
	for _, o := range opts {
		switch o.key {
		case 'f':
			format = o.arg
		case 'O':
			var ok bool
			if jsonOut, ok = t.outputFormat(o.arg); !ok {
				return 1
			}
		case 'c':
			chain = true
		case 'U':
			force = true
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		}
	}
	filename, ok := t.oneImage(operands)
	if !ok {
		return 1
	}
	seen := map[string]bool{}
	var infos []schema.ImageInfo
	for filename != "" {
		if seen[filename] {
			t.errorf("Backing file '%s' creates an infinite loop.", filename)
			return 1
		}
		seen[filename] = true
		info, err := imageInfo(filename, format, force, t)
		if err != nil {
			t.errorf("Could not open '%s': %s", filename, errText(err))
			return 1
		}
		infos = append(infos, info)
		filename, format = "", ""
		if chain && info.FullBackingFilename != nil {
			filename = *info.FullBackingFilename
			if info.BackingFilenameFormat != nil {
				format = *info.BackingFilenameFormat
			}
		}
	}
	if jsonOut {
		if chain {
			list := make([]any, len(infos))
			for i := range infos {
				list[i] = imageInfoDict(&infos[i])
			}
			t.printf("%s\n", prettyJSON(list))
		} else {
			t.printf("%s\n", prettyJSON(imageInfoDict(&infos[0])))
		}
		return 0
	}
	for i := range infos {
		if i > 0 {
			t.printf("\n")
		}
		t.dumpImageInfo(&infos[i])
	}
	return 0
}

// imageInfo opens one image without its backing chain and describes it.
func imageInfo(filename, format string, force bool, t *tool) (schema.ImageInfo, error) {
	im, err := openImage(openOptions{filename: filename, format: format, readOnly: true,
		forceShare: force, noBacking: true, shared: blockio.PermAll}, t.err)
	if err != nil {
		return schema.ImageInfo{}, err
	}
	defer im.close()
	var info schema.ImageInfo
	_ = im.do(func() error {
		info = im.graph.DeviceInfo(im.node, true).Image
		// The graph describes a node whose backing was overridden (here
		// with null) by a json: filename; qemu-img, which does no I/O
		// through the image, pretends it was not and names the file. A
		// file without a name of its own (an rbd image) leaves the
		// node's json: filename, as in qemu-img.
		if f := im.node.File(); f != nil && strings.HasPrefix(info.Filename, "json:") {
			if name := blockcore.Filename(f); !strings.HasPrefix(name, "json:") {
				info.Filename = name
			}
		}
		return nil
	})
	return info, nil
}

// imageInfoDict lays ImageInfo out in its QAPI field order.
func imageInfoDict(in *schema.ImageInfo) qdict.Dict {
	d := qdict.Dict{}.Set("filename", in.Filename).Set("format", in.Format)
	if in.DirtyFlag != nil {
		d = d.Set("dirty-flag", *in.DirtyFlag)
	}
	if in.ActualSize != nil {
		d = d.Set("actual-size", *in.ActualSize)
	}
	d = d.Set("virtual-size", in.VirtualSize)
	if in.ClusterSize != nil {
		d = d.Set("cluster-size", *in.ClusterSize)
	}
	if in.Encrypted != nil {
		d = d.Set("encrypted", *in.Encrypted)
	}
	if in.Compressed != nil {
		d = d.Set("compressed", *in.Compressed)
	}
	for _, f := range []struct {
		key string
		val *string
	}{{"backing-filename", in.BackingFilename}, {"full-backing-filename", in.FullBackingFilename},
		{"backing-filename-format", in.BackingFilenameFormat}} {
		if f.val != nil {
			d = d.Set(f.key, *f.val)
		}
	}
	if in.BackingImage != nil {
		d = d.Set("backing-image", imageInfoDict(in.BackingImage))
	}
	if fs := in.FormatSpecific; fs != nil && fs.Qcow2 != nil {
		d = d.Set("format-specific", qdict.Dict{}.Set("type", string(fs.Type)).Set("data", qcow2InfoDict(&fs.Qcow2.Data)))
	}
	return d
}

func qcow2InfoDict(q *schema.ImageInfoSpecificQCow2) qdict.Dict {
	d := qdict.Dict{}.Set("compat", q.Compat)
	if q.DataFile != nil {
		d = d.Set("data-file", *q.DataFile)
	}
	if q.DataFileRaw != nil {
		d = d.Set("data-file-raw", *q.DataFileRaw)
	}
	if q.ExtendedL2 != nil {
		d = d.Set("extended-l2", *q.ExtendedL2)
	}
	if q.LazyRefcounts != nil {
		d = d.Set("lazy-refcounts", *q.LazyRefcounts)
	}
	if q.Corrupt != nil {
		d = d.Set("corrupt", *q.Corrupt)
	}
	d = d.Set("refcount-bits", q.RefcountBits)
	if len(q.Bitmaps) > 0 {
		var list []any
		for _, b := range q.Bitmaps {
			flags := []any{}
			for _, f := range b.Flags {
				flags = append(flags, string(f))
			}
			list = append(list, qdict.Dict{}.Set("name", b.Name).Set("granularity", int64(b.Granularity)).Set("flags", flags))
		}
		d = d.Set("bitmaps", list)
	}
	return d.Set("compression-type", string(q.CompressionType))
}

// dumpImageInfo is bdrv_image_info_dump.
func (t *tool) dumpImageInfo(in *schema.ImageInfo) {
	disk := "unavailable"
	if in.ActualSize != nil {
		disk = sizeToStr(*in.ActualSize)
	}
	t.printf("image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\ndisk size: %s\n",
		in.Filename, in.Format, sizeToStr(in.VirtualSize), in.VirtualSize, disk)
	if in.Encrypted != nil && *in.Encrypted {
		t.printf("encrypted: yes\n")
	}
	if in.ClusterSize != nil {
		t.printf("cluster_size: %d\n", *in.ClusterSize)
	}
	if in.DirtyFlag != nil && *in.DirtyFlag {
		t.printf("cleanly shut down: no\n")
	}
	if in.BackingFilename != nil {
		t.printf("backing file: %s", *in.BackingFilename)
		switch {
		case in.FullBackingFilename == nil:
			t.printf(" (cannot determine actual path)")
		case *in.FullBackingFilename != *in.BackingFilename:
			t.printf(" (actual path: %s)", *in.FullBackingFilename)
		}
		t.printf("\n")
		if in.BackingFilenameFormat != nil {
			t.printf("backing file format: %s\n", *in.BackingFilenameFormat)
		}
	}
	if fs := in.FormatSpecific; fs != nil && fs.Qcow2 != nil {
		t.printf("Format specific information:\n")
		t.dumpQdict(1, qcow2InfoDict(&fs.Qcow2.Data))
	}
}

// dumpQdict is block/qapi.c's dump_qdict: keys in QDict order with
// dashes turned into spaces.
func (t *tool) dumpQdict(level int, d qdict.Dict) {
	for _, m := range d.Ordered() {
		t.printf("%s%s:", strings.Repeat("    ", level), strings.ReplaceAll(m.Key, "-", " "))
		t.dumpValue(level, m.Val)
	}
}

// dumpValue is dump_qobject after a key or list index: composite values
// on the following lines, one level deeper.
func (t *tool) dumpValue(level int, v any) {
	switch v := v.(type) {
	case qdict.Dict:
		t.printf("\n")
		t.dumpQdict(level+1, v)
	case []any:
		t.printf("\n")
		for i, e := range v {
			t.printf("%s[%d]:", strings.Repeat("    ", level+1), i)
			t.dumpValue(level+1, e)
		}
	default:
		t.printf(" %v\n", v)
	}
}

// sizeToStr is QEMU's size_to_str: three significant digits and a binary
// unit, switching unit at 1000.
func sizeToStr(v int64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, e := math.Frexp(float64(uint64(v)) / (1000.0 / 1024.0))
	i := (e - 1) / 10
	if i < 0 {
		i = 0
	}
	div := float64(uint64(1) << (10 * i))
	return strconv.FormatFloat(float64(uint64(v))/div, 'g', 3, 64) + " " + suffixes[i] + "B"
}
