package exports

import (
	"context"
	"net"
	"os"
	"reflect"
	"sync"

	"go.uber.org/zap"

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
func (r *Registry) StartNBD(addr schema.SocketAddress, tlsCreds, tlsAuthz *string, maxConn *uint32) error {
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
	l, err := listen(addr)
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
		if err := s.srv.Serve(l); err != nil {
			r.log.Error("NBD server failed", zap.Error(err))
		}
	}()
	r.server = s
	return nil
}

// listen opens the server's socket as QEMU's socket_listen does (a Unix
// socket path already there is replaced).
func listen(a schema.SocketAddress) (net.Listener, error) {
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
	case a.Fd != nil:
		return nil, schema.Errorf("File descriptor named '%s' has not been found", a.Fd.Str)
	}
	return nil, schema.Errorf("socket family %s unsupported", a.Type)
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
		return schema.Empty{}, r.StartNBD(a.Addr.Flat(), a.TLSCreds, a.TLSAuthz, a.MaxConnections)
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
