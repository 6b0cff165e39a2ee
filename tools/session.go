package tools

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/events"
	"blockd/schema"

	// The drivers the tools open images with, as the daemon registers them.
	_ "blockd/drivers/qcow2"
	_ "blockd/drivers/raw"
)

// openOptions say how a tool opens an image: the blockdev-add options it
// builds and the permissions of its user edge (qemu-img's BlockBackend).
type openOptions struct {
	filename string
	format   string // "" probes, like qemu-img without -f
	readOnly bool
	// forceShare is -U: share every permission (read-only only).
	forceShare bool
	// noBacking opens the format node with "backing": null, as qemu-img
	// opens images it does not read data from (BDRV_O_NO_BACKING).
	noBacking    bool
	cache        cacheMode
	discardUnmap bool
	// perm and shared are the user's permissions on the root node.
	perm, shared blockio.Perm
	// blockdev, when set, are the node's options as given by the user
	// (--image-opts, --target-image-opts); filename and format are unused.
	blockdev *schema.BlockdevOptions
}

// cacheMode is a -t cache mode: the cache options of the node plus
// whether writes are write-through (FUA), as QEMU's BlockBackend write
// cache setting.
type cacheMode struct {
	direct, noFlush, writethrough bool
}

// parseCacheMode is bdrv_parse_cache_mode.
func parseCacheMode(s string) (cacheMode, bool) {
	switch s {
	case "writeback":
		return cacheMode{}, true
	case "writethrough":
		return cacheMode{writethrough: true}, true
	case "none", "off":
		return cacheMode{direct: true}, true
	case "directsync":
		return cacheMode{direct: true, writethrough: true}, true
	case "unsafe":
		return cacheMode{noFlush: true}, true
	}
	return cacheMode{}, false
}

// image is an image opened through a block graph of its own.
type image struct {
	owner  *blockcore.Owner
	graph  *blockcore.Graph
	node   *blockcore.Node
	user   *blockcore.Child
	dev    blockio.Device // node.IO(): the daemon's data path
	format string
	probed bool // the format was guessed
	unsub  func()
}

// pageCached reports that every byte of the image, backing files included,
// lives in files read and written through the page cache: its leaves are
// all file nodes without O_DIRECT.
func (im *image) pageCached() bool {
	cached := false
	_ = im.do(func() error { cached = pageCachedTree(im.node); return nil })
	return cached
}

// pageCacher is the file driver's node.
type pageCacher interface{ PageCached() bool }

func pageCachedTree(n *blockcore.Node) bool {
	if f, ok := n.Impl().(pageCacher); ok {
		return f.PageCached()
	}
	children := n.Children()
	for _, c := range children {
		if !pageCachedTree(c.Node) {
			return false
		}
	}
	return len(children) > 0
}

// backend is the tool's user of the root node, as QEMU's BlockBackend.
type backend struct{}

func (backend) ParentDesc() string                        { return "an unnamed block device" }
func (backend) VertexType() schema.XDbgBlockGraphNodeType { return "block-backend" }
func (backend) VertexName() string                        { return "" }

// probeFormat guesses the format from the first bytes, as QEMU's probing
// does for the formats blockd knows: the qcow2 magic, else raw.
func probeFormat(name string) string {
	f, err := os.Open(name)
	if err != nil {
		return "raw" // the open through the graph reports the error
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == "QFI\xfb" {
		return "qcow2"
	}
	return "raw"
}

// blockdevOptions builds the blockdev-add options of the image.
func (o *openOptions) blockdevOptions(format string) (*schema.BlockdevOptions, error) {
	yes := true
	ro := o.readOnly
	fileOpts, err := blockcore.ProtocolOptions(o.filename)
	if err != nil {
		return nil, err
	}
	name := "img"
	opts := &schema.BlockdevOptions{Driver: schema.BlockdevDriver(format), NodeName: &name, ReadOnly: &ro}
	if o.forceShare {
		opts.ForceShare = &yes
	}
	if o.cache.direct || o.cache.noFlush {
		d, nf := o.cache.direct, o.cache.noFlush
		opts.Cache = &schema.BlockdevCacheOptions{Direct: &d, NoFlush: &nf}
	}
	if o.discardUnmap {
		d := schema.BlockdevDiscardOptions("unmap")
		opts.Discard = &d
	}
	switch format {
	case "qcow2":
		opts.Qcow2 = &schema.BlockdevOptionsQcow2{}
		opts.Qcow2.File = schema.BlockdevRef{Definition: fileOpts}
		if o.noBacking {
			opts.Qcow2.Backing = &schema.BlockdevRefOrNull{Null: &schema.Null{}}
		}
	case "raw":
		opts.Raw = &schema.BlockdevOptionsRaw{}
		opts.Raw.File = schema.BlockdevRef{Definition: fileOpts}
	case "file":
		fileOpts.NodeName, fileOpts.ReadOnly, fileOpts.Cache, fileOpts.Discard = opts.NodeName, opts.ReadOnly, opts.Cache, opts.Discard
		fileOpts.ForceShare = opts.ForceShare
		return fileOpts, nil
	default:
		return nil, fmt.Errorf("Unknown driver '%s'", format)
	}
	return opts, nil
}

// newGraph starts an owner goroutine with an empty graph.
func newGraph(stderr io.Writer) (*blockcore.Owner, *blockcore.Graph) {
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{MessageKey: "msg", LevelKey: "level",
		EncodeLevel: zapcore.LowercaseLevelEncoder})
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(stderr), zapcore.WarnLevel))
	g := blockcore.NewGraph(log, events.NewBus())
	o := blockcore.NewOwner(schema.NewRegistry())
	go o.Run()
	return o, g
}

// openImage opens an image as blockdev-add would, attaches the tool's
// user with o.perm/o.shared (taking the image locks) and reports
// corruption events on stderr the way QEMU's qcow2 driver prints them.
func openImage(o openOptions, stderr io.Writer) (*image, error) {
	im := &image{format: o.format}
	var opts *schema.BlockdevOptions
	if o.blockdev != nil {
		opts, im.format = o.blockdev, string(o.blockdev.Driver)
		if opts.NodeName == nil {
			name := "img"
			opts.NodeName = &name
		}
	} else {
		if im.format == "" {
			im.format, im.probed = probeFormat(o.filename), true
		}
		var err error
		if opts, err = o.blockdevOptions(im.format); err != nil {
			return nil, err
		}
	}
	im.owner, im.graph = newGraph(stderr)
	im.unsub = im.graph.Bus().Subscribe(func(ev events.Event) { printCorruption(stderr, ev) })
	err := im.do(func() error {
		if err := im.graph.Add(opts); err != nil {
			return err
		}
		im.node = im.graph.Lookup(*opts.NodeName)
		c, err := im.graph.AttachUser(backend{}, im.node, "root", o.perm, o.shared)
		im.user = c
		return err
	})
	if err != nil {
		im.close()
		return nil, lockHint(err, o.filename)
	}
	im.dev = im.node.IO()
	return im, nil
}

// warnProbedRaw prints QEMU's warning for an image opened for writing
// whose format was guessed as raw.
func (im *image) warnProbedRaw(w io.Writer, filename string) {
	if im.probed && im.format == "raw" {
		fmt.Fprintf(w, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
			"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
			"         Specify the 'raw' format explicitly to remove the restrictions.\n", filename)
	}
}

// do runs f on the owner goroutine.
func (im *image) do(f func() error) error {
	var err error
	if e := im.owner.Do(func() { err = f() }); e != nil {
		return e
	}
	return err
}

// close detaches the user and closes every node (a format driver's close
// writes back its metadata). Errors of the final write-back are logged by
// the graph; callers that wrote flush first to see them.
func (im *image) close() {
	_ = im.owner.Do(func() {
		if im.user != nil {
			im.graph.DetachUser(im.user)
			im.user = nil
		}
		im.graph.CloseAll()
	})
	im.owner.Stop()
	if im.unsub != nil {
		im.unsub()
	}
}

// lockHint adds QEMU's hint to image lock conflicts.
func lockHint(err error, filename string) error {
	if errors.Is(err, file.ErrLocked) {
		return fmt.Errorf("%w\nIs another process using the image [%s]?", err, filename)
	}
	return err
}

// printCorruption prints BLOCK_IMAGE_CORRUPTED as qcow2_signal_corruption
// reports it on stderr.
func printCorruption(w io.Writer, ev events.Event) {
	if ev.Name != "BLOCK_IMAGE_CORRUPTED" {
		return
	}
	var d struct {
		Msg   string `json:"msg"`
		Fatal bool   `json:"fatal"`
	}
	if json.Unmarshal(ev.Data, &d) != nil {
		return
	}
	if d.Fatal {
		fmt.Fprintf(w, "qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n", d.Msg)
	} else {
		fmt.Fprintf(w, "qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed\n", d.Msg)
	}
}

// errText is an error's message, without Go's wrapping noise for the
// errors blockio defines.
func errText(err error) string {
	switch {
	case errors.Is(err, blockio.ErrOutOfRange):
		return "Input/output error"
	case errors.Is(err, blockio.ErrReadOnly):
		return "Operation not permitted"
	case errors.Is(err, blockio.ErrNotSupported):
		return "Operation not supported"
	}
	return strings.TrimSpace(err.Error())
}

// errnoText is strerror's text for an errno (Go's texts are lower case).
func errnoText(err error) string {
	s := err.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}
