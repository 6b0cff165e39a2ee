package exports

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"blockd/internal/errtext"
	"blockd/internal/qemu"
	"blockd/internal/rawsock"
	"blockd/nbd"
	"blockd/objects"
	"blockd/schema"
)

// nbdServer is the running NBD server: one listener.
type nbdServer struct {
	srv  *nbd.Server
	l    net.Listener
	tls  objects.ServerTLS // nil without tls-creds
	done sync.WaitGroup
}

func (s *nbdServer) close() {
	s.srv.Close()
	s.done.Wait()
	if s.tls != nil {
		s.tls.Close() // after every session has ended
	}
}

// StartNBD is nbd-server-start (and --nbd-server).
// fdsByNumber: see listen.
func (r *Registry) StartNBD(addr schema.SocketAddress, tlsCreds, tlsAuthz *string, maxConn *uint32, fdsByNumber bool) error {
	if r.server != nil {
		return schema.Errorf("NBD server already running")
	}
	o := nbd.Options{Log: r.log}
	if maxConn != nil {
		o.MaxConnections = int(*maxConn)
	}
	var tlsSrv objects.ServerTLS
	if tlsCreds != nil {
		if r.TLS == nil {
			return schema.Errorf("No TLS credentials with id '%s'", *tlsCreds)
		}
		var err error
		if tlsSrv, err = r.TLS.TLSServer(*tlsCreds, tlsAuthz); err != nil {
			return err
		}
		o.TLS = tlsSrv
	}
	// tls-authz without tls-creds is accepted and has no effect, as in
	// qemu-storage-daemon 7.2 (transcript nbd_tls_psk.qmp).
	l, err := listen(addr, fdsByNumber)
	if err != nil {
		if tlsSrv != nil {
			tlsSrv.Close()
		}
		return err
	}
	s := &nbdServer{srv: nbd.NewServer(o), l: l, tls: tlsSrv}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		// net.ErrClosed: the server was stopped before Serve began.
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
			r.log.Error("NBD server failed", zap.Error(err))
		}
	}()
	r.server = s
	return nil
}

// listen opens the server's socket as QEMU's socket_listen does (a Unix
// socket path already there is replaced). fdsByNumber says how an fd
// address is read: as a descriptor number (the command line), or as a
// name passed to the monitor, which qemu-storage-daemon 7.2 cannot do.
func listen(a schema.SocketAddress, fdsByNumber bool) (net.Listener, error) {
	switch {
	case a.Unix != nil:
		if a.Unix.Abstract != nil && *a.Unix.Abstract {
			return nil, schema.Errorf("Abstract Unix sockets are not supported")
		}
		_ = os.Remove(a.Unix.Path)
		l, err := net.Listen("unix", a.Unix.Path)
		if err != nil {
			return nil, schema.Errorf("Failed to bind socket to %s: %s", a.Unix.Path, sysErr(err))
		}
		return l, nil
	case a.Inet != nil:
		network := "tcp"
		switch {
		case a.Inet.Ipv4 != nil && *a.Inet.Ipv4 && !(a.Inet.Ipv6 != nil && *a.Inet.Ipv6):
			network = "tcp4"
		case a.Inet.Ipv6 != nil && *a.Inet.Ipv6 && !(a.Inet.Ipv4 != nil && *a.Inet.Ipv4):
			network = "tcp6"
		}
		l, err := net.Listen(network, net.JoinHostPort(a.Inet.Host, a.Inet.Port))
		if err != nil {
			return nil, schema.Errorf("Failed to bind socket: %s", sysErr(err))
		}
		return l, nil
	case a.Vsock != nil:
		cid, ok := qemu.ParseUintFull(a.Vsock.Cid, math.MaxUint32)
		if !ok {
			return nil, schema.Errorf("Failed to parse cid '%s'", a.Vsock.Cid)
		}
		port, ok := qemu.ParseUintFull(a.Vsock.Port, math.MaxUint32)
		if !ok {
			return nil, schema.Errorf("Failed to parse port '%s'", a.Vsock.Port)
		}
		l, err := rawsock.ListenVsock(uint32(cid), uint32(port), unix.SOMAXCONN)
		if err != nil {
			var se *os.SyscallError
			step := "listen on"
			if errors.As(err, &se) {
				step = map[string]string{"socket": "create", "bind": "bind", "listen": "listen on"}[se.Syscall]
			}
			return nil, schema.Errorf("Failed to %s socket: %s", step, errtext.Strerror(errtext.Errno(err)))
		}
		return l, nil
	case a.Fd != nil:
		return listenFD(a.Fd.Str, fdsByNumber)
	}
	return nil, schema.Errorf("socket family %s unsupported", a.Type)
}

// listenFD serves a socket passed as descriptor str, with the checks and
// texts of QEMU's socket_get_fd and socket_listen. The socket may be
// listening already or only bound; from here on the server owns it.
func listenFD(str string, byNumber bool) (net.Listener, error) {
	if !byNumber {
		return nil, schema.Errorf("only QEMU supports file descriptor passing")
	}
	fd, ok := parseFDNumber(str)
	if !ok {
		return nil, schema.Errorf("Unable to parse FD number %s", str)
	}
	var st unix.Stat_t
	if fd < 0 || unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, schema.Errorf("File descriptor '%s' is not a socket", str)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, schema.Errorf("Failed to listen on fd socket: %s", errtext.Strerror(errtext.Errno(err)))
	}
	l, err := rawsock.FileListener(fd)
	if err != nil {
		return nil, schema.Errorf("Failed to listen on fd socket: %s", errtext.Strerror(errtext.Errno(err)))
	}
	return l, nil
}

// parseFDNumber is qemu_strtoi in base 10 on the whole string: leading
// white space and a sign are allowed, nothing after the digits.
func parseFDNumber(s string) (int, bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := strings.HasPrefix(t, "-")
	if neg || strings.HasPrefix(t, "+") {
		t = t[1:]
	}
	if t == "" || t[0] < '0' || t[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseInt(t, 10, 32)
	if err != nil {
		return 0, false
	}
	if neg {
		v = -v
	}
	return int(v), true
}

// sysErr is the system error text without Go's "listen unix ...:" prefix.
func sysErr(err error) string {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		if se, ok := oe.Err.(*os.SyscallError); ok {
			return se.Err.Error()
		}
		return oe.Err.Error()
	}
	return err.Error()
}

// StopNBD is nbd-server-stop: every NBD export goes (clients are
// disconnected, events in the order the exports were added), then the
// listener.
func (r *Registry) StopNBD() error {
	if r.server == nil {
		return schema.Errorf("NBD server not running")
	}
	r.server.close() // disconnects every client, stops listening
	r.closeAll(func(x *export) bool { return x.nbd != nil })
	r.server = nil
	return nil
}

// RegisterCommands declares the export commands and event.
func (r *Registry) RegisterCommands(reg *schema.Registry) {
	schema.Define(reg, "nbd-server-start", func(_ context.Context, a *schema.NbdServerStartArgs) (schema.Empty, error) {
		return schema.Empty{}, r.StartNBD(a.Addr.Flat(), a.TLSCreds, a.TLSAuthz, a.MaxConnections, false)
	})
	schema.Define(reg, "nbd-server-stop", func(context.Context, *schema.NoArgs) (schema.Empty, error) {
		return schema.Empty{}, r.StopNBD()
	})
	schema.Define(reg, "nbd-server-add", func(_ context.Context, a *schema.NbdServerAddArgs) (schema.Empty, error) {
		return schema.Empty{}, r.legacyAdd(a)
	}, schema.Features("deprecated"))
	schema.Define(reg, "nbd-server-remove", func(_ context.Context, a *schema.NbdServerRemoveArgs) (schema.Empty, error) {
		return schema.Empty{}, r.legacyRemove(a)
	}, schema.Features("deprecated"))
	schema.Define(reg, "block-export-add", func(_ context.Context, a *schema.BlockExportOptions) (schema.Empty, error) {
		return schema.Empty{}, r.Add(a)
	})
	schema.Define(reg, "block-export-del", func(_ context.Context, a *schema.BlockExportDelArgs) (schema.Empty, error) {
		return schema.Empty{}, r.Del(a.ID, a.Mode)
	})
	schema.Define(reg, "query-block-exports", func(context.Context, *schema.NoArgs) ([]schema.BlockExportInfo, error) {
		return r.Query(), nil
	})
	reg.AddEvent("BLOCK_EXPORT_DELETED", reflect.TypeFor[schema.BlockExportDeleted]())
}

// legacyAdd is nbd-server-add: a block-export-add whose id is the export
// name, which defaults to the device.
func (r *Registry) legacyAdd(a *schema.NbdServerAddArgs) error {
	if r.server == nil {
		return schema.Errorf("NBD server not running")
	}
	name := a.Device
	if a.Name != nil {
		name = *a.Name
	}
	if r.g.Lookup(a.Device) == nil {
		return schema.Errorf("Cannot find device='%s' nor node-name='%s'", a.Device, a.Device)
	}
	o := &schema.BlockExportOptions{Type: "nbd", ID: name, NodeName: a.Device, Writable: a.Writable,
		Nbd: &schema.BlockExportOptionsNbd{Name: &name, Description: a.Description}}
	if a.Bitmap != nil {
		o.Nbd.Bitmaps = []schema.BlockDirtyBitmapOrStr{{Local: a.Bitmap}}
	}
	return r.Add(o)
}

// legacyRemove is nbd-server-remove.
func (r *Registry) legacyRemove(a *schema.NbdServerRemoveArgs) error {
	if r.server == nil {
		return schema.Errorf("NBD server not running")
	}
	x := r.find(a.Name)
	if x == nil || x.nbd == nil {
		return schema.Errorf("Export '%s' is not found", a.Name)
	}
	return r.Del(a.Name, a.Mode)
}
