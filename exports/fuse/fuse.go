// Package fuse owns blockd's FUSE export: one block device presented as a
// single regular file mounted over an existing regular file, the way
// qemu-storage-daemon's "--export type=fuse" presents a node. It maps the
// kernel's requests to the device (read, write, fallocate's punch-hole
// and zero-range, fsync, truncate, SEEK_DATA/SEEK_HOLE) with the
// reference's rules and errno values, and it unmounts cleanly even while
// clients still hold the file open.
//
// The package knows nothing of the block graph: the export registry owns
// the node, its permissions (consistent-read, plus write and resize when
// writable or growable) and the export's lifetime, and hands Mount the
// node's data path.
package fuse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"blockd/blockio"
	"blockd/internal/errtext"
)

// Options are the type-specific options of a FUSE export
// (BlockExportOptionsFuse) plus the common "writable".
type Options struct {
	Mountpoint string
	Writable   bool
	Growable   bool
	// AllowOther is "on", "off" or "auto" ("" means auto): auto mounts
	// with allow_other and falls back to a mount without it.
	AllowOther string
}

// AllocatedSizer is implemented by devices that know how much space their
// image takes on the host (QEMU's bdrv_get_allocated_file_size); the
// export reports it as st_blocks. Other devices report their length.
type AllocatedSizer interface {
	AllocatedSize() (int64, bool)
}

// Export is one mounted FUSE export.
type Export struct {
	dev        blockio.Device
	mountpoint string // as given; also the key of the mountpoint table
	writable   bool
	growable   bool
	allowOther bool

	srv    *gofuse.Server
	served chan struct{} // closed when the server's loop has returned
	fsDev  uint64        // st_dev of the mounted file system

	// gate keeps requests and Unmount apart: every request holds it for
	// reading while it touches dev; Unmount takes it for writing once, so
	// no request is inside dev when Unmount returns and none enters after.
	gate   sync.RWMutex
	closed bool

	// resizeMu orders the export's own resizes, so that two writes past
	// the end racing to grow the device never shrink it.
	resizeMu sync.Mutex

	attrMu   sync.Mutex // the attributes chmod/chown may change
	mode     uint32
	uid, gid uint32

	unmountOnce sync.Once
	unmountErr  error
}

// exports is the table of mountpoints in use by this process, keyed by the
// path string as given (the reference compares the strings too: it cannot
// stat a mountpoint it serves itself).
var (
	exportsMu sync.Mutex
	exports   = map[string]bool{}
)

// Mount mounts dev over opts.Mountpoint and serves it until Unmount.
func Mount(dev blockio.Device, opts Options) (*Export, error) {
	allow := opts.AllowOther
	switch allow {
	case "":
		allow = "auto"
	case "on", "off", "auto":
	default:
		return nil, fmt.Errorf("Parameter 'allow-other' does not accept value '%s'", allow)
	}
	mp := opts.Mountpoint
	exportsMu.Lock()
	if exports[mp] {
		exportsMu.Unlock()
		return nil, fmt.Errorf("There already is a FUSE export on '%s'", mp)
	}
	exports[mp] = true // reserved while we mount; released on failure
	exportsMu.Unlock()
	release := func() {
		exportsMu.Lock()
		delete(exports, mp)
		exportsMu.Unlock()
	}

	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		release()
		return nil, fmt.Errorf("Failed to stat '%s': %s", mp, errtext.Strerror(errtext.Errno(err)))
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		release()
		return nil, fmt.Errorf("'%s' is not a regular file", mp)
	}

	e := &Export{
		dev:        dev,
		mountpoint: mp,
		writable:   opts.Writable,
		growable:   opts.Growable,
		mode:       syscall.S_IFREG | 0o400,
		uid:        uint32(os.Getuid()),
		gid:        uint32(os.Getgid()),
		served:     make(chan struct{}),
	}
	if e.writable {
		e.mode |= 0o200
	}
	var err error
	if allow == "auto" {
		// Try allow_other first and ignore its failure, as the reference.
		e.allowOther = true
		if e.srv, err = e.mount(true); err != nil {
			e.allowOther = false
			e.srv, err = e.mount(false)
		}
	} else {
		e.allowOther = allow == "on"
		e.srv, err = e.mount(e.allowOther)
	}
	if err != nil {
		release()
		return nil, errors.New("Failed to mount FUSE session to export")
	}
	go func() {
		e.srv.Serve()
		close(e.served)
	}()
	// The kernel's INIT was answered inside NewServer, so the file is
	// served now. Make the kernel ask FUSE_POLL once and learn that we
	// do not implement it (go-fuse's WaitMount does this on a directory
	// entry, which a file mount does not have): a Go client in this
	// process would otherwise have its epoll registration wait on us.
	if fd, err := syscall.Open(mp, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		_ = syscall.Close(fd)
	}
	var mst syscall.Stat_t
	if syscall.Stat(mp, &mst) == nil {
		e.fsDev = mst.Dev
	}
	return e, nil
}

// maxWrite is the largest request the kernel sends us (its own limit with
// the default max_pages is 1 MiB); bigger requests mean fewer round trips.
const maxWrite = 1 << 20

func (e *Export) mount(allowOther bool) (*gofuse.Server, error) {
	abs, err := filepath.Abs(e.mountpoint)
	if err != nil {
		return nil, err
	}
	return gofuse.NewServer(&rawFS{e: e, RawFileSystem: gofuse.NewDefaultRawFileSystem()}, abs, &gofuse.MountOptions{
		AllowOther: allowOther,
		// default_permissions: the kernel checks the mode we report,
		// as with the reference's mount.
		Options:  []string{"default_permissions"},
		MaxWrite: maxWrite,
		FsName:   "blockd",
		Name:     "blockd",
		// Mount directly when we may (root); otherwise go-fuse uses
		// fusermount3, as libfuse does.
		DirectMount: true,
		// Extended attributes are not part of the export; refusing them
		// up front spares the kernel a getxattr before every write.
		DisableXAttrs: true,
		// Replies carry data from memory: writev is the direct path, and
		// splicing a full 1 MiB reply would not fit a pipe anyway.
		DisableSplice: true,
	})
}

// Mountpoint is the path the export was mounted on.
func (e *Export) Mountpoint() string { return e.mountpoint }

// Unmount stops the export: it waits for requests inside the device,
// refuses new ones, and detaches the mount lazily so that a client
// holding the file open cannot block it (its later requests fail). It is
// idempotent and safe to call from a signal-driven shutdown. It waits for
// requests inside the device, so it must not be called while the device
// is held drained (a request waiting on the drain would never finish).
func (e *Export) Unmount() error {
	e.unmountOnce.Do(func() {
		e.gate.Lock()
		e.closed = true
		e.gate.Unlock()
		e.unmountErr = e.detach()
		// With no client left the kernel ends the connection at once and
		// the server's loop returns; with clients it ends when the last
		// one closes. Aborting the connection through fusectl, when it is
		// mounted, ends it now. Neither is waited for beyond a moment
		// (Unmount may run on the graph's owner): the device is no longer
		// touched either way.
		e.abortConnection()
		select {
		case <-e.served:
		case <-time.After(200 * time.Millisecond):
		}
		exportsMu.Lock()
		delete(exports, e.mountpoint)
		exportsMu.Unlock()
	})
	return e.unmountErr
}

// detach unmounts the file system lazily (MNT_DETACH), directly when the
// process may, otherwise through fusermount3 -u -z as libfuse does.
func (e *Export) detach() error {
	abs, err := filepath.Abs(e.mountpoint)
	if err != nil {
		return err
	}
	err = syscall.Unmount(abs, syscall.MNT_DETACH)
	if err == nil || err == syscall.EINVAL { // EINVAL: not mounted (any more)
		return nil
	}
	return fusermountDetach(abs)
}

// abortConnection aborts the FUSE connection through the fusectl file
// system if it is mounted; best effort.
func (e *Export) abortConnection() {
	if e.fsDev == 0 {
		return
	}
	minor := e.fsDev & 0xff
	minor |= (e.fsDev >> 12) & 0xfff00
	f, err := os.OpenFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", minor), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString("1")
	_ = f.Close()
}

// enter admits a request; false once the export is unmounted.
func (e *Export) enter() bool {
	e.gate.RLock()
	if e.closed {
		e.gate.RUnlock()
		return false
	}
	return true
}

func (e *Export) leave() { e.gate.RUnlock() }
