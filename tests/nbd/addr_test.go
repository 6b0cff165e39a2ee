package nbdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockd/internal/rawsock"
	qmptest "blockd/tests/qmp"
)

// unixSocketFile makes a Unix socket bound at path (listening when
// listen is set) as a file a child inherits.
func unixSocketFile(t *testing.T, path string, listen bool) *os.File {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if listen {
		if err := unix.Listen(fd, 4); err != nil {
			t.Fatal(err)
		}
	}
	f := os.NewFile(uintptr(fd), path)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestNBDServerFdAddress: --nbd-server addr.type=fd,addr.str=N serves on
// an inherited socket, listening or only bound (blockd listens on it, as
// qemu-storage-daemon does); what cannot serve ends blockd with
// qemu-storage-daemon's texts (recorded from 7.2 with the same
// descriptors). Over QMP fd addresses are refused (transcript
// nbd_addr_fd_vsock.qmp).
func TestNBDServerFdAddress(t *testing.T) {
	need(t, "qemu-img")
	dir := t.TempDir()
	img := filepath.Join(dir, "a.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", img, "16M")
	for _, listening := range []bool{true, false} {
		sock := filepath.Join(dir, "fd"+strconv.FormatBool(listening)+".sock")
		f := unixSocketFile(t, sock, listening)
		d := qmptest.StartDaemonFiles(t, blockdBin, dir, []*os.File{f},
			"--blockdev", "driver=file,node-name=n,filename="+img,
			"--nbd-server", "addr.type=fd,addr.str=3",
			"--export", "type=nbd,id=e,node-name=n,name=disk")
		f.Close() // the daemon's copy is the one that serves
		out := run(t, "qemu-img", "info", "nbd+unix:///disk?socket="+sock)
		if !strings.Contains(out, "virtual size: 16 MiB") {
			t.Fatalf("listening=%v: qemu-img info:\n%s", listening, out)
		}
		d.Stop(t)
	}

	regular, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	connected := os.NewFile(uintptr(pair[0]), "pair")
	defer connected.Close()
	defer unix.Close(pair[1])
	for _, tc := range []struct {
		file *os.File
		str  string
		want string
	}{
		{regular, "3", "File descriptor '3' is not a socket"},
		{connected, "3", "Failed to listen on fd socket: Invalid argument"},
		{nil, "abc", "Unable to parse FD number abc"},
		{nil, "", "Unable to parse FD number "},
		{nil, "77", "File descriptor '77' is not a socket"},
	} {
		spec := "addr.type=fd,addr.str=" + tc.str
		cmd := exec.Command(blockdBin, "--nbd-server", spec)
		cmd.Dir = dir
		cmd.SysProcAttr = qmptest.DieWithTest()
		if tc.file != nil {
			cmd.ExtraFiles = []*os.File{tc.file}
		}
		out, err := cmd.CombinedOutput()
		want := "--nbd-server " + spec + ": " + tc.want + "\n"
		if err == nil || !strings.HasSuffix(string(out), want) {
			t.Errorf("%s: %v, output %q, want it to end with %q", spec, err, out, want)
		}
	}
}

// TestNBDServerVsock: nbd-server-start on AF_VSOCK with VMADDR_CID_ANY
// holds the port until nbd-server-stop. A client is driven only where
// this kernel can reach its own listener (vsock loopback); otherwise
// that part is skipped loudly.
func TestNBDServerVsock(t *testing.T) {
	probe, err := rawsock.ListenVsock(unix.VMADDR_CID_ANY, unix.VMADDR_PORT_ANY, 1)
	if err != nil {
		// qemu-storage-daemon then fails nbd-server-start with "Failed
		// to create socket: Address family not supported by protocol".
		// A kernel feature, not a tool: skipped loudly even in CI.
		msg := "AF_VSOCK unavailable in this kernel (" + err.Error() + "): vsock NBD server NOT TESTED"
		fmt.Fprintln(os.Stderr, "*** WARNING: SKIP:", t.Name()+":", msg)
		t.Skip(msg)
	}
	port := probe.Addr().(*rawsock.VsockAddr).Port
	probe.Close()

	dir := t.TempDir()
	img := filepath.Join(dir, "a.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d := qmptest.StartDaemon(t, blockdBin, dir, "--blockdev", "driver=file,node-name=n,filename="+img)
	defer d.Stop(t)
	c := qmptest.Dial(t, d.Sock)
	defer c.Close()
	s := &server{Daemon: d, qmp: c}
	if _, _, err := c.Next(); err != nil {
		t.Fatal(err)
	}
	s.cmd(t, "qmp_capabilities", nil)
	addr := map[string]any{"type": "vsock", "data": map[string]any{"cid": "4294967295", "port": strconv.Itoa(int(port))}}
	s.cmd(t, "nbd-server-start", map[string]any{"addr": addr})
	s.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "n", "name": "disk"})
	if _, err := rawsock.ListenVsock(unix.VMADDR_CID_ANY, port, 1); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("vsock port %d while blockd serves it: %v", port, err)
	}
	if got := s.cmdErr(t, "nbd-server-start", map[string]any{"addr": addr}); got != "NBD server already running" {
		t.Fatalf("second start: %q", got)
	}
	if vsockLoopback(port) {
		need(t, "qemu-img")
		out := run(t, "qemu-img", "info", "--image-opts",
			"driver=nbd,server.type=vsock,server.cid=1,server.port="+strconv.Itoa(int(port))+",export=disk")
		if !strings.Contains(out, "virtual size: 1 MiB") {
			t.Fatalf("qemu-img info over vsock:\n%s", out)
		}
	} else {
		t.Logf("*** WARNING: vsock client NOT TESTED: this kernel has no vsock loopback (CID 1), so nothing here can connect to the listener")
	}
	s.cmd(t, "nbd-server-stop", nil)
	l, err := rawsock.ListenVsock(unix.VMADDR_CID_ANY, port, 1)
	if err != nil {
		t.Fatalf("port %d still held after nbd-server-stop: %v", port, err)
	}
	l.Close()
}

// vsockLoopback says whether a connection to port on VMADDR_CID_LOCAL
// gets through within a second.
func vsockLoopback(port uint32) bool {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv)
	err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port})
	return err == nil || errors.Is(err, syscall.EISCONN)
}
