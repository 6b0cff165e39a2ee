package tools

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

// Dispatch runs `blockd img ...`, `blockd io ...` or `blockd graph ...` when args (the
// command line without the program name) start with one of those words;
// otherwise it returns handled == false and the daemon parses args.
func Dispatch(args []string) (code int, handled bool) {
	if len(args) == 0 {
		return 0, false
	}
	std := Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	switch args[0] {
	case "img":
		return Img(args[1:], std), true
	case "io":
		return IO(args[1:], std), true
	case "graph":
		return Graph(args[1:], std), true
	}
	return 0, false
}

// Stdio are a tool's standard streams.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// tool carries the streams and the name messages are prefixed with.
type tool struct {
	name string // "blockd img", "blockd io"
	in   io.Reader
	out  *bufio.Writer
	err  io.Writer
}

func newTool(name string, s Stdio) *tool {
	return &tool{name: name, in: s.In, out: bufio.NewWriterSize(s.Out, 64<<10), err: s.Err}
}

// errorf prints an error as QEMU's error_report does: "program: message".
func (t *tool) errorf(format string, args ...any) {
	t.out.Flush()
	fmt.Fprintf(t.err, "%s: %s\n", t.name, fmt.Sprintf(format, args...))
}

func (t *tool) printf(format string, args ...any) { fmt.Fprintf(t.out, format, args...) }

const imgUsage = `usage: blockd img COMMAND [OPTIONS] ...

blockd's image tool, in the style of qemu-img, on the daemon's drivers.

Commands:
  create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] FILE [SIZE]
  info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE
  map [-f FMT] [--output=human|json] [-s START] [-l LENGTH] [-U] FILE
  check [-q] [-f FMT] [--output=human|json] [-r leaks|all] [-U] FILE
  compare [-q] [-f FMT] [-F FMT] [-s] [-U] FILE1 FILE2
  convert [-U] [-p] [-q] [-n] [-W] [-f FMT] [-t CACHE] [-T SRC_CACHE] [-O OUTPUT_FMT]
          [-B BACKING [-F BACKING_FMT]] [-o OPTIONS] [-S SPARSE_SIZE] [-m NUM] [--target-image-opts]
          [--target-is-zero] FILE [FILE2 [...]] OUTPUT
  commit [-q] [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] FILE
  rebase [-U] [-q] [-f FMT] [-t CACHE] [-T SRC_CACHE] [-p] [-u] -b BACKING [-F BACKING_FMT] FILE
  resize [-f FMT] [--preallocation=PREALLOC] [-q] [--shrink] FILE [+ | -]SIZE
  measure [--output=human|json] [-O OUTPUT_FMT] [-o OPTIONS] [--size N | [-f FMT] [-U] FILE]
  dd [-U] [-f FMT] [-O OUTPUT_FMT] [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
         [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [-f FMT] FILE BITMAP
  snapshot [-U] [-q] [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILE
  amend [-q] [-f FMT] -o OPTIONS FILE   (qcow2: size, lazy_refcounts)

FMT is qcow2 or raw (probed when not given). SIZE takes k, M, G, T, P, E
suffixes. OPTIONS for qcow2: size, compat (0.10|1.1), cluster_size,
lazy_refcounts (on|off), refcount_bits, extended_l2 (on|off),
backing_file, backing_fmt, compression_type (zlib), preallocation (off).
-U (force share) opens read-only without taking locks that conflict with
another user of the image. convert -c (compressed output) is refused: the
qcow2 engine reads compressed clusters but does not write them.

blockd graph (--socket PATH | --jsonrpc PATH) [--format dot|svg|png|json]
draws the block graph of a running daemon.
`

// Img runs `blockd img ARGS`.
func Img(args []string, s Stdio) int {
	t := newTool("blockd img", s)
	defer t.out.Flush()
	if len(args) == 0 {
		t.usageErrorf("Not enough arguments")
		return 1
	}
	switch args[0] {
	case "-h", "--help", "help":
		t.printf("%s", imgUsage)
		return 0
	case "create":
		return t.create(args[1:])
	case "info":
		return t.info(args[1:])
	case "map":
		return t.imgMap(args[1:])
	case "check":
		return t.check(args[1:])
	case "compare":
		return t.compare(args[1:])
	case "snapshot":
		return t.snapshot(args[1:])
	case "convert":
		return t.convert(args[1:])
	case "measure":
		return t.measure(args[1:])
	case "resize":
		return t.resize(args[1:])
	case "rebase":
		return t.rebase(args[1:])
	case "commit":
		return t.commit(args[1:])
	case "dd":
		return t.dd(args[1:])
	case "bitmap":
		return t.bitmap(args[1:])
	case "amend":
		return t.amend(args[1:])
	}
	t.errorf("Command not found: %s", args[0])
	return 1
}

// outputFormat parses --output.
func (t *tool) outputFormat(s string) (json bool, ok bool) {
	switch s {
	case "human":
		return false, true
	case "json":
		return true, true
	}
	t.errorf("--output must be used with human or json as argument.")
	return false, false
}

// checkFormat refuses formats blockd has no driver for, with QEMU's text.
func (t *tool) checkFormat(f string) bool {
	switch f {
	case "", "qcow2", "raw":
		return true
	}
	t.errorf("Unknown file format '%s'", f)
	return false
}

// usageErrorf reports a command-line error with qemu-img's pointer to the
// help text.
func (t *tool) usageErrorf(format string, args ...any) {
	t.errorf(format+"\nTry 'blockd img --help' for more information", args...)
}

// oneImage takes the single image file name an img command expects.
func (t *tool) oneImage(operands []string) (string, bool) {
	if len(operands) != 1 {
		t.usageErrorf("Expecting one image file name")
		return "", false
	}
	return operands[0], true
}
