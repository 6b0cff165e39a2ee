// Package rbd owns the rbd block driver: images of a Ceph cluster's
// RADOS Block Device, opened, created and served through librbd (bound
// at run time by drivers/rbd/librbd). Options, error texts and query
// output are qemu-storage-daemon 7.2's.
package rbd

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"

	"blockd/blockcore"
	"blockd/drivers/rbd/librbd"
	"blockd/internal/errtext"
	"blockd/schema"
)

// errnoErrorf is error_setg_errno: the message, ": ", strerror.
func errnoErrorf(err error, format string, args ...any) error {
	return schema.Errorf("%s: %s", fmt.Sprintf(format, args...), errtext.Strerror(errtext.Errno(err)))
}

// conn is a connected cluster handle and the I/O context of one pool.
type conn struct {
	cluster *librbd.Cluster
	ioctx   *librbd.IOContext
}

func (c *conn) close() {
	if c.ioctx != nil {
		c.ioctx.Destroy()
	}
	if c.cluster != nil {
		c.cluster.Shutdown()
	}
}

// monHost is qemu_rbd_mon_host: the server list as librados' mon_host,
// IPv6 hosts in brackets.
func monHost(servers []schema.InetSocketAddressBase) string {
	var parts []string
	for _, s := range servers {
		parts = append(parts, net.JoinHostPort(s.Host, s.Port))
	}
	return strings.Join(parts, ";")
}

// connect is qemu_rbd_connect: configure a cluster handle from the
// options (conf file, monitors, key, authentication modes, cache),
// connect, and open the pool and namespace. On failure nothing is left
// open.
func connect(o *schema.BlockdevOptionsRbd, cache bool, secrets blockcore.ObjectStore) (_ *conn, err error) {
	if err := librbd.Load(); err != nil {
		return nil, schema.Errorf("%s", err)
	}
	c := &conn{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.cluster, err = librbd.NewCluster(o.User); err != nil {
		return nil, errnoErrorf(err, "error initializing")
	}
	// Without conf librados reads its default locations; their absence
	// is not an error.
	if err := c.cluster.ReadConfFile(o.Conf); err != nil && o.Conf != nil {
		return nil, errnoErrorf(err, "error reading conf file %s", *o.Conf)
	}
	if len(o.Server) > 0 {
		if err := c.cluster.ConfSet("mon_host", monHost(o.Server)); err != nil {
			return nil, errnoErrorf(err, "Could not set 'mon_host'")
		}
	}
	if o.KeySecret != nil {
		if secrets == nil {
			return nil, schema.Errorf("No secret with id '%s'", *o.KeySecret)
		}
		key, err := secrets.Secret(*o.KeySecret)
		if err != nil {
			return nil, err
		}
		if err := c.cluster.ConfSet("key", base64.StdEncoding.EncodeToString(key)); err != nil {
			return nil, errnoErrorf(err, "Could not set 'key'")
		}
	}
	if o.AuthClientRequired != nil {
		modes := make([]string, len(o.AuthClientRequired))
		for i, m := range o.AuthClientRequired {
			modes[i] = string(m)
		}
		if err := c.cluster.ConfSet("auth_client_required", strings.Join(modes, ";")); err != nil {
			return nil, errnoErrorf(err, "Could not set 'auth-client-required'")
		}
	}
	// rbd_cache only fails to set where the option does not exist, and
	// librbd then does not cache.
	if cache {
		_ = c.cluster.ConfSet("rbd_cache", "true")
	} else {
		_ = c.cluster.ConfSet("rbd_cache", "false")
	}
	if err := c.cluster.Connect(); err != nil {
		return nil, errnoErrorf(err, "error connecting")
	}
	if c.ioctx, err = c.cluster.OpenIOContext(o.Pool); err != nil {
		return nil, errnoErrorf(err, "error opening pool %s", o.Pool)
	}
	ns := ""
	if o.Namespace != nil {
		ns = *o.Namespace
	}
	if ns != "" {
		exists, err := c.ioctx.NamespaceExists(ns)
		if err != nil {
			return nil, errnoErrorf(err, "error checking namespace")
		}
		if !exists {
			return nil, schema.Errorf("namespace '%s' does not exist", ns)
		}
	}
	c.ioctx.SetNamespace(ns)
	return c, nil
}
