package tools

import (
	"encoding/json"
	"math"
	"runtime"
	"strconv"

	"blockd/blockio"
	"blockd/internal/keyval"
	"blockd/schema"
)

// convert is `blockd img convert`, after qemu-img convert: the sources
// (concatenated when there are several) are opened read-only with their
// backing chains, the target is created with the -o options (or opened
// with -n), and the guest-visible content is copied by copyEngine.
func (t *tool) convert(args []string) int {
	opts, operands, err := getopt(args, optSpec{short: "hf:O:B:F:Cco:l:S:pt:T:qnm:WUr:", permute: true,
		long: map[string]longOpt{
			"help": {'h', false}, "force-share": {'U', false}, "target-image-opts": {'I', false},
			"target-is-zero": {'Z', false}, "salvage": {'s', false}, "bitmaps": {'y', false},
			"image-opts": {'i', false}, "object": {'j', true},
		}})
	if err != nil {
		t.usageErrorf("%s", err)
		return 1
	}
	var (
		fmtIn, outFmt, backing, backingFmt string
		optList                            []string
		skipCreate, tgtImageOpts, quiet    bool
		compressed, copyRange, progressOn  bool
		forceShare, targetIsZero           bool
		explicitSparse, explicitWorkers    bool
		cache, srcCache                    = "unsafe", "writeback"
	)
	e := copyEngine{minSparse: 8 * 512, inOrder: true, workers: 8, bufSize: convertBuf}
	for _, o := range opts {
		switch o.key {
		case 'h':
			t.printf("%s", imgUsage)
			return 0
		case 'f':
			fmtIn = o.arg
		case 'O':
			outFmt = o.arg
		case 'B':
			backing = o.arg
		case 'F':
			backingFmt = o.arg
		case 'C':
			copyRange = true
		case 'c':
			compressed = true
		case 'o':
			optList = append(optList, o.arg)
		case 'S':
			v, err := parseSizeMax(o.arg, math.MaxInt64)
			if err != nil {
				t.sizeError("buffer size for sparse output", err)
				return 1
			}
			if v%512 != 0 || v/512 > maxBufSectors {
				t.errorf("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to %d. "+
					"Select 0 to disable sparse detection (fully allocates output).", maxBufSectors*512)
				return 1
			}
			e.minSparse, explicitSparse = v, true
		case 'p':
			progressOn = true
		case 't':
			cache = o.arg
		case 'T':
			srcCache = o.arg
		case 'q':
			quiet = true
		case 'n':
			skipCreate = true
		case 'm':
			n, err := strconv.ParseInt(o.arg, 0, 64)
			if err != nil || n < 1 || n > maxCoroutines {
				t.errorf("Invalid number of coroutines. Allowed number of coroutines is between 1 and %d", maxCoroutines)
				return 1
			}
			e.workers, explicitWorkers = int(n), true
		case 'W':
			e.inOrder = false
		case 'U':
			forceShare = true
		case 'I':
			tgtImageOpts = true
		case 'Z':
			targetIsZero = true
		case 'r':
			// -r rate limit: accepted for compatibility, as qemu-img applies
			// it only as an upper bound.
			if _, err := parseSizeMax(o.arg, math.MaxInt64); err != nil {
				t.errorf("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for ")
				return 1
			}
		case 's', 'y', 'i', 'j', 'l':
			t.errorf("blockd img convert does not support -%s", optName(o.key))
			return 1
		}
	}
	if outFmt == "" && !tgtImageOpts {
		outFmt = "raw"
	}
	switch {
	case compressed && copyRange:
		t.errorf("Cannot enable copy offloading when -c is used")
		return 1
	case explicitSparse && copyRange:
		t.errorf("Cannot enable copy offloading when -S is used")
		return 1
	case tgtImageOpts && !skipCreate:
		t.errorf("--target-image-opts requires use of -n flag")
		return 1
	case skipCreate && len(optList) > 0:
		t.errorf("-o has no effect when skipping image creation")
		return 1
	case targetIsZero && !skipCreate:
		t.errorf("--target-is-zero requires use of -n flag")
		return 1
	}
	if len(operands) < 2 {
		t.errorf("Must specify image file name")
		return 1
	}
	srcCacheMode, ok := parseCacheMode(srcCache)
	if !ok {
		t.errorf("Invalid source cache option: %s", srcCache)
		return 1
	}
	outName := operands[len(operands)-1]
	srcNames := operands[:len(operands)-1]
	if quiet {
		progressOn = false
	}
	e.prog = newProgress(t, progressOn, 1)
	e.prog.print(0, 100)
	defer e.prog.end()

	for _, name := range srcNames {
		im, err := openImage(openOptions{filename: name, format: fmtIn, readOnly: true, forceShare: forceShare,
			cache: srcCacheMode, perm: blockio.PermConsistentRead, shared: blockio.PermAll}, t.err)
		if err != nil {
			t.errorf("Could not open '%s': %s", name, errText(err))
			e.closeSources()
			return 1
		}
		size, err := im.dev.Size()
		if err != nil {
			t.errorf("Could not get size of %s: %s", name, errText(err))
			im.close()
			e.closeSources()
			return 1
		}
		e.addSource(im, size)
	}
	defer e.closeSources()

	var co *createOpts
	if !skipCreate {
		if !t.checkFormat(outFmt) {
			return 1
		}
		co, err = parseCreateOptions(outFmt, optList, backing, backingFmt, e.total)
		if err != nil {
			t.errorf("%s", err)
			return 1
		}
		backing = co.backingFile
	}
	e.hasBacking = backing != ""
	if targetIsZero && e.hasBacking {
		t.errorf("Cannot use --target-is-zero when the destination image has a backing file")
		return 1
	}
	if len(srcNames) > 1 && e.hasBacking {
		t.errorf("Having a backing file for the target makes no sense when concatenating multiple input images")
		return 1
	}
	if compressed && !skipCreate && outFmt != "qcow2" {
		t.errorf("Compression not supported for this file format")
		return 1
	}
	if !skipCreate {
		if err := createImage(outName, co, t.err); err != nil {
			t.errorf("%s: error while converting %s: %s", outName, outFmt, errText(err))
			return 1
		}
	}
	cacheMode, ok := parseCacheMode(cache)
	if !ok {
		t.errorf("Invalid cache option: %s", cache)
		return 1
	}
	to := openOptions{filename: outName, format: outFmt, cache: cacheMode, discardUnmap: e.minSparse != 0,
		perm: blockio.PermConsistentRead | blockio.PermWrite, shared: blockio.PermAll}
	if tgtImageOpts {
		bo, err := imageOptsToBlockdev(outName)
		if err != nil {
			t.errorf("%s", err)
			return 1
		}
		to.blockdev = bo
	}
	dst, err := openImage(to, t.err)
	if err != nil {
		t.errorf("Could not open '%s': %s", outName, errText(err))
		return 1
	}
	defer dst.close()
	e.dst = dst.dev
	if compressed {
		c, ok := dst.node.Impl().(blockio.Compressor)
		if !ok {
			t.errorf("Compression not supported for this file format")
			return 1
		}
		if c.ClusterSize() > e.bufSize {
			t.errorf("invalid cluster size")
			return 1
		}
		// Whole clusters only, one per request (qemu-img's buffer is
		// one cluster with -c).
		e.cluster, e.bufSize = c.ClusterSize(), c.ClusterSize()
	}
	if skipCreate {
		osize, err := dst.dev.Size()
		if err != nil {
			t.errorf("unable to get output image length: %s", errText(err))
			return 1
		}
		if osize < e.total {
			t.errorf("output file is smaller than input file")
			return 1
		}
	}
	e.targetBackingSize = -1
	if e.hasBacking && !skipCreate {
		if b := dst.node.Backing(); b != nil {
			if sz, err := b.IO().Size(); err == nil {
				e.targetBackingSize = sz
			}
		}
	}
	e.zeroInit = targetIsZero || (!skipCreate && e.minSparse != 0 && !e.hasBacking)
	if !explicitWorkers && !compressed && dst.pageCached() && e.sourcesPageCached() {
		// Between page-cached files a conversion is memory copies, bound
		// by the CPUs, not by latency: requests beyond one per CPU only
		// cycle more 2 MiB buffers through the CPU caches (measured on
		// 2 CPUs: 8 in flight 0.23 s per GiB, 2 in flight 0.17 s).
		// Compression (-c) keeps eight: it was measured with them.
		e.workers = min(e.workers, max(2, runtime.GOMAXPROCS(0)))
	}
	if err := e.run(); err != nil {
		t.errorf("%s", err)
		return 1
	}
	if err := dst.dev.Flush(); err != nil {
		t.errorf("error while flushing %s: %s", outName, errText(err))
		return 1
	}
	e.prog.print(100, 0)
	return 0
}

func optName(k rune) string {
	switch k {
	case 's':
		return "-salvage"
	case 'y':
		return "-bitmaps"
	case 'i':
		return "-image-opts"
	case 'j':
		return "-object"
	}
	return string(k)
}

// imageOptsToBlockdev reads an image given as options
// ("driver=qcow2,file.filename=x.qcow2"), as --image-opts does.
func imageOptsToBlockdev(spec string) (*schema.BlockdevOptions, error) {
	kv, err := keyval.Parse(spec, "")
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(kv)
	if err != nil {
		return nil, err
	}
	var o schema.BlockdevOptions
	if err := schema.DecodeKeyval(raw, &o); err != nil {
		return nil, err
	}
	return &o, nil
}
