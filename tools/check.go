package tools

import (
	"blockd/internal/qdict"
	"fmt"

	"blockd/blockio"
	"blockd/drivers/qcow2"
)

// checker is what the qcow2 node offers beyond blockio.Device.
type checker interface {
	Check(repair bool) (qcow2.CheckResult, error)
}

// check is `blockd img check`, with qemu-img check's output and exit
// codes: 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 format
// without checks.
//
// Without -r the image is opened through the graph read-only, with its
// backing chain, as qemu-img check opens it, and qcow2's Check runs on
// the node. With -r the image must be opened read-write even when it is
// marked corrupt or dirty, and without the automatic repair of dirty
// images at open (QEMU's BDRV_O_CHECK): the file is opened as a file
// node in the graph, holding the locks a qcow2 node takes on its file,
// and the qcow2 engine is opened on that node with OpenOptions.Repair.
func (t *tool) check(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:r:T:qU", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "output": {'O', true}, "repair": {'r', true}, "force-share": {'U', false},
	}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var format, repair string
	var jsonOut, quiet, force bool
	for _, o := range opts {
		switch o.key {
		case 'f':
			format = o.arg
		case 'O':
			var ok bool
			if jsonOut, ok = t.outputFormat(o.arg); !ok {
				return 1
			}
		case 'r':
			if o.arg != "leaks" && o.arg != "all" {
				t.errorf("Unknown option value for -r (expecting 'leaks' or 'all'): %s", o.arg)
				return 1
			}
			repair = o.arg
		case 'q':
			quiet = true
		case 'U':
			force = true
		case 'T':
			if _, ok := parseCacheMode(o.arg); !ok {
				t.errorf("Invalid source cache option: %s", o.arg)
				return 1
			}
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		}
	}
	filename, ok := t.oneImage(operands)
	if !ok {
		return 1
	}
	if repair != "" && force {
		t.errorf("Could not open '%s': force-share=on can only be used with read-only images", filename)
		return 1
	}
	if format == "" {
		format = probeFormat(filename)
	}
	var res qcow2.CheckResult
	if format != "qcow2" || repair == "" {
		im, err := openImage(openOptions{filename: filename, format: format, readOnly: true, forceShare: force,
			perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
		if err != nil {
			t.errorf("Could not open '%s': %s", filename, errText(err))
			return 1
		}
		var c checker
		_ = im.do(func() error { c, _ = im.node.Impl().(checker); return nil })
		if c == nil {
			im.close()
			t.errorf("This image format does not support checks")
			return 63
		}
		res, err = c.Check(false)
		im.close()
		if err != nil {
			t.errorf("Check failed: %s", errText(err))
			return 1
		}
	} else {
		var err error
		if res, err = t.repair(filename, repair == "all"); err != nil {
			t.errorf("%s", errText(err))
			return 1
		}
	}
	for _, m := range res.Messages {
		fmt.Fprintln(t.err, m)
	}
	if !jsonOut && (res.CorruptionsFixed > 0 || res.LeaksFixed > 0) && !quiet {
		t.printf("The following inconsistencies were found and repaired:\n\n"+
			"    %d leaked clusters\n    %d corruptions\n\nDouble checking the fixed image now...\n",
			res.LeaksFixed, res.CorruptionsFixed)
	}
	if jsonOut {
		t.printf("%s\n", prettyJSON(checkDict(filename, format, &res)))
	} else if !quiet {
		t.dumpCheck(&res)
	}
	switch {
	case res.CheckErrors > 0:
		t.errorf("Check failed")
		return 1
	case res.Corruptions > 0:
		return 2
	case res.Leaks > 0:
		return 3
	}
	return 0
}

// repair opens the qcow2 engine on a file node of the graph and checks
// with repair. all == false (-r leaks) repairs only when the image has
// no corruption, since the engine repairs everything or nothing.
func (t *tool) repair(filename string, all bool) (qcow2.CheckResult, error) {
	im, err := openImage(openOptions{filename: filename, format: "file",
		// What a writable qcow2 node takes on its file child.
		perm:   blockio.PermConsistentRead | blockio.PermWrite | blockio.PermResize,
		shared: blockio.PermAll &^ (blockio.PermWrite | blockio.PermResize)}, t.err)
	if err != nil {
		return qcow2.CheckResult{}, fmt.Errorf("Could not open '%s': %s", filename, errText(err))
	}
	defer im.close()
	img, err := qcow2.Open(im.dev, qcow2.OpenOptions{Repair: true})
	if err != nil {
		return qcow2.CheckResult{}, fmt.Errorf("Could not open '%s': %s", filename, errText(err))
	}
	defer img.Close()
	if !all {
		res, err := img.Check(false)
		if err != nil || res.Corruptions > 0 || res.CheckErrors > 0 {
			return res, err
		}
	}
	return img.Check(true)
}

// checkDict lays out ImageCheck in QAPI field order; counts that are
// zero are left out, as qemu-img does.
func checkDict(filename, format string, r *qcow2.CheckResult) qdict.Dict {
	d := qdict.Dict{}.Set("filename", filename).Set("format", format).Set("check-errors", int64(r.CheckErrors))
	for _, f := range []struct {
		key string
		val int64
	}{
		{"image-end-offset", r.ImageEndOffset},
		{"corruptions", int64(r.Corruptions)},
		{"leaks", int64(r.Leaks)},
		{"corruptions-fixed", int64(r.CorruptionsFixed)},
		{"leaks-fixed", int64(r.LeaksFixed)},
		{"total-clusters", r.TotalClusters},
		{"allocated-clusters", r.AllocatedClusters},
		{"fragmented-clusters", r.FragmentedClusters},
		{"compressed-clusters", r.CompressedClusters},
	} {
		if f.val != 0 {
			d = d.Set(f.key, f.val)
		}
	}
	return d
}

// dumpCheck is dump_human_image_check.
func (t *tool) dumpCheck(r *qcow2.CheckResult) {
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		t.printf("No errors were found on the image.\n")
	} else {
		if r.Corruptions > 0 {
			t.printf("\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks > 0 {
			t.printf("\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors > 0 {
			t.printf("\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		t.printf("%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset != 0 {
		t.printf("Image end offset: %d\n", r.ImageEndOffset)
	}
}
