package chardev

import (
	"errors"
	"fmt"
	"strconv"

	"blockd/internal/keyval"
	"blockd/internal/qemu"
	"blockd/schema"
)

// optionNames are the keys --chardev accepts (the reference's
// qemu_chardev_opts): a key another backend uses is accepted and
// ignored, any other is an "Invalid parameter".
var optionNames = map[string]bool{
	"id": true, "backend": true, "path": true, "host": true, "port": true, "fd": true,
	"localaddr": true, "localport": true, "to": true, "ipv4": true, "ipv6": true,
	"wait": true, "server": true, "delay": true, "nodelay": true, "reconnect": true,
	"telnet": true, "tn3270": true, "websocket": true, "width": true, "height": true,
	"cols": true, "rows": true, "mux": true, "signal": true, "name": true, "debug": true,
	"size": true, "chardev": true, "append": true, "logfile": true, "logappend": true,
	"mouse": true, "clipboard": true, "tight": true, "abstract": true,
	"tls-creds": true, "tls-authz": true, "input-path": true,
}

// aliases are the deprecated backend names the reference still takes.
var aliases = map[string]string{"tty": "serial", "parport": "parallel"}

// ParseOption turns a --chardev value (keyval, the backend first) into
// its id and backend, as the reference's qemu_chr_parse_opts and the
// backends' parse functions do, with their texts. Warnings (a deprecated
// alias) are returned for the caller to print.
func ParseOption(spec string) (id string, b *Backend, warning string, err error) {
	kv, err := keyval.Parse(spec, "backend")
	if err != nil {
		return "", nil, "", err
	}
	o := map[string]string{}
	for k, v := range kv {
		if !optionNames[k] {
			return "", nil, "", fmt.Errorf("Invalid parameter '%s'", k)
		}
		s, ok := v.(string)
		if !ok {
			return "", nil, "", fmt.Errorf("Invalid parameter '%s'", k)
		}
		o[k] = s
	}
	kind := o["backend"]
	if a, ok := aliases[kind]; ok {
		warning = fmt.Sprintf("warning: The alias '%s' is deprecated, use '%s' instead", kind, a)
		kind = a
	}
	known := false
	for _, k := range BackendKind("").EnumValues() {
		known = known || k == kind
	}
	if !known {
		return "", nil, "", fmt.Errorf("'%s' is not a valid char driver name", kind)
	}
	if o["id"] == "" {
		return "", nil, "", errors.New("chardev: no id specified")
	}
	boolOpt := func(name string, def bool) (bool, error) {
		s, ok := o[name]
		if !ok {
			return def, nil
		}
		switch s {
		case "on", "yes", "true", "y":
			return true, nil
		case "off", "no", "false", "n":
			return false, nil
		}
		return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", name)
	}
	optBool := func(name string) (*bool, error) {
		if _, ok := o[name]; !ok {
			return nil, nil
		}
		v, err := boolOpt(name, false)
		return &v, err
	}
	optStr := func(name string) *string {
		if s, ok := o[name]; ok {
			return &s
		}
		return nil
	}
	var cm Common
	cm.Logfile = optStr("logfile")
	if cm.Logappend, err = optBool("logappend"); err != nil {
		return "", nil, "", err
	}
	b = &Backend{Type: BackendKind(kind)}
	switch kind {
	case "file":
		if o["path"] == "" {
			return "", nil, "", errors.New("chardev: file: no filename given")
		}
		f := File{Common: cm, Out: o["path"], In: optStr("input-path")}
		if f.Append, err = optBool("append"); err != nil {
			return "", nil, "", err
		}
		b.File = &FileWrapper{Data: f}
	case "serial", "parallel", "pipe":
		if o["path"] == "" {
			what := map[string]string{"serial": "serial/tty", "parallel": "parallel", "pipe": "pipe"}[kind]
			return "", nil, "", fmt.Errorf("chardev: %s: no device path given", what)
		}
		b.Hostdev = &HostdevWrapper{Data: Hostdev{Common: cm, Device: o["path"]}}
	case "ringbuf", "memory":
		r := Ringbuf{Common: cm}
		if s, ok := o["size"]; ok {
			n, err := qemu.Strtosz(s)
			if err != nil || n > 1<<62 {
				return "", nil, "", errors.New("Parameter 'size' expects a non-negative number below 2^64\n" +
					"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
			}
			size := int64(n)
			r.Size = &size
		}
		b.Ringbuf = &RingbufWrapper{Data: r}
	case "stdio":
		s := Stdio{Common: cm}
		if s.Signal, err = optBool("signal"); err != nil {
			return "", nil, "", err
		}
		b.Stdio = &StdioWrapper{Data: s}
	case "socket":
		sock, err := parseSocket(o, cm, boolOpt, optBool)
		if err != nil {
			return "", nil, "", err
		}
		b.Socket = &SocketWrapper{Data: *sock}
	case "udp":
		host := o["host"]
		if host == "" {
			host = "localhost"
		}
		if o["port"] == "" {
			return "", nil, "", errors.New("chardev: udp: remote port not specified")
		}
		u := UDP{Common: cm, Remote: inetLegacy(host, o["port"])}
		if la, lp := o["localaddr"], o["localport"]; la != "" || lp != "" {
			if lp == "" {
				lp = "0"
			}
			l := inetLegacy(la, lp)
			u.Local = &l
		}
		b.UDP = &UDPWrapper{Data: u}
	case "mux":
		b.Mux = &MuxWrapper{Data: Mux{Common: cm, Chardev: o["chardev"]}}
	default: // null, pty and the backends blockd refuses when opened
		b.Common = &CommonWrapper{Data: cm}
	}
	return o["id"], b, warning, nil
}

func inetLegacy(host, port string) schema.SocketAddressLegacy {
	return schema.SocketAddressLegacy{Type: "inet",
		Inet: &schema.InetSocketAddressWrapper{Data: schema.InetSocketAddress{Host: host, Port: port}}}
}

func parseSocket(o map[string]string, cm Common, boolOpt func(string, bool) (bool, error),
	optBool func(string) (*bool, error)) (*Socket, error) {
	path, host, fd := o["path"], o["host"], o["fd"]
	n := 0
	for _, s := range []string{path, host, fd} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("None or one of 'path', 'fd' or 'host' option required.")
	}
	if host != "" && o["port"] == "" {
		return nil, errors.New("chardev: socket: no port given")
	}
	s := &Socket{Common: cm, TLSCreds: nil}
	if _, d := o["delay"]; d {
		if _, nd := o["nodelay"]; nd {
			return nil, errors.New("'delay' and 'nodelay' are mutually exclusive")
		}
	}
	server, err := boolOpt("server", false)
	if err != nil {
		return nil, err
	}
	s.Server = &server
	for name, dst := range map[string]**bool{"telnet": &s.Telnet, "tn3270": &s.Tn3270, "websocket": &s.Websocket, "nodelay": &s.Nodelay} {
		if *dst, err = optBool(name); err != nil {
			return nil, err
		}
	}
	// On the command line a server waits for its first client unless
	// wait=off.
	if _, given := o["wait"]; given || server {
		w, err := boolOpt("wait", true)
		if err != nil {
			return nil, err
		}
		s.Wait = &w
	}
	if r, ok := o["reconnect"]; ok {
		v, err := strconv.ParseInt(r, 0, 64)
		if err != nil {
			return nil, errors.New("Parameter 'reconnect' expects a number")
		}
		s.Reconnect = &v
	}
	if v, ok := o["tls-creds"]; ok {
		s.TLSCreds = &v
	}
	if v, ok := o["tls-authz"]; ok {
		s.TLSAuthz = &v
	}
	switch {
	case path != "":
		s.Addr = schema.SocketAddressLegacy{Type: "unix",
			Unix: &schema.UnixSocketAddressWrapper{Data: schema.UnixSocketAddress{Path: path}}}
	case host != "":
		s.Addr = inetLegacy(host, o["port"])
	default:
		if _, err := strconv.Atoi(fd); err != nil {
			return nil, fmt.Errorf("Unable to parse FD number %s", fd)
		}
		s.Addr = schema.SocketAddressLegacy{Type: "fd", Fd: &schema.FdSocketAddressWrapper{Data: schema.FdSocketAddress{Str: fd}}}
	}
	// Checked at parse time, as the reference does, so that a monitor's
	// socket (which the daemon binds itself) cannot drop its tls-creds.
	if err := validateTLS(s); err != nil {
		return nil, err
	}
	return s, nil
}

// MonitorSocket says whether b is what a command-line monitor can serve
// on: a listening Unix socket (its path), a listening inet socket (inet;
// see ListenMonitor), or stdio.
func MonitorSocket(b *Backend) (path string, inet, stdio, ok bool) {
	switch {
	case b.Stdio != nil:
		return "", false, true, true
	case b.Socket != nil:
		s := b.Socket.Data
		if s.Server != nil && *s.Server {
			switch {
			case s.Addr.Unix != nil:
				return s.Addr.Unix.Data.Path, false, false, true
			case s.Addr.Inet != nil:
				return "", true, false, true
			}
		}
	}
	return "", false, false, false
}
