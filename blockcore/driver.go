package blockcore

import (
	"strings"

	"blockd/blockio"
	"blockd/schema"
)

// Options are a node's decoded blockdev-add options.
type Options = *schema.BlockdevOptions

// Impl is a driver's state for one open node: its data path plus Close.
// Optional interfaces below add permissions, child permissions, image
// information and reopen.
type Impl interface {
	blockio.Device
	Close() error
}

// PermHandler is implemented by drivers that act on permissions (the file
// driver mirrors them into image locks): check may prepare, then exactly
// one of set or abort follows.
type PermHandler interface {
	CheckPerm(perm, shared blockio.Perm) error
	SetPerm(perm, shared blockio.Perm)
	AbortPerm()
}

// ChildPermer lets a driver choose its children's permissions instead of
// DefaultPerms.
type ChildPermer interface {
	ChildPerm(c *Child, st NodeState, perm, shared blockio.Perm) (blockio.Perm, blockio.Perm)
}

// Driver describes a block driver to the graph.
type Driver struct {
	Name string
	// Protocol drivers (file, null-co) have no children.
	Protocol bool
	// Format drivers open a "file" child; those with SupportsBacking also
	// get a backing chain.
	Format          bool
	SupportsBacking bool
	// Filter drivers pass their one child through (raw without offset).
	Filter bool
	// IsFilter is QEMU's is_filter: the node stands for its filtered child
	// (throttle, copy-on-read, blkdebug, job filters; not raw). Queries
	// list that child as its backing image and bdrv_get_info forwards to
	// it.
	IsFilter bool
	// OwnChildren: the driver opens its children itself, after the node
	// got its name (bdrv_file_open drivers such as blkdebug, quorum); a
	// format's file is opened before.
	OwnChildren bool
	// CheckOptions, when set, validates the options before any child is
	// opened (quorum checks its threshold first).
	CheckOptions func(*schema.BlockdevOptions) error
	// ChildList: json: filenames list the node's children under
	// "children" (quorum).
	ChildList bool
	// FileChild names the primary child when it is not "file" (blkdebug
	// and blkverify open theirs as "image"; QEMU's bs->file all the same).
	FileChild string
	// Open creates the node's state; children named in the options have
	// already been attached and are reachable through oc.
	Open func(oc *OpenContext) (Impl, error)
	// Create, for drivers that can, creates an image file of the given
	// size; formats with SupportsBacking name backing (in backingFmt) in
	// the header unless it is empty (CreateImage checks the rest).
	Create func(filename string, size int64, backing, backingFmt string) error
	// FilenamePrefix and ParseFilename let a protocol driver be named by
	// a filename (an image header's backing file, a tool's argument),
	// as "rbd:pool/image" names an rbd image (bdrv_parse_filename).
	FilenamePrefix string
	ParseFilename  func(name string) (*schema.BlockdevOptions, error)
}

// ProtocolOptions are the options of the protocol node a filename names:
// a driver's own syntax where the name starts with its prefix, else a
// file.
func ProtocolOptions(name string) (*schema.BlockdevOptions, error) {
	for _, d := range drivers {
		if d.FilenamePrefix != "" && d.ParseFilename != nil && strings.HasPrefix(name, d.FilenamePrefix) {
			return d.ParseFilename(name)
		}
	}
	return &schema.BlockdevOptions{Driver: "file", File: &schema.BlockdevOptionsFile{Filename: name}}, nil
}

// Drainer is implemented by drivers whose requests may wait on something
// other than their children (a throttle group): DrainBegin lets every
// request through at once until DrainEnd, so that a drained section never
// waits for a limit. Calls nest.
type Drainer interface {
	DrainBegin()
	DrainEnd()
}

var drivers = map[string]*Driver{}

// RegisterDriver makes a driver available to blockdev-add; drivers
// register themselves from init functions.
func RegisterDriver(d *Driver) {
	if _, dup := drivers[d.Name]; dup {
		panic("blockcore: driver registered twice: " + d.Name)
	}
	drivers[d.Name] = d
}

// fileChildName is the name of the driver's primary child.
func (d *Driver) fileChildName() string {
	if d.FileChild != "" {
		return d.FileChild
	}
	return "file"
}

// LookupDriver returns a registered driver.
func LookupDriver(name string) (*Driver, bool) {
	d, ok := drivers[name]
	return d, ok
}
