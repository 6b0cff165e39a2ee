package objects

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"blockd/internal/errtext"
	"blockd/internal/qdict"
	"blockd/internal/wire"
	"blockd/schema"
)

// authzListFileInst is an authz-list-file object (QEMU's
// authz/listfile.c): an authz-list whose policy and rules come from a
// JSON file, read again whenever the file changes when refresh is on.
// list is nil when the last reading failed, which denies everyone.
// filename and list change under the registry's lock.
type authzListFileInst struct {
	r        *Registry
	id       string
	filename *string
	refresh  bool
	list     *authzListInst
	watch    *os.File // the inotify descriptor; nil without refresh
	done     chan struct{}
}

func fileOf(inst any) *authzListFileInst { return inst.(*authzListFileInst) }

func init() {
	RegisterClass(&Class{Name: "authz-list-file", QAPIName: "authz-listfile", Parent: "authz",
		Props: []Property{
			strProp("filename", func(inst any) **string { return &fileOf(inst).filename }),
			{Name: "refresh", Type: "bool",
				Get: func(inst any) any { return fileOf(inst).refresh },
				Set: func(inst any, n string, v json.RawMessage) error {
					b, err := visitBool(n, v)
					if err == nil {
						fileOf(inst).refresh = b
					}
					return err
				}},
		},
		Init: func(o *ObjectOptions) (any, error) {
			// refresh is on by default where QEMU has inotify, as on Linux.
			a := &authzListFileInst{id: o.ID, refresh: true}
			if p := o.AuthzListFile; p != nil { // filename is required: decoding checked it
				a.filename = &p.Filename
				if p.Refresh != nil {
					a.refresh = *p.Refresh
				}
			}
			return a, nil
		},
		Complete: func(r *Registry, inst any) error { return fileOf(inst).complete(r) },
		Finalize: func(inst any) { fileOf(inst).stopWatching() },
	})
}

// complete is qauthz_list_file_complete: load the file, then watch its
// directory for it.
func (a *authzListFileInst) complete(r *Registry) error {
	a.r = r
	if a.filename == nil {
		return schema.Errorf("filename not provided")
	}
	list, err := loadAuthzList(*a.filename)
	if err != nil {
		return err
	}
	a.list = list
	if !a.refresh {
		return nil
	}
	dir, file := filepath.Dir(*a.filename), filepath.Base(*a.filename)
	if dir == "." {
		return schema.Errorf("Filename must be an absolute path")
	}
	if file == "." {
		return schema.Errorf("Path has no trailing filename component")
	}
	return a.startWatching(dir, file)
}

// loadAuthzList is qauthz_list_file_load: the file must hold a JSON
// object, whose members are set as authz-list's properties.
func loadAuthzList(filename string) (*authzListInst, error) {
	b, err := os.ReadFile(filename)
	if err != nil {
		return nil, schema.Errorf("Unable to read '%s': %s", filename, gFileError(filename, err))
	}
	switch {
	case len(bytes.TrimSpace(b)) == 0:
		return nil, schema.Errorf("Expecting a JSON value")
	case !json.Valid(b):
		return nil, schema.Errorf("%s", wire.SyntaxError(b))
	}
	if text := wire.Check(b); text != "" {
		return nil, schema.Errorf("%s", text)
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(b, &members) != nil || members == nil {
		return nil, schema.Errorf("File '%s' must contain a JSON object", filename)
	}
	// user_creatable_add_type sets the properties in the QDict's order.
	var d qdict.Dict
	keys := make([]string, 0, len(members))
	for k := range members {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		d = d.Set(k, members[k])
	}
	class := lookupClass("authz-list")
	list := &authzListInst{policy: "deny"}
	for _, e := range d.Ordered() {
		p := class.prop(e.Key)
		if p == nil || p.Set == nil {
			return nil, schema.Errorf("Property 'authz-list.%s' not found", e.Key)
		}
		if err := p.Set(list, e.Key, e.Val.(json.RawMessage)); err != nil {
			return nil, err
		}
	}
	return list, nil
}

// gFileError is the message of g_file_get_contents' GError.
func gFileError(filename string, err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "open" {
		return fmt.Sprintf("Failed to open file “%s”: %s", filename, errtext.Strerror(errtext.Errno(err)))
	}
	return fmt.Sprintf("Error reading file “%s”: %s", filename, errtext.Strerror(errtext.Errno(err)))
}

// allows is qauthz_list_file_is_allowed; the registry's lock is held.
func (a *authzListFileInst) allows(identity string) bool {
	return a.list != nil && a.list.allows(identity)
}

// The events QEMU's file monitor watches a directory for.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_ATTRIB

// startWatching is qemu_file_monitor_add_watch: inotify on dir, and a
// goroutine that reloads the rules when file is modified or created
// (written in place, or renamed into place).
func (a *authzListFileInst) startWatching(dir, file string) error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return schema.Errorf("Unable to initialize inotify: %s", errtext.Strerror(errtext.Errno(err)))
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		_ = unix.Close(fd)
		return schema.Errorf("Unable to watch '%s': %s", dir, errtext.Strerror(errtext.Errno(err)))
	}
	// Non-blocking, so that the runtime's poller serves the reads and
	// Close ends a pending one.
	a.watch = os.NewFile(uintptr(fd), "inotify")
	a.done = make(chan struct{})
	go a.watchLoop(file)
	return nil
}

func (a *authzListFileInst) watchLoop(file string) {
	defer close(a.done)
	buf := make([]byte, 64*1024)
	for {
		n, err := a.watch.Read(buf)
		if err != nil {
			return // closed by object-del
		}
		reload := false
		// struct inotify_event: wd, mask, cookie, len, then the name
		// padded with NULs.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
			off += unix.SizeofInotifyEvent + nameLen
			if string(bytes.TrimRight(name, "\x00")) == file && mask&(unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_MODIFY) != 0 {
				reload = true
			}
		}
		if reload {
			a.reload()
		}
	}
}

// reload is qauthz_list_file_event: the new rules replace the old, and
// a file that cannot be read denies everyone until it can.
func (a *authzListFileInst) reload() {
	a.r.mu.Lock()
	name := str(a.filename) // qom-set may have changed it
	a.r.mu.Unlock()
	list, err := loadAuthzList(name)
	a.r.mu.Lock()
	a.list = list
	a.r.mu.Unlock()
	if err != nil {
		a.r.log.Error("authz-list-file: reloading the rules failed; everyone is denied until they load",
			zap.String("id", a.id), zap.Error(err))
		return
	}
	a.r.log.Info("authz-list-file: rules reloaded", zap.String("id", a.id), zap.String("filename", name))
}

func (a *authzListFileInst) stopWatching() {
	if a.watch == nil {
		return
	}
	_ = a.watch.Close()
	<-a.done
}
