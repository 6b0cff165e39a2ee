package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func buildBlockd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "blockd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// qmpCall connects to a QMP socket, negotiates and runs one command.
func qmpCall(t *testing.T, sock, cmd string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		t.Fatal(err)
	}
	var reply map[string]any
	for _, m := range []string{"qmp_capabilities", cmd} {
		if _, err := c.Write([]byte(`{"execute": "` + m + `"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			reply = nil
			if err := json.Unmarshal(line, &reply); err != nil {
				t.Fatal(err)
			}
			if _, ev := reply["event"]; !ev {
				break
			}
		}
	}
	return reply
}

func processGone(pid int) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// --daemonize: the parent exits 0 once the sockets listen, the daemon runs
// on in its own session with its standard streams on /dev/null and its
// working directory /, and a start-up failure makes the parent exit 1
// with the error on its stderr.
func TestDaemonize(t *testing.T) {
	bin := buildBlockd(t)
	dir := t.TempDir()
	sock, pidfile := filepath.Join(dir, "m.sock"), filepath.Join(dir, "p.pid")
	cmd := exec.Command(bin, "--daemonize", "--socket", sock, "--pidfile", pidfile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("blockd --daemonize: %v: %s", err, stderr.String())
	}
	// Start-up is complete when the parent returns: the socket is there.
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket missing after the parent exited: %v", err)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == cmd.Process.Pid {
		t.Fatalf("pidfile %q (parent was %d)", b, cmd.Process.Pid)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// Field 6 of /proc/PID/stat is the session id.
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		_, rest, _ := strings.Cut(string(st), ") ")
		if f := strings.Fields(rest); len(f) < 4 || f[3] != strconv.Itoa(pid) {
			t.Errorf("daemon %d is not a session leader: %s", pid, st)
		}
	}
	if cwd, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd"); cwd != "/" {
		t.Errorf("daemon's working directory is %q, want /", cwd)
	}
	for _, fd := range []string{"0", "1", "2"} {
		if l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd); l != os.DevNull {
			t.Errorf("daemon's fd %s is %q, want %s", fd, l, os.DevNull)
		}
	}
	if r := qmpCall(t, sock, "quit"); r["return"] == nil {
		t.Errorf("quit: %v", r)
	}
	if !processGone(pid) {
		t.Fatal("daemon did not exit after quit")
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind: %v", err)
	}

	bad := exec.Command(bin, "--daemonize", "--socket", filepath.Join(dir, "b.sock"),
		"--blockdev", `{"driver":"qcow2","node-name":"a","file":{"driver":"file","filename":"/nonexistent"}}`)
	stderr.Reset()
	bad.Stderr = &stderr
	err = bad.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
		!strings.Contains(stderr.String(), "Could not open '/nonexistent'") {
		t.Errorf("failing start-up: %v: %s", err, stderr.String())
	}
}

// Socket activation: the sockets systemd would pass (LISTEN_FDS, fds 3..,
// LISTEN_PID the daemon's own pid) serve QMP, and JSON-RPC for the one
// named "jsonrpc"; no default socket is created beside them.
func TestSocketActivation(t *testing.T) {
	bin := buildBlockd(t)
	dir := t.TempDir()
	var files []*os.File
	for _, n := range []string{"qmp.sock", "rpc.sock"} {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, n), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		files = append(files, f)
	}
	// LISTEN_PID must be the daemon's pid: the shell sets it to its own
	// and then becomes blockd.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=qmp:jsonrpc", "XDG_RUNTIME_DIR="+dir)
	cmd.ExtraFiles = files
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for _, f := range files {
		f.Close()
	}
	if r := qmpCall(t, filepath.Join(dir, "qmp.sock"), "query-version"); r["return"] == nil {
		t.Fatalf("QMP on the activated socket: %v (%s)", r, stderr.String())
	}
	c, err := net.Dial("unix", filepath.Join(dir, "rpc.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(`{"jsonrpc": "2.0", "id": 1, "method": "query-version"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), `"result"`) {
		t.Fatalf("JSON-RPC on the activated socket: %v %s", err, line)
	}
	if _, err := os.Stat(filepath.Join(dir, "blockd.sock")); !os.IsNotExist(err) {
		t.Errorf("default socket created beside the activated ones: %v", err)
	}
}

// Every socket is bound before any is served: when a later socket cannot
// be bound, blockd exits without having greeted a client that was already
// waiting on an earlier one. The waiting client is queued on an activated
// socket before blockd starts, so it is there from the first instant.
func TestNoSocketServedWhenALaterOneFailsToBind(t *testing.T) {
	bin := buildBlockd(t)
	dir := t.TempDir()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "qmp.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := net.Dial("unix", filepath.Join(dir, "qmp.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	// A monitor socket in a directory that does not exist cannot be bound.
	bad := filepath.Join(dir, "missing", "m.sock")
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin,
		"--chardev", "socket,id=m,path="+bad+",server=on,wait=off", "--monitor", "chardev=m")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "XDG_RUNTIME_DIR="+dir)
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("blockd did not exit on a socket it cannot bind")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("blockd with an unbindable socket: %v: %s", err, stderr.String())
	}
	// Our copies of the listener go too, so the waiting client sees the
	// end of a connection nobody accepted rather than a silent one.
	f.Close()
	l.Close()
	_ = waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := waiting.Read(make([]byte, 1)); n != 0 {
		t.Fatalf("a client got data from blockd, which then failed to start (%v): %s", err, stderr.String())
	}
}

// The daemon re-executes itself with glibc's malloc limited to one arena
// (malloc.go), keeping its pid, and leaves an operator's own arena_max
// alone. glibc splits GLIBC_TUNABLES at ':' in place, so the process's
// environment is searched as raw bytes.
func TestMallocArenaLimit(t *testing.T) {
	bin := buildBlockd(t)
	for _, tc := range []struct {
		tunables string // "" leaves GLIBC_TUNABLES unset
		want     []string
		notWant  []string
	}{
		{"", []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=1", reexecMarker + "=1"}, nil},
		{"glibc.malloc.tcache_count=0", []string{"glibc.malloc.tcache_count=0", "glibc.malloc.arena_max=1"}, nil},
		{"glibc.malloc.arena_max=4", []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=4"}, []string{"arena_max=1", reexecMarker}},
	} {
		dir := t.TempDir()
		sock := filepath.Join(dir, "qmp.sock")
		cmd := exec.Command(bin, "--chardev", "socket,id=m,path="+sock+",server=on,wait=off", "--monitor", "chardev=m")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GLIBC_TUNABLES=") && !strings.HasPrefix(kv, reexecMarker+"=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if tc.tunables != "" {
			cmd.Env = append(cmd.Env, "GLIBC_TUNABLES="+tc.tunables)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(sock); err == nil {
				break
			}
		}
		if r := qmpCall(t, sock, "query-version"); r["return"] == nil {
			t.Fatalf("%q: query-version: %v", tc.tunables, r)
		}
		// The pid that answered is the one started: exec kept it, and
		// the process name too.
		proc := "/proc/" + strconv.Itoa(cmd.Process.Pid)
		env, err := os.ReadFile(proc + "/environ")
		comm, _ := os.ReadFile(proc + "/comm")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if string(comm) != "blockd\n" {
			t.Errorf("GLIBC_TUNABLES=%q: process name %q, want blockd", tc.tunables, comm)
		}
		for _, w := range tc.want {
			if !bytes.Contains(env, []byte(w)) {
				t.Errorf("GLIBC_TUNABLES=%q: the daemon's environment lacks %q", tc.tunables, w)
			}
		}
		for _, w := range tc.notWant {
			if bytes.Contains(env, []byte(w)) {
				t.Errorf("GLIBC_TUNABLES=%q: the daemon's environment has %q", tc.tunables, w)
			}
		}
	}
}
