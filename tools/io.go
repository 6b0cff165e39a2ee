package tools

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"blockd/blockio"
)

const ioUsage = `Usage: blockd io [OPTIONS]... [-c STRING]... [file]
blockd's disk exerciser, in the style of qemu-io, on the daemon's drivers.

  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use (qcow2, raw)
  -r, --read-only      export read-only
  -n, --nocache        disable host cache, short for -t none
  -t, --cache=MODE     use the given cache mode for the image
                       (writeback, writethrough (default), none,
                       directsync, unsafe)
  -d, --discard=MODE   use the given discard mode for the image
                       (ignore/off, unmap/on (default))
  -U, --force-share    force shared permissions
  -q, --quiet          do not print the reports of read, write, discard
  -h, --help           display this help and exit

Without -c, commands are read from standard input, one a line.

Commands:
  read [-Cqv] [-P pattern [-s off] [-l len]] off len
  write [-Cfqnz] [-u] [-P pattern] off len
  discard [-Cq] off len
  flush
  length
  help
  quit
`

// ioTool is one `blockd io` run.
type ioTool struct {
	*tool
	im         *image
	filename   string
	quiet      bool
	fua        bool // write-through cache: every write is FUA
	readOnly   bool
	buf        []byte // read buffer
	wbuf       []byte // write buffer: its first wlen bytes are wpat
	wlen       int64
	wpat       byte
	writePerm  bool // the user edge holds the write permission
	promptMode bool
}

// IO runs `blockd io ARGS`, the counterpart of qemu-io: it opens one image
// through the graph (read-write unless -r, taking the image locks qemu-io
// takes) and runs the -c commands, or the commands on standard input, in
// order. The exit status is 1 if the image could not be opened or any
// command failed, as with qemu-io.
func IO(args []string, s Stdio) int {
	t := &ioTool{tool: newTool("blockd io", s)}
	defer t.out.Flush()
	opts, operands, err := getopt(args, optSpec{short: "hc:d:f:rnqt:U", permute: true, long: map[string]longOpt{
		"help": {'h', false}, "cmd": {'c', true}, "format": {'f', true}, "read-only": {'r', false},
		"nocache": {'n', false}, "cache": {'t', true}, "discard": {'d', true}, "force-share": {'U', false},
		"quiet": {'q', false},
	}})
	if err != nil {
		t.errorf("%s", err)
		fmt.Fprint(t.err, ioUsage)
		return 1
	}
	o := openOptions{discardUnmap: true, cache: cacheMode{writethrough: true}}
	var cmds []string
	for _, op := range opts {
		switch op.key {
		case 'h':
			t.printf("%s", ioUsage)
			return 0
		case 'c':
			cmds = append(cmds, op.arg)
		case 'f':
			o.format = op.arg
		case 'r':
			o.readOnly = true
		case 'n':
			o.cache = cacheMode{direct: true}
		case 't':
			c, ok := parseCacheMode(op.arg)
			if !ok {
				t.errorf("Invalid cache option: %s", op.arg)
				return 1
			}
			o.cache = c
		case 'd':
			switch op.arg {
			case "ignore", "off":
				o.discardUnmap = false
			case "unmap", "on":
				o.discardUnmap = true
			default:
				t.errorf("Invalid discard option: %s", op.arg)
				return 1
			}
		case 'U':
			o.forceShare = true
		case 'q':
			t.quiet = true
		}
	}
	if len(operands) > 1 {
		t.errorf("too many arguments")
		fmt.Fprint(t.err, ioUsage)
		return 1
	}
	if len(operands) == 0 {
		t.errorf("no image file given")
		fmt.Fprint(t.err, ioUsage)
		return 1
	}
	o.filename = operands[0]
	t.filename = o.filename
	o.perm, o.shared = blockio.PermConsistentRead, blockio.PermAll
	if !o.readOnly {
		o.perm |= blockio.PermWrite
	}
	t.readOnly, t.writePerm, t.fua = o.readOnly, !o.readOnly, o.cache.writethrough
	im, err := openImage(o, t.err)
	if err != nil {
		t.errorf("can't open device %s: %s", o.filename, errText(err))
		return 1
	}
	t.im = im
	defer im.close()
	if !o.readOnly {
		im.warnProbedRaw(t.err, o.filename)
	}
	failed := false
	if cmds != nil {
		for _, c := range cmds {
			ok, quit := t.command(c)
			failed = failed || !ok
			if quit {
				break
			}
		}
	} else {
		failed = t.commandLoop()
	}
	if !t.readOnly {
		// Closing writes the metadata back; flush first to see a failure.
		if err := im.dev.Flush(); err != nil {
			t.errorf("flush on close failed: %s", errText(err))
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// commandLoop reads commands from standard input until EOF or quit,
// prompting only when the input is a terminal.
func (t *ioTool) commandLoop() (failed bool) {
	if f, ok := t.in.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			t.promptMode = true
		}
	}
	sc := bufio.NewScanner(t.in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for {
		if t.promptMode {
			t.printf("blockd io> ")
			t.out.Flush()
		}
		if !sc.Scan() {
			break
		}
		ok, quit := t.command(sc.Text())
		failed = failed || !ok
		if t.promptMode {
			t.out.Flush()
		}
		if quit {
			break
		}
	}
	if err := sc.Err(); err != nil {
		t.errorf("reading commands: %s", err)
		failed = true
	}
	return failed
}

// ioCommand describes one command, as qemu-io's cmdinfo_t.
type ioCommand struct {
	name, alias    string
	argmin, argmax int // argmax -1: unlimited
	write          bool
	args, oneline  string
	run            func(t *ioTool, argv []string) bool
}

var ioCommands []*ioCommand

func init() {
	ioCommands = []*ioCommand{
		{name: "read", alias: "r", argmin: 2, argmax: -1, run: (*ioTool).read,
			args: "[-abCqv] [-P pattern [-s off] [-l len]] off len", oneline: "reads a number of bytes at a specified offset"},
		{name: "write", alias: "w", argmin: 2, argmax: -1, write: true, run: (*ioTool).write,
			args: "[-bcCfnquz] [-P pattern] off len", oneline: "writes a number of bytes at a specified offset"},
		{name: "discard", alias: "d", argmin: 2, argmax: -1, write: true, run: (*ioTool).discard,
			args: "[-Cq] off len", oneline: "discards a number of bytes at a specified offset"},
		{name: "flush", alias: "f", run: (*ioTool).flush, oneline: "flush all in-core file state to disk"},
		{name: "length", alias: "l", run: (*ioTool).length, oneline: "gets the length of the current file"},
		{name: "help", alias: "?", argmax: 1, run: (*ioTool).help, args: "[command]", oneline: "help for one or all commands"},
		{name: "quit", alias: "q", oneline: "exit the program"},
	}
}

func findCommand(name string) *ioCommand {
	for _, c := range ioCommands {
		if c.name == name || c.alias == name {
			return c
		}
	}
	return nil
}

// command runs one command line. It reports whether the command
// succeeded and whether it was quit.
func (t *ioTool) command(line string) (ok, quit bool) {
	argv := strings.Fields(line)
	if len(argv) == 0 {
		return true, false
	}
	c := findCommand(argv[0])
	if c == nil {
		t.out.Flush()
		fmt.Fprintf(t.err, "command \"%s\" not found\n", argv[0])
		return false, false
	}
	if n := len(argv) - 1; n < c.argmin || (c.argmax != -1 && n > c.argmax) {
		t.out.Flush()
		switch {
		case c.argmax == -1:
			fmt.Fprintf(t.err, "bad argument count %d to %s, expected at least %d arguments\n", n, argv[0], c.argmin)
		case c.argmin == c.argmax && c.argmin == 0:
			fmt.Fprintf(t.err, "bad argument count %d to %s, expected no arguments\n", n, argv[0])
		case c.argmin == c.argmax:
			fmt.Fprintf(t.err, "bad argument count %d to %s, expected %d arguments\n", n, argv[0], c.argmin)
		default:
			fmt.Fprintf(t.err, "bad argument count %d to %s, expected between %d and %d arguments\n",
				n, argv[0], c.argmin, c.argmax)
		}
		return false, false
	}
	if c.name == "quit" {
		return true, true
	}
	if c.write && !t.writePerm {
		// qemu-io asks for the command's permission on its user edge.
		err := t.im.do(func() error {
			return t.im.graph.SetUserPerm(t.im.user, t.im.user.Perm|blockio.PermWrite, t.im.user.Shared)
		})
		if err != nil {
			t.errorf("%s", errText(err))
			return false, false
		}
		t.writePerm = true
	}
	return c.run(t, argv), false
}

func (t *ioTool) help(argv []string) bool {
	if len(argv) == 2 {
		c := findCommand(argv[1])
		if c == nil {
			t.printf("command %s not found\n", argv[1])
			return false
		}
		t.usage(c)
		return true
	}
	for _, c := range ioCommands {
		t.printf("%s", c.name)
		if c.alias != "" {
			t.printf(" (or %s)", c.alias)
		}
		if c.args != "" {
			t.printf(" %s", c.args)
		}
		t.printf(" -- %s\n", c.oneline)
	}
	t.printf("\nUse 'help commandname' for extended help.\n")
	return true
}

// usage is qemuio_command_usage.
func (t *ioTool) usage(c *ioCommand) {
	t.printf("%s %s -- %s\n", c.name, c.args, c.oneline)
}
