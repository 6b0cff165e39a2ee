// Package librbd owns blockd's binding of Ceph's client libraries,
// librados.so.2 and librbd.so.1. They are loaded at run time with purego
// (dlopen) the first time an rbd node or image is opened, so that blockd
// builds and runs without Ceph's headers or libraries; without them only
// rbd nodes fail, with an error naming the Debian packages.
//
// Asynchronous requests use librbd's aio API: a completion carries a
// request number, librbd signals finished requests on an eventfd, and a
// goroutine per image harvests them and wakes each waiting goroutine. Data
// buffers are the caller's, pinned (runtime.Pinner) from submission until
// the completion has fired, so librbd never sees memory the garbage
// collector could reuse and no copy is made.
package librbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Library file names and the Debian packages that ship them.
const (
	radosLib = "librados.so.2"
	rbdLib   = "librbd.so.1"
)

// ErrNoLibrary wraps the load failure.
var ErrNoLibrary = errors.New("Ceph client libraries not available")

var (
	loadOnce sync.Once
	loadErr  error
	lib      struct {
		radosCreate       func(cluster *uintptr, id *byte) int32
		radosConfReadFile func(cluster uintptr, path *byte) int32
		radosConfSet      func(cluster uintptr, opt, val string) int32
		radosConnect      func(cluster uintptr) int32
		radosShutdown     func(cluster uintptr)
		radosIoctxCreate  func(cluster uintptr, pool string, ioctx *uintptr) int32
		radosIoctxDestroy func(ioctx uintptr)
		radosIoctxSetNS   func(ioctx uintptr, ns string)

		rbdNamespaceExists func(ioctx uintptr, ns string, exists *byte) int32
		rbdOpen            func(ioctx uintptr, name string, image *uintptr, snap *byte) int32
		rbdClose           func(image uintptr) int32
		rbdCreate          func(ioctx uintptr, name string, size uint64, order *int32) int32
		rbdStat            func(image uintptr, info unsafe.Pointer, size uintptr) int32
		rbdGetSize         func(image uintptr, size *uint64) int32
		rbdResize          func(image uintptr, size uint64) int32
		rbdGetFeatures     func(image uintptr, features *uint64) int32
		rbdGetFlags        func(image uintptr, flags *uint64) int32
		rbdSnapList        func(image uintptr, snaps unsafe.Pointer, max *int32) int32
		rbdSnapListEnd     func(snaps unsafe.Pointer)
		rbdDiffIterate2    func(image uintptr, fromsnap *byte, ofs, length uint64, includeParent uint8, wholeObject int32, cb, arg uintptr) int32

		setImageNotification func(image uintptr, fd, typ int32) int32
		pollIOEvents         func(image uintptr, comps unsafe.Pointer, n int32) int32

		aioCreateCompletion func(arg, cb uintptr, c *uintptr) int32
		aioGetArg           func(c uintptr) uintptr
		aioRelease          func(c uintptr)
		aioGetReturnValue   func(c uintptr) int64
		aioRead             func(image uintptr, off uint64, length uintptr, buf unsafe.Pointer, c uintptr) int32
		aioWrite            func(image uintptr, off uint64, length uintptr, buf unsafe.Pointer, c uintptr) int32
		aioDiscard          func(image uintptr, off, length uint64, c uintptr) int32
		aioWriteZeroes      func(image uintptr, off uint64, length uintptr, c uintptr, zeroFlags, opFlags int32) int32
		aioFlush            func(image uintptr, c uintptr) int32
	}
	diffCB uintptr
)

// Load opens the libraries once; every later call returns the first
// result. The error names the library and the Debian package to install.
func Load() error {
	loadOnce.Do(func() { loadErr = load(radosLib, rbdLib) })
	return loadErr
}

// dlopen opens a library or says which Debian package ships it.
func dlopen(name, pkg string) (uintptr, error) {
	h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return 0, fmt.Errorf("%w: cannot load %s (install the Debian package %s): %v", ErrNoLibrary, name, pkg, err)
	}
	return h, nil
}

func load(radosName, rbdName string) (err error) {
	rados, err := dlopen(radosName, "librados2")
	if err != nil {
		return err
	}
	rbd, err := dlopen(rbdName, "librbd1")
	if err != nil {
		return err
	}
	// RegisterLibFunc panics on a missing symbol (an older library).
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrNoLibrary, r)
		}
	}()
	reg := purego.RegisterLibFunc
	reg(&lib.radosCreate, rados, "rados_create")
	reg(&lib.radosConfReadFile, rados, "rados_conf_read_file")
	reg(&lib.radosConfSet, rados, "rados_conf_set")
	reg(&lib.radosConnect, rados, "rados_connect")
	reg(&lib.radosShutdown, rados, "rados_shutdown")
	reg(&lib.radosIoctxCreate, rados, "rados_ioctx_create")
	reg(&lib.radosIoctxDestroy, rados, "rados_ioctx_destroy")
	reg(&lib.radosIoctxSetNS, rados, "rados_ioctx_set_namespace")
	reg(&lib.rbdNamespaceExists, rbd, "rbd_namespace_exists")
	reg(&lib.rbdOpen, rbd, "rbd_open")
	reg(&lib.rbdClose, rbd, "rbd_close")
	reg(&lib.rbdCreate, rbd, "rbd_create")
	reg(&lib.rbdStat, rbd, "rbd_stat")
	reg(&lib.rbdGetSize, rbd, "rbd_get_size")
	reg(&lib.rbdResize, rbd, "rbd_resize")
	reg(&lib.rbdGetFeatures, rbd, "rbd_get_features")
	reg(&lib.rbdGetFlags, rbd, "rbd_get_flags")
	reg(&lib.rbdSnapList, rbd, "rbd_snap_list")
	reg(&lib.rbdSnapListEnd, rbd, "rbd_snap_list_end")
	reg(&lib.rbdDiffIterate2, rbd, "rbd_diff_iterate2")
	reg(&lib.setImageNotification, rbd, "rbd_set_image_notification")
	reg(&lib.pollIOEvents, rbd, "rbd_poll_io_events")
	reg(&lib.aioCreateCompletion, rbd, "rbd_aio_create_completion")
	reg(&lib.aioGetArg, rbd, "rbd_aio_get_arg")
	reg(&lib.aioRelease, rbd, "rbd_aio_release")
	reg(&lib.aioGetReturnValue, rbd, "rbd_aio_get_return_value")
	reg(&lib.aioRead, rbd, "rbd_aio_read")
	reg(&lib.aioWrite, rbd, "rbd_aio_write")
	reg(&lib.aioDiscard, rbd, "rbd_aio_discard")
	reg(&lib.aioWriteZeroes, rbd, "rbd_aio_write_zeroes")
	reg(&lib.aioFlush, rbd, "rbd_aio_flush")
	diffCB = purego.NewCallback(onDiffExtent)
	return nil
}

// Errno is a librados/librbd failure: the negative return as an errno.
func errno(r int64) error { return syscall.Errno(-r) }

// cstr returns a NUL-terminated copy of s, or nil for "no string".
func cstr(s *string) *byte {
	if s == nil {
		return nil
	}
	b := make([]byte, len(*s)+1)
	copy(b, *s)
	return &b[0]
}

// Cluster is a librados handle (rados_t).
type Cluster struct{ h uintptr }

// NewCluster is rados_create; user nil means the default client.
func NewCluster(user *string) (*Cluster, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	var h uintptr
	if r := lib.radosCreate(&h, cstr(user)); r < 0 {
		return nil, errno(int64(r))
	}
	return &Cluster{h: h}, nil
}

// ReadConfFile is rados_conf_read_file; nil reads the default locations.
func (c *Cluster) ReadConfFile(path *string) error {
	if r := lib.radosConfReadFile(c.h, cstr(path)); r < 0 {
		return errno(int64(r))
	}
	return nil
}

// ConfSet is rados_conf_set.
func (c *Cluster) ConfSet(opt, val string) error {
	if r := lib.radosConfSet(c.h, opt, val); r < 0 {
		return errno(int64(r))
	}
	return nil
}

// Connect is rados_connect.
func (c *Cluster) Connect() error {
	if r := lib.radosConnect(c.h); r < 0 {
		return errno(int64(r))
	}
	return nil
}

// Shutdown is rados_shutdown; the handle is unusable afterwards.
func (c *Cluster) Shutdown() {
	if c.h != 0 {
		lib.radosShutdown(c.h)
		c.h = 0
	}
}

// IOContext is a pool's I/O context (rados_ioctx_t).
type IOContext struct{ h uintptr }

// OpenIOContext is rados_ioctx_create.
func (c *Cluster) OpenIOContext(pool string) (*IOContext, error) {
	var h uintptr
	if r := lib.radosIoctxCreate(c.h, pool, &h); r < 0 {
		return nil, errno(int64(r))
	}
	return &IOContext{h: h}, nil
}

// Destroy is rados_ioctx_destroy.
func (io *IOContext) Destroy() {
	if io.h != 0 {
		lib.radosIoctxDestroy(io.h)
		io.h = 0
	}
}

// SetNamespace is rados_ioctx_set_namespace.
func (io *IOContext) SetNamespace(ns string) { lib.radosIoctxSetNS(io.h, ns) }

// NamespaceExists is rbd_namespace_exists.
func (io *IOContext) NamespaceExists(ns string) (bool, error) {
	var b byte
	if r := lib.rbdNamespaceExists(io.h, ns, &b); r < 0 {
		return false, errno(int64(r))
	}
	return b != 0, nil
}

// CreateImage is rbd_create; order 0 lets librbd choose the object size.
func (io *IOContext) CreateImage(name string, size uint64, order int) error {
	o := int32(order)
	if r := lib.rbdCreate(io.h, name, size, &o); r < 0 {
		return errno(int64(r))
	}
	return nil
}

// Image is an open rbd image (rbd_image_t) and the poller of its
// completions.
type Image struct {
	h        uintptr
	events   *os.File      // the eventfd librbd signals completions on
	polled   chan struct{} // closed when the poller has ended
	stopping atomic.Bool   // the poller ends at its next wake-up
}

// OpenImage is rbd_open, at a snapshot when snap is not nil.
func (io *IOContext) OpenImage(name string, snap *string) (*Image, error) {
	var h uintptr
	if r := lib.rbdOpen(io.h, name, &h, cstr(snap)); r < 0 {
		return nil, errno(int64(r))
	}
	im := &Image{h: h}
	if err := im.startPoller(); err != nil {
		lib.rbdClose(h)
		return nil, err
	}
	return im, nil
}

// Close is rbd_close. It waits for librbd's own work on the image
// (writeback cache, lock release); the caller has waited for its
// requests, so no completion is pending and the poller can stop first.
// The eventfd closes only after rbd_close: librbd keeps its number until
// then, and a number reused by another open must never be written to.
func (im *Image) Close() error {
	if im.h == 0 {
		return nil
	}
	im.stopping.Store(true)
	var one [8]byte // the eventfd counter is a native-endian uint64
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = im.events.Write(one[:])
	<-im.polled
	r := lib.rbdClose(im.h)
	im.h = 0
	im.events.Close()
	if r < 0 {
		return errno(int64(r))
	}
	return nil
}

// Info is the part of rbd_image_info_t blockd uses.
type Info struct {
	Size       uint64
	ObjectSize uint64
}

// Stat is rbd_stat.
func (im *Image) Stat() (Info, error) {
	// rbd_image_info_t: size, obj_size, num_objs (uint64), order (int),
	// block_name_prefix[24], parent_pool (int64), parent_name[96]: 160
	// bytes; the buffer is larger in case of padding.
	var buf [256]byte
	if r := lib.rbdStat(im.h, unsafe.Pointer(&buf[0]), 160); r < 0 {
		return Info{}, errno(int64(r))
	}
	return Info{
		Size:       *(*uint64)(unsafe.Pointer(&buf[0])),
		ObjectSize: *(*uint64)(unsafe.Pointer(&buf[8])),
	}, nil
}

// Size is rbd_get_size.
func (im *Image) Size() (uint64, error) {
	var s uint64
	if r := lib.rbdGetSize(im.h, &s); r < 0 {
		return 0, errno(int64(r))
	}
	return s, nil
}

// Resize is rbd_resize.
func (im *Image) Resize(size uint64) error {
	if r := lib.rbdResize(im.h, size); r < 0 {
		return errno(int64(r))
	}
	return nil
}

// Feature and flag bits of librbd.h.
const (
	FeatureFastDiff      = 1 << 4
	FlagFastDiffInvalid  = 1 << 1
	writeZeroesThickProv = 1 << 0 // RBD_WRITE_ZEROES_FLAG_THICK_PROVISION
)

// Features is rbd_get_features.
func (im *Image) Features() (uint64, error) {
	var f uint64
	if r := lib.rbdGetFeatures(im.h, &f); r < 0 {
		return 0, errno(int64(r))
	}
	return f, nil
}

// Flags is rbd_get_flags.
func (im *Image) Flags() (uint64, error) {
	var f uint64
	if r := lib.rbdGetFlags(im.h, &f); r < 0 {
		return 0, errno(int64(r))
	}
	return f, nil
}

// Snapshot is one entry of rbd_snap_list.
type Snapshot struct {
	ID   uint64
	Size uint64
	Name string
}

// Snapshots is rbd_snap_list.
func (im *Image) Snapshots() ([]Snapshot, error) {
	max := int32(16)
	for {
		// rbd_snap_info_t: id, size (uint64), name (char *): 24 bytes.
		// librbd fills C strings into it, so the array is C-visible
		// only for this call and freed by rbd_snap_list_end.
		buf := make([]byte, 24*int(max))
		n := max
		r := lib.rbdSnapList(im.h, unsafe.Pointer(&buf[0]), &n)
		if r == -int32(syscall.ERANGE) {
			max = n
			continue
		}
		if r < 0 {
			return nil, errno(int64(r))
		}
		out := make([]Snapshot, 0, r)
		for i := 0; i < int(r); i++ {
			e := buf[24*i:]
			name := *(**byte)(unsafe.Pointer(&e[16]))
			out = append(out, Snapshot{
				ID:   *(*uint64)(unsafe.Pointer(&e[0])),
				Size: *(*uint64)(unsafe.Pointer(&e[8])),
				Name: goString(name),
			})
		}
		lib.rbdSnapListEnd(unsafe.Pointer(&buf[0]))
		runtime.KeepAlive(buf)
		return out, nil
	}
}

func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
