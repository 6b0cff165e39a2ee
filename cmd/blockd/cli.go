package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"blockd/chardev"
	"blockd/metrics"
)

// cliChardev is a --chardev backend a monitor can use.
type cliChardev struct {
	id          string
	backend     string // the backend kind ("socket", "stdio", ...)
	be          *chardev.Backend
	monitorable bool // a listening unix or inet socket, or stdio
	path        string
	inet        bool   // a listening inet socket (chardev.ListenMonitor)
	opt         string // the option that declared it and its text, for errors
	spec        string
}

// blockdevArg is one --blockdev: JSON arguments, and whether they came
// from keyval syntax (all values strings, converted by the schema).
type blockdevArg struct {
	spec   string
	args   json.RawMessage
	keyval bool
}

// config is the parsed command line.
type config struct {
	chardevs   []*cliChardev
	monitors   []*cliChardev // each monitor's chardev
	blockdevs  []blockdevArg
	objects    []string // --object specs, created before the nodes
	nbdServer  *optionArg
	exports    []optionArg
	jsonrpc    []string
	metrics    string // --metrics unix:PATH or tcp:HOST:PORT
	pidfile    string
	logFormat  string
	logLevel   string
	maxMessage int
	help       bool
	version    bool
	daemonize  bool
	warnings   []string // printed at start, as the reference prints them
}

// cliError is an error about one option, printed as qemu-storage-daemon
// prints them: "blockd: --opt value: message".
type cliError struct{ opt, val, msg string }

func (e *cliError) Error() string {
	if e.opt == "" {
		return e.msg
	}
	return fmt.Sprintf("--%s %s: %s", e.opt, e.val, e.msg)
}

// takesValue lists the long options and whether they need an argument.
var takesValue = map[string]bool{
	"chardev": true, "monitor": true, "blockdev": true, "pidfile": true,
	"socket": true, "jsonrpc": true, "log-format": true, "log-level": true,
	"max-message-size": true, "help": false, "version": false, "daemonize": false,
	"object":     true,
	"nbd-server": true, "export": true, "metrics": true,
}

func parseArgs(args []string) (*config, error) {
	cfg := &config{logFormat: "console"}
	var monitorSpecs []string
	logFormatGiven := false
	for i := 0; i < len(args); i++ {
		name, val, consumed, err := nextOption(args[i:])
		if err != nil {
			return nil, err
		}
		i += consumed - 1
		if err := cfg.apply(name, val, &monitorSpecs); err != nil {
			return nil, err
		}
		if name == "log-format" {
			logFormatGiven = true
		}
	}
	if cfg.logLevel == "" {
		// A qemu-storage-daemon command line (monitors from --monitor)
		// gets qemu-storage-daemon's quiet stderr, which scripts compare;
		// blockd's own options, or asking for a log format, get the
		// operational log.
		cfg.logLevel = "info"
		if len(monitorSpecs) > 0 && !logFormatGiven {
			cfg.logLevel = "warn"
		}
	}
	for _, spec := range monitorSpecs {
		if err := cfg.addMonitor(spec); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// nextOption recognizes the option at args[0] in getopt_long's forms
// (--name value, --name=value, -h, -V) and says how many words it used.
func nextOption(args []string) (name, val string, consumed int, err error) {
	a := args[0]
	switch {
	case a == "-h":
		return "help", "", 1, nil
	case a == "-V":
		return "version", "", 1, nil
	case !strings.HasPrefix(a, "--"):
		return "", "", 0, &cliError{msg: fmt.Sprintf("unrecognized option '%s'", a)}
	}
	name, val, inline := strings.Cut(a[2:], "=")
	needs, known := takesValue[name]
	switch {
	case !known:
		return "", "", 0, &cliError{msg: fmt.Sprintf("unrecognized option '--%s'", name)}
	case inline && !needs:
		return "", "", 0, &cliError{msg: fmt.Sprintf("option '--%s' doesn't allow an argument", name)}
	case inline || !needs:
		return name, val, 1, nil
	case len(args) < 2:
		return "", "", 0, &cliError{msg: fmt.Sprintf("option '%s' requires an argument", a)}
	}
	return name, args[1], 2, nil
}

func (cfg *config) apply(name, val string, monitorSpecs *[]string) error {
	switch name {
	case "help":
		cfg.help = true
	case "version":
		cfg.version = true
	case "daemonize":
		cfg.daemonize = true
	case "chardev":
		return cfg.addChardev(val)
	case "monitor":
		// Monitors may name chardevs defined later on the command line.
		*monitorSpecs = append(*monitorSpecs, val)
	case "socket":
		c := &cliChardev{id: fmt.Sprintf("blockd-socket-%d", len(cfg.chardevs)), backend: "socket", path: val, opt: "socket", spec: val}
		cfg.chardevs = append(cfg.chardevs, c)
		cfg.monitors = append(cfg.monitors, c)
	case "blockdev":
		return cfg.addBlockdev(val)
	case "object":
		cfg.objects = append(cfg.objects, val)
	case "nbd-server":
		return cfg.addNbdServer(val)
	case "export":
		return cfg.addExport(val)
	case "jsonrpc":
		cfg.jsonrpc = append(cfg.jsonrpc, val)
	case "metrics":
		if _, _, err := metrics.ParseAddress(val); err != nil {
			return &cliError{name, val, err.Error()}
		}
		cfg.metrics = val
	case "pidfile":
		cfg.pidfile = val
	case "log-format":
		if val != "console" && val != "json" {
			return &cliError{name, val, "expected 'console' or 'json'"}
		}
		cfg.logFormat = val
	case "log-level":
		cfg.logLevel = val
	case "max-message-size":
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return &cliError{name, val, "expected a positive number of bytes"}
		}
		cfg.maxMessage = n
	}
	return nil
}

func (cfg *config) addChardev(spec string) error {
	id, be, warning, err := chardev.ParseOption(spec)
	if err != nil {
		return &cliError{"chardev", spec, err.Error()}
	}
	if warning != "" {
		cfg.warnings = append(cfg.warnings, (&cliError{"chardev", spec, warning}).Error())
	}
	c := &cliChardev{id: id, backend: string(be.Type), be: be, opt: "chardev", spec: spec}
	if path, inet, stdio, ok := chardev.MonitorSocket(be); ok {
		c.path, c.inet, c.monitorable = path, inet, true
		if stdio {
			c.backend = "stdio"
		}
	}
	for _, o := range cfg.chardevs {
		if o.id == c.id {
			return &cliError{"chardev", spec, fmt.Sprintf("attempt to add duplicate property '%s' to object (type 'container')", c.id)}
		}
	}
	cfg.chardevs = append(cfg.chardevs, c)
	return nil
}

func (cfg *config) addMonitor(spec string) error {
	kv, err := parseKeyval(spec, "chardev")
	if err != nil {
		return &cliError{"monitor", spec, err.Error()}
	}
	var id string
	for k, v := range kv {
		s, _ := v.(string)
		switch k {
		case "chardev":
			id = s
		case "mode":
			if s != "control" {
				return &cliError{"monitor", spec, "Only QMP is supported"}
			}
		case "pretty":
			if on, ok := parseBool(s); !ok || on {
				return &cliError{"monitor", spec, "pretty=on is not supported by blockd"}
			}
		default:
			return &cliError{"monitor", spec, fmt.Sprintf("Parameter '%s' is unexpected", k)}
		}
	}
	if id == "" {
		return &cliError{"monitor", spec, "Parameter 'chardev' is missing"}
	}
	for _, c := range cfg.chardevs {
		if c.id == id {
			if !c.monitorable && c.opt == "chardev" {
				return &cliError{"monitor", spec, fmt.Sprintf("chardev \"%s\" is a '%s' chardev: blockd serves monitors on listening unix and inet sockets (server=on) and stdio", id, c.backend)}
			}
			cfg.monitors = append(cfg.monitors, c)
			return nil
		}
	}
	return &cliError{"monitor", spec, fmt.Sprintf("chardev \"%s\" not found", id)}
}

func (cfg *config) addBlockdev(spec string) error {
	if strings.HasPrefix(strings.TrimSpace(spec), "{") {
		if !json.Valid([]byte(spec)) {
			return &cliError{"blockdev", spec, "JSON parse error"}
		}
		cfg.blockdevs = append(cfg.blockdevs, blockdevArg{spec: spec, args: json.RawMessage(spec)})
		return nil
	}
	kv, err := parseKeyval(spec, "driver")
	if err != nil {
		return &cliError{"blockdev", spec, err.Error()}
	}
	b, _ := json.Marshal(kv)
	cfg.blockdevs = append(cfg.blockdevs, blockdevArg{spec: spec, args: b, keyval: true})
	return nil
}

func parseBool(s string) (value, ok bool) {
	switch s {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}

// defaultSocket is where blockd listens when no monitor is configured.
func defaultSocket() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "blockd.sock")
	}
	return fmt.Sprintf("/tmp/blockd-%d.sock", os.Getuid())
}

const usage = `Usage: blockd [options]
blockd storage daemon (qemu-storage-daemon compatible)

  -h, --help             display this help and exit
  -V, --version          output version information and exit

  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]
             [,cache.direct=on|off][,cache.no-flush=on|off]
             [,read-only=on|off][,auto-read-only=on|off]
             [,force-share=on|off][,detect-zeroes=on|off|unmap]
             [,driver specific parameters...]
                         configure a block node (or a JSON object)

  --object secret,id=<id>,data=<data>|file=<file>[,format=raw|base64]
           [,keyid=<id>,iv=<base64>]
  --object tls-creds-x509,id=<id>,dir=<dir>[,endpoint=server|client]
           [,verify-peer=on|off][,sanity-check=on|off]
  --object tls-creds-psk,id=<id>,dir=<dir>[,endpoint=server|client]
           [,username=<name>]
  --object authz-simple,id=<id>,identity=<distinguished name>
  --object iothread,id=<id>   (accepted; blockd has no I/O threads)
                         create a user object (or a JSON object)

  --chardev socket,id=<id>,path=<path>,server=on[,wait=off]
  --chardev stdio,id=<id>
                         configure a character device for a monitor
  --chardev <backend>,id=<id>[,...]
                         other character devices (null, ringbuf, memory,
                         file, pipe, socket, pty, udp, serial, parallel,
                         mux), as chardev-add opens them

  --monitor [chardev=]name[,mode=control]
                         configure a QMP monitor

  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]
           [,writable=on|off][,bitmap=<name>][,allocation-depth=on|off]
           [,description=<text>]
                         export the specified block node over NBD
                         (requires --nbd-server)

  --export [type=]fuse,id=<id>,node-name=<node-name>,mountpoint=<file>
           [,growable=on|off][,writable=on|off][,allow-other=on|off|auto]
                         export the specified block node over FUSE

  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>
               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]
  --nbd-server addr.type=unix,addr.path=<path>
               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]
                         start an NBD server for exporting block nodes

  --pidfile <path>       write own pid to this file

  --daemonize            daemonize the process, and have the parent exit
                         once startup is complete

blockd's own options:
  --socket <path>        QMP monitor on a new unix socket at <path>
  --jsonrpc <path>       JSON-RPC 2.0 endpoint on a unix socket at <path>
  --metrics unix:<path>|tcp:<host>:<port>
                         serve Prometheus metrics (off by default)
  --log-format console|json
  --log-level debug|info|warn|error
                         (default info; warn with --monitor and no --log-format)
  --max-message-size <bytes>
                         largest accepted QMP message (default 64 MiB)

Without any monitor option blockd listens on $XDG_RUNTIME_DIR/blockd.sock,
or /tmp/blockd-$UID.sock when XDG_RUNTIME_DIR is not set.

Under systemd socket activation (LISTEN_FDS) the sockets passed in are
served too: QMP, or JSON-RPC for one named "jsonrpc" (FileDescriptorName=).
`
