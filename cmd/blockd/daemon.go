package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/chardev"
	"blockd/events"
	"blockd/exports"
	"blockd/exports/fuse"
	"blockd/jobs"
	"blockd/jsonrpc"
	"blockd/metrics"
	"blockd/objects"
	"blockd/qmp"
	"blockd/schema"
)

// daemon wires the parts together and owns the process's resources:
// sockets, the pidfile and the order in which things stop.
type daemon struct {
	cfg   *config
	log   *zap.Logger
	bus   *events.Bus
	reg   *schema.Registry
	owner *blockcore.Owner
	graph *blockcore.Graph
	jobs  *jobs.Manager
	objs  *objects.Registry
	chrs  *chardev.Registry
	exps  *exports.Registry
	qmp   *qmp.Server
	rpc   *jsonrpc.Server
	mets  *metrics.Metrics // nil without --metrics

	listeners []net.Listener
	pidfile   *os.File
	quit      chan struct{}
	quitOnce  sync.Once
	serving   sync.WaitGroup
}

func newDaemon(cfg *config, log *zap.Logger) *daemon {
	d := &daemon{cfg: cfg, log: log, bus: events.NewBus(), reg: schema.NewRegistry(), quit: make(chan struct{})}
	d.graph = blockcore.NewGraph(log, d.bus)
	d.owner = blockcore.NewOwner(d.reg)
	d.owner.SetLogger(log)
	d.owner.OnPanic(d.graph.RecoverFromPanic)
	d.jobs = jobs.NewManager(d.graph, d.owner, d.bus, log)
	d.objs = objects.NewRegistry(log)
	d.objs.SetBus(d.bus)
	d.chrs = chardev.NewRegistry(log, d.objs)
	d.chrs.SetDaemonize(cfg.daemonize)
	d.chrs.SetQuit(d.quit)
	d.exps = exports.New(d.graph, d.owner, d.bus, log)
	d.exps.TLS = d.objs
	d.graph.SetObjects(d.objs)
	d.exps.Fuse = mountFuse
	d.registerCommands()
	var qmpD, rpcD qmp.Dispatcher = d.owner, d.owner
	if cfg.metrics != "" {
		d.mets = metrics.New(metrics.Sources{Owner: d.owner, Graph: d.graph, Jobs: d.jobs, Exports: d.exps})
		qmpD, rpcD = d.mets.Dispatcher("qmp", d.owner), d.mets.Dispatcher("jsonrpc", d.owner)
	}
	d.qmp = qmp.NewServer(qmpD, d.bus, log, qmp.Options{
		MaxMessage: cfg.maxMessage,
		Greeting: qmp.Greeting{Major: qemuMajor, Minor: qemuMinor, Micro: qemuMicro,
			Package: "blockd " + Version},
	})
	d.rpc = jsonrpc.NewServer(rpcD, d.bus, log)
	if d.mets != nil {
		d.mets.SetClients(map[string]metrics.ClientCounter{"qmp": d.qmp, "jsonrpc": d.rpc})
	}
	return d
}

func (d *daemon) registerCommands() {
	qmp.RegisterCommands(d.reg)
	schema.Define(d.reg, "query-version", func(context.Context, *schema.NoArgs) (*schema.VersionInfo, error) {
		return &schema.VersionInfo{
			Qemu:    schema.VersionTriple{Major: qemuMajor, Minor: qemuMinor, Micro: qemuMicro},
			Package: "blockd " + Version,
		}, nil
	})
	schema.Define(d.reg, "quit", func(context.Context, *schema.NoArgs) (schema.Empty, error) {
		// Exports end before the reply, their events first, as in QEMU.
		d.exps.CloseAll()
		// Then jobs, with their events, as in qemu-storage-daemon.
		d.jobs.Shutdown()
		d.requestQuit("quit command")
		return schema.Empty{}, nil
	})
	d.graph.RegisterCommands(d.reg)
	d.jobs.RegisterCommands(d.reg)
	d.objs.RegisterCommands(d.reg)
	d.graph.RegisterIothreadCommand(d.reg, d.objs.IsIothread)
	d.chrs.RegisterCommands(d.reg)
	d.exps.RegisterCommands(d.reg)
	d.reg.AddIntrospection()
}

func (d *daemon) requestQuit(why string) {
	d.quitOnce.Do(func() {
		d.log.Debug("shutting down", zap.String("reason", why)) // QSD prints nothing
		close(d.quit)
	})
}

// start brings up the owner, the pidfile, the configured nodes and the
// monitors, in that order, so that no client sees a half-built graph.
func (d *daemon) start() error {
	d.handleSignals()
	go d.owner.Run()
	if d.cfg.pidfile != "" {
		f, err := writePidfile(d.cfg.pidfile)
		if err != nil {
			return fmt.Errorf("cannot create pid file: %w", err)
		}
		d.pidfile = f
	}
	for _, spec := range d.cfg.objects {
		if err := d.objs.AddFromCLI(spec); err != nil {
			return fmt.Errorf("--object %s: %s", spec, err)
		}
	}
	for _, b := range d.cfg.blockdevs {
		if err := d.addStartupBlockdev(b); err != nil {
			return fmt.Errorf("--blockdev %s: %s", b.spec, err)
		}
	}
	if err := d.startExports(); err != nil {
		return err
	}
	// Every socket is bound (or taken over from systemd) before any is
	// served: a client that finds one socket can count on the others, and
	// a path that cannot be bound stops blockd before it has answered
	// anyone.
	eps, err := d.activated()
	if err != nil {
		return err
	}
	monitors := d.cfg.monitors
	if len(monitors) == 0 && len(eps) == 0 {
		monitors = []*cliChardev{{id: "default", backend: "socket", path: defaultSocket()}}
	}
	bind := func(c *cliChardev, what string, serve func(net.Listener) error) error {
		l, err := listenUnix(c)
		if err != nil {
			return err
		}
		d.listeners = append(d.listeners, l)
		eps = append(eps, endpoint{l, what, c.path, serve})
		return nil
	}
	for _, path := range d.cfg.jsonrpc {
		if err := bind(&cliChardev{path: path, opt: "jsonrpc", spec: path}, "JSON-RPC endpoint listening", d.rpc.Serve); err != nil {
			return err
		}
	}
	if d.cfg.metrics != "" {
		l, path, err := d.listenMetrics()
		if err != nil {
			return err
		}
		d.listeners = append(d.listeners, l)
		eps = append(eps, endpoint{l, "metrics endpoint listening", path, d.mets.Serve})
	}
	for _, c := range monitors {
		if c.backend == "stdio" {
			if c.opt == "chardev" {
				if err := d.chrs.AddMonitorStdio(c.id); err != nil {
					return err
				}
			}
			continue
		}
		if c.inet {
			l, err := d.chrs.ListenMonitor(c.id, c.be)
			if err != nil {
				return &cliError{c.opt, c.spec, schema.AsError(err).Desc}
			}
			d.listeners = append(d.listeners, l)
			eps = append(eps, endpoint{l, "QMP monitor listening", l.Addr().String(), d.qmp.Serve})
			continue
		}
		if err := bind(c, "QMP monitor listening", d.qmp.Serve); err != nil {
			return err
		}
		if c.opt == "chardev" { // --socket is blockd's own, not a chardev
			if err := d.chrs.AddMonitorSocket(c.id, c.path); err != nil {
				return err
			}
		}
	}
	// Chardevs no monitor uses are opened all the same, as the
	// reference does; they appear in query-chardev and can be removed.
	for _, c := range d.cfg.chardevs {
		if c.opt != "chardev" || slices.Contains(monitors, c) {
			continue
		}
		if _, _, err := d.chrs.Add(c.id, c.be); err != nil {
			return &cliError{c.opt, c.spec, schema.AsError(err).Desc}
		}
	}
	for _, ep := range eps {
		d.serve(ep.l, ep.path, ep.what, ep.serve)
	}
	for _, c := range monitors {
		if c.backend == "stdio" {
			d.qmp.ServeConn(stdio{})
		}
	}
	return nil
}

// endpoint is a bound socket and how to serve it.
type endpoint struct {
	l     net.Listener
	what  string
	path  string
	serve func(net.Listener) error
}

// serve serves a bound socket in the background until shutdown; the
// caller has recorded it in d.listeners so that shutdown closes it.
func (d *daemon) serve(l net.Listener, path, what string, serve func(net.Listener) error) {
	d.log.Info(what, zap.String("socket", path))
	d.serving.Add(1)
	go func() {
		defer d.serving.Done()
		if err := serve(l); err != nil {
			d.log.Error("socket failed", zap.String("socket", path), zap.Error(err))
		}
	}()
}

func (d *daemon) addStartupBlockdev(b blockdevArg) error {
	if _, ok := d.reg.Lookup("blockdev-add"); !ok {
		return errors.New("blockdev-add is not available in this build")
	}
	ctx := schema.WithKeyval(context.Background(), b.keyval)
	_, err := d.owner.Call(ctx, "blockdev-add", b.args)
	return err
}

// handleSignals turns SIGINT, SIGTERM and SIGHUP (blockd has no
// configuration to reload) into a quit request. It is
// installed before anything is started, so a signal that arrives while
// blockd starts up still ends it cleanly, and it stays installed so that
// a second signal during shutdown cannot kill blockd half way through
// closing its images.
func (d *daemon) handleSignals() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		for s := range sigs {
			d.requestQuit(s.String())
		}
	}()
}

// wait blocks until quit (the command or a signal).
func (d *daemon) wait() { <-d.quit }

// shutdown stops accepting, lets the command in flight finish, closes the
// graph, disconnects clients (flushing their replies) and removes the
// sockets and the pidfile.
func (d *daemon) shutdown() {
	for _, l := range d.listeners {
		_ = l.Close() // unlinks the socket file
	}
	d.serving.Wait()
	// Cancel jobs and close the graph on its owner, after the command in
	// flight, so every image is left consistent.
	_ = d.owner.Do(func() {
		d.exps.CloseAll()
		d.jobs.Shutdown()
		d.graph.CloseAll()
	})
	d.owner.Stop()
	d.qmp.Close()
	d.rpc.Close()
	d.chrs.CloseAll() // removes chardev sockets, closes files and ptys
	if d.pidfile != nil {
		_ = os.Remove(d.cfg.pidfile)
		_ = d.pidfile.Close()
	}
}

// listenUnix creates a 0600 socket; a stale socket file left by a dead
// process is replaced, a live one is an error, and a directory at the
// path is refused (as the reference does) rather than removed.
func listenUnix(c *cliChardev) (net.Listener, error) {
	path := c.path
	if fi, err := os.Lstat(path); err == nil {
		if fi.IsDir() {
			// The reference's text: it tries to unlink(2) the path.
			return nil, &cliError{c.opt, c.spec, fmt.Sprintf("Failed to unlink socket %s: Is a directory", path)}
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = conn.Close()
			return nil, fmt.Errorf("socket %s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("cannot replace stale socket %s: %w", path, err)
		}
	}
	l, err := chardev.ListenUnix(path, chardev.ListenBacklog)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, err)
	}
	return l, nil
}

// writePidfile writes our pid under an exclusive lock held for the life of
// the process, so a second daemon with the same pidfile fails to start.
// The file is private (0600) and never opened through a symlink, so a
// link planted at the path cannot make blockd overwrite another file.
func writePidfile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s is locked by another process", path)
	}
	if err := f.Truncate(0); err != nil {
		_ = f.Close()
		return nil, err
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// stdio is the --chardev stdio monitor stream.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { return nil }

var _ io.ReadWriteCloser = stdio{}

// listenMetrics binds --metrics: a Unix socket as private as the monitor's,
// or a TCP address.
func (d *daemon) listenMetrics() (net.Listener, string, error) {
	network, addr, _ := metrics.ParseAddress(d.cfg.metrics)
	if network == "unix" {
		l, err := listenUnix(&cliChardev{path: addr, opt: "metrics", spec: d.cfg.metrics})
		return l, addr, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("--metrics %s: %w", d.cfg.metrics, err)
	}
	return l, l.Addr().String(), nil
}

// mountFuse is the exports registry's FUSE driver.
func mountFuse(dev blockio.Device, o exports.FuseOptions) (exports.FuseExport, error) {
	e, err := fuse.Mount(dev, fuse.Options(o))
	if err != nil {
		return nil, err
	}
	return e, nil
}
