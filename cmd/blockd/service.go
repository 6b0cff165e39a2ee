package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Running as a service: --daemonize as qemu-storage-daemon 7.2 does it
// (the parent exits once start-up is complete, with the child's exit
// status if start-up failed), and systemd socket activation (the monitor
// and JSON-RPC sockets passed in as LISTEN_FDS).
//
// Go cannot fork a running runtime, so the parent re-executes itself with
// the same arguments, an environment marker and the write end of a pipe;
// the child starts in a new session, reports "ready" on the pipe once its
// sockets are listening, then detaches from the terminal as QEMU's
// os_setup_post does (working directory /, standard streams /dev/null).

const envDaemonFD = "BLOCKD_DAEMONIZE_FD"

// daemonizeParent runs the daemon in a detached child and returns the
// parent's exit status: 0 once the child reports ready, else the child's
// status (its start-up errors went to our stderr).
func daemonizeParent() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "blockd: --daemonize: %s\n", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "blockd: --daemonize: %s\n", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envDaemonFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "blockd: --daemonize: %s\n", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if string(msg) == "ready" {
		_ = cmd.Process.Release()
		return 0
	}
	// The child failed (or died) before start-up completed.
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code > 0 {
		return code
	}
	return 1
}

// daemonChild is the child's side: the pipe to report readiness on, or
// nil when this process was not started by daemonizeParent.
func daemonChild() *os.File {
	s := os.Getenv(envDaemonFD)
	if s == "" {
		return nil
	}
	os.Unsetenv(envDaemonFD)
	fd, err := strconv.Atoi(s)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), "daemonize-pipe")
}

// detach tells the parent that start-up is complete and leaves the
// terminal: working directory /, stdin, stdout and stderr on /dev/null.
func detach(ready *os.File) error {
	if err := os.Chdir("/"); err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	for _, fd := range []int{0, 1, 2} {
		if err := syscall.Dup2(int(null.Fd()), fd); err != nil {
			return err
		}
	}
	null.Close()
	_, err = ready.Write([]byte("ready"))
	ready.Close()
	return err
}

// activatedListeners are the sockets systemd passed (sd_listen_fds): fds
// 3.. when LISTEN_PID is this process. A socket named "jsonrpc" in
// LISTEN_FDNAMES (FileDescriptorName= in the unit) serves JSON-RPC; the
// others serve QMP.
type activatedListener struct {
	l       net.Listener
	jsonrpc bool
}

func activatedListeners() ([]activatedListener, error) {
	pid, nfds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || nfds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	// Children (there are none, but be safe) must not see them again.
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a number of sockets", nfds)
	}
	var out []activatedListener
	for i := 0; i < n; i++ {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), fmt.Sprintf("LISTEN_FD_%d", fd))
		l, err := net.FileListener(f)
		f.Close() // FileListener dups the descriptor
		if err != nil {
			return nil, fmt.Errorf("socket activation: fd %d: %w", fd, err)
		}
		if _, ok := l.(*net.UnixListener); !ok {
			l.Close()
			return nil, errors.New("socket activation: only unix sockets are supported")
		}
		out = append(out, activatedListener{l: l, jsonrpc: i < len(names) && names[i] == "jsonrpc"})
	}
	return out, nil
}

// serveActivated serves the sockets systemd passed in and returns how
// many there were.
func (d *daemon) serveActivated() (int, error) {
	ls, err := activatedListeners()
	if err != nil {
		return 0, err
	}
	for _, a := range ls {
		d.listeners = append(d.listeners, a.l)
		name := a.l.Addr().String()
		if a.jsonrpc {
			d.serve(a.l, name, "JSON-RPC endpoint listening (socket activation)", d.rpc.Serve)
		} else {
			d.serve(a.l, name, "QMP monitor listening (socket activation)", d.qmp.Serve)
		}
	}
	return len(ls), nil
}
