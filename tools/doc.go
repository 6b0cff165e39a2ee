// Package tools holds blockd's command line tools, `blockd img` (in the
// style of qemu-img: create, info, map, check, compare, convert, commit,
// rebase, resize, measure, dd), `blockd io` (in the style of qemu-io:
// read, write, discard, flush on one image) and `blockd graph` (the live
// block graph of a running daemon as Graphviz DOT).
//
// The tools run on the daemon's own stack: an image is opened by building
// a blockcore.Graph driven by an Owner goroutine and adding one node with
// the options blockdev-add takes ({"driver": "qcow2", "file": {"driver":
// "file", ...}}); the backing chain named in the header is opened by the
// graph as the daemon opens it, and a user edge is attached to the root
// node with the permissions qemu-img and qemu-io's BlockBackend takes, so
// the file driver holds the same image locks as those tools. Data goes
// through Node.IO(), the gate every daemon request goes through.
//
// Layout:
//
//	dispatch.go  `blockd img ...` / `blockd io ...` entry points
//	session.go   opening an image through the graph, locks, closing
//	getopt.go    getopt_long-style option parsing (qemu-img, qemu-io)
//	size.go      size limits and size printing (parsing is internal/qemu)
//	qjson.go     JSON in QEMU's QDict key order and pretty format
//	create.go    img create
//	info.go      img info
//	mapcmd.go    img map (block status walking the backing chain)
//	check.go     img check (qcow2.Check; with -r the engine is opened on a
//	             file node with OpenOptions.Repair, QEMU's BDRV_O_CHECK)
//	compare.go   img compare
//	convert.go   img convert (copy.go: its copy engine; progress.go: -p)
//	measure.go   img measure (qcow2_measure and raw_measure's figures)
//	resize.go    img resize
//	rebase.go    img rebase, safe and -u
//	commit.go    img commit (into base, then emptying the image)
//	dd.go        img dd
//	graph.go     blockd graph: QMP/JSON-RPC client, DOT writer and reader
//	io.go        blockd io: options, command loop
//	iocmd.go     blockd io commands and their qemu-io-style reports
package tools
