package tools

import (
	"math"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

// bitmapAction is one --add, --remove, --clear, --enable, --disable or
// --merge SOURCE, applied in command-line order.
type bitmapAction struct {
	op  string
	src string // --merge's source bitmap
}

// bitmap is `blockd img bitmap (--merge SOURCE | --add | --remove |
// --clear | --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]
// [-g GRANULARITY] [-f FMT] FILENAME BITMAP`, after qemu-img bitmap: each
// action runs as the matching block-dirty-bitmap-* command on the image
// opened read-write through a graph (a new bitmap is persistent), and the
// bitmaps are stored back when the image closes.
func (t *tool) bitmap(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "b:f:F:g:hq", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "add": {'a', false}, "remove": {'r', false}, "clear": {'c', false},
		"enable": {'e', false}, "disable": {'d', false}, "merge": {'m', true},
		"image-opts": {'i', false}, "object": {'j', true},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, srcFile, srcFmt string
	var granularity int64
	var actions []bitmapAction
	add, merge := false, false
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			format = o.arg
		case 'b':
			srcFile = o.arg
		case 'F':
			srcFmt = o.arg
		case 'g':
			n, err := parseSizeMax(o.arg, math.MaxInt64)
			if err != nil {
				t.errorf("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for\n" +
					"kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
				return 1
			}
			granularity = n
		case 'a':
			actions, add = append(actions, bitmapAction{op: "add"}), true
		case 'r':
			actions = append(actions, bitmapAction{op: "remove"})
		case 'c':
			actions = append(actions, bitmapAction{op: "clear"})
		case 'e':
			actions = append(actions, bitmapAction{op: "enable"})
		case 'd':
			actions = append(actions, bitmapAction{op: "disable"})
		case 'm':
			actions, merge = append(actions, bitmapAction{op: "merge", src: o.arg}), true
		case 'i', 'j':
			t.errorf("blockd img bitmap does not support -%s", optName(o.key))
			return 1
		}
	}
	switch {
	case len(actions) == 0:
		t.errorf("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
		return 1
	case granularity != 0 && !add:
		t.errorf("granularity only supported with --add")
		return 1
	case srcFmt != "" && srcFile == "":
		t.errorf("-F only supported with -b")
		return 1
	case srcFile != "" && !merge:
		t.errorf("Merge bitmap source file only supported with --merge")
		return 1
	case len(operands) != 2:
		t.errorf("Expecting filename and bitmap name")
		return 1
	}
	filename, name := operands[0], operands[1]
	if format != "" && !t.checkFormat(format) {
		return 1
	}
	im, err := openImage(openOptions{filename: filename, format: format, noBacking: true,
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll &^ blockio.PermWrite}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	im.warnProbedRaw(t.err, filename)
	srcNode := im.node
	if srcFile != "" {
		src, err := openImage(openOptions{filename: srcFile, format: srcFmt, readOnly: true, noBacking: true,
			perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
		if err != nil {
			t.errorf("Could not open '%s': %s", srcFile, errText(err))
			return 1
		}
		defer src.close()
		srcNode = src.node
	}
	node := im.node.Name()
	for _, a := range actions {
		err := im.do(func() error {
			g := im.graph
			bm := &schema.BlockDirtyBitmap{Node: node, Name: name}
			var act *blockcore.BitmapAction
			var err error
			switch a.op {
			case "add":
				yes := true
				args := &schema.BlockDirtyBitmapAddArgs{Node: node, Name: name, Persistent: &yes}
				if granularity != 0 {
					gran := uint32(min(granularity, math.MaxUint32))
					args.Granularity = &gran
				}
				act, err = g.PrepareBitmapAdd(args)
			case "remove":
				act, err = g.PrepareBitmapRemove(bm)
			case "clear":
				act, err = g.PrepareBitmapClear(bm)
			case "enable", "disable":
				act, err = g.PrepareBitmapEnable(bm, a.op == "enable")
			case "merge":
				act, err = g.PrepareBitmapMergeFrom(node, name, srcNode, a.src)
			}
			if err != nil {
				return err
			}
			act.Commit()
			return nil
		})
		if err != nil {
			t.errorf("Operation %s on bitmap %s failed: %s", a.op, name, errText(err))
			return 1
		}
	}
	return 0
}
