package tools

import (
	"errors"
	"fmt"
	"math"

	"blockd/blockcore"
	"blockd/blockio"
)

// mapEntry is qemu-img map's MapEntry.
type mapEntry struct {
	start, length int64
	depth         int64
	present       bool
	zero, data    bool
	hasOffset     bool
	offset        int64
	filename      string // of the node holding the data, with hasOffset
}

// chainStatus is qemu-img map's get_block_status: the status of the
// range at off in the first layer of the chain that defines it, walking
// down the backing chain from n. As bdrv_co_block_status does, a range no
// layer allocates reads as zero in the last layer (no backing) or past
// the end of the backing file, and the answer from a backing layer is
// limited to that layer's size.
func chainStatus(n *blockcore.Node, off, length int64) (mapEntry, error) {
	var depth int64
	for {
		st, err := n.IO().BlockStatus(off, length)
		if err != nil {
			return mapEntry{}, err
		}
		if st.Length <= 0 {
			return mapEntry{}, fmt.Errorf("block status of %s at %d: empty range", n.Name(), off)
		}
		length = min(length, st.Length)
		flags := st.Flags
		var next *blockcore.Node
		if flags&(blockio.StatusData|blockio.StatusZero) == 0 {
			if next = n.Backing(); next == nil {
				flags |= blockio.StatusZero
			} else {
				bsz, err := next.IO().Size()
				if err != nil {
					return mapEntry{}, err
				}
				if off >= bsz {
					flags |= blockio.StatusZero
				} else {
					length = min(length, bsz-off)
				}
			}
		}
		if flags&(blockio.StatusData|blockio.StatusZero) != 0 {
			e := mapEntry{start: off, length: length, depth: depth,
				present: flags&blockio.StatusAllocated != 0,
				zero:    flags&blockio.StatusZero != 0,
				data:    flags&blockio.StatusData != 0,
			}
			if flags&blockio.StatusOffsetValid != 0 {
				e.hasOffset, e.offset = true, st.HostOffset
				if f := n.File(); f != nil {
					e.filename = blockcore.Filename(f)
				} else {
					e.filename = blockcore.Filename(n)
				}
			}
			return e, nil
		}
		n = next
		depth++
	}
}

// mergeable is qemu-img's entry_mergeable.
func mergeable(curr, next *mapEntry) bool {
	if curr.length == 0 {
		return false
	}
	if curr.zero != next.zero || curr.data != next.data || curr.depth != next.depth ||
		curr.present != next.present || curr.hasOffset != next.hasOffset ||
		(curr.filename == "") != (next.filename == "") || curr.filename != next.filename {
		return false
	}
	return !curr.hasOffset || curr.offset+curr.length == next.offset
}

// imgMap is `blockd img map`.
func (t *tool) imgMap(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "f:s:l:hU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "output": {'O', true}, "start-offset": {'s', true},
		"max-length": {'l', true}, "force-share": {'U', false},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format string
	var jsonOut, force bool
	start, maxLen := int64(0), int64(math.MaxInt64)
	for _, o := range opts {
		switch o.key {
		case 'f':
			format = o.arg
		case 'O':
			var ok bool
			if jsonOut, ok = t.outputFormat(o.arg); !ok {
				return 1
			}
		case 's', 'l':
			v, err := parseSizeMax(o.arg, math.MaxInt64)
			if err != nil {
				what := "offset"
				if o.key == 'l' {
					what = "length"
				}
				t.sizeError(what, err)
				return 1
			}
			if o.key == 's' {
				start = v
			} else {
				maxLen = v
			}
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
	im, err := openImage(openOptions{filename: filename, format: format, readOnly: true, forceShare: force,
		perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", filename, errText(err))
		return 1
	}
	defer im.close()
	length, err := im.dev.Size()
	if err != nil {
		t.errorf("%s", errText(err))
		return 1
	}
	if maxLen < length-start {
		length = start + maxLen
	}
	if jsonOut {
		t.printf("[")
	} else {
		t.printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	}
	curr := mapEntry{start: start}
	for curr.start+curr.length < length {
		off := curr.start + curr.length
		next, err := chainStatus(im.node, off, min(1<<30, length-off))
		if err != nil {
			t.errorf("Could not read file metadata: %s", errText(err))
			return 1
		}
		if mergeable(&curr, &next) {
			curr.length += next.length
			continue
		}
		if curr.length > 0 {
			if err := t.dumpMapEntry(jsonOut, &curr, &next); err != nil {
				t.errorf("%s", err)
				return 1
			}
		}
		curr = next
	}
	if err := t.dumpMapEntry(jsonOut, &curr, nil); err != nil {
		t.errorf("%s", err)
		return 1
	}
	if jsonOut {
		t.printf("]\n")
	}
	return 0
}

// dumpMapEntry is qemu-img's dump_map_entry; the human format merges
// zero and unallocated ranges by rewriting next.
func (t *tool) dumpMapEntry(jsonOut bool, e, next *mapEntry) error {
	if jsonOut {
		t.printf(`{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
			e.start, e.length, e.depth, e.present, e.zero, e.data)
		if e.hasOffset {
			t.printf(`, "offset": %d`, e.offset)
		}
		t.printf("}")
		if next != nil {
			t.printf(",\n")
		}
		return nil
	}
	if e.data && !e.hasOffset {
		return errors.New("File contains external, encrypted or compressed clusters.")
	}
	if e.data && !e.zero {
		t.printf("%-16s%-16s%-16s%s\n", altHex(e.start), altHex(e.length), altHex(e.offset), e.filename)
	}
	if next != nil && (!next.data || next.zero) {
		next.data, next.zero = false, true
	}
	return nil
}

// altHex is printf's %#x: no prefix for zero.
func altHex(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}
