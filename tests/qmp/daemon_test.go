package qmptest

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSigtermRemovesSocketAndPidfile(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "blockd.pid")
	d := StartDaemon(t, blockdBin, dir, "--pidfile", pidfile)
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pidfile: %v", err)
	}
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != d.cmd.Process.Pid {
		t.Fatalf("pidfile holds %q, process is %d", b, d.cmd.Process.Pid)
	}
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	d.Stop(t) // SIGTERM; checks exit 0 and the socket's removal
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatalf("pidfile left behind: %v", err)
	}
	if _, _, err := c.Next(); err == nil {
		t.Fatal("connection still open after shutdown")
	}
}

func TestQuitRepliesThenExits(t *testing.T) {
	d := StartDaemon(t, blockdBin, t.TempDir())
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	if r, _ := c.Command(t, "quit", nil); r["return"] == nil {
		t.Fatalf("quit: %v", r)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("exit after quit: %v", err)
	}
	if _, err := os.Stat(d.Sock); !os.IsNotExist(err) {
		t.Fatal("socket left behind after quit")
	}
}

func TestSeveralMonitorsAtOnce(t *testing.T) {
	dir := t.TempDir()
	second := filepath.Join(dir, "second.sock")
	d := StartDaemon(t, blockdBin, dir, "--chardev", "socket,id=m2,path="+second+",server=on,wait=off",
		"--monitor", "chardev=m2,mode=control", "--socket", filepath.Join(dir, "third.sock"))
	defer d.Stop(t)
	for _, s := range []string{d.Sock, second, filepath.Join(dir, "third.sock")} {
		c := Dial(t, s)
		c.Negotiate(t)
		if r, _ := c.Command(t, "query-version", nil); r["return"] == nil {
			t.Fatalf("%s: %v", s, r)
		}
		c.Close()
	}
}

func TestSocketsAreOwnerOnly(t *testing.T) {
	d := StartDaemon(t, blockdBin, t.TempDir())
	defer d.Stop(t)
	st, err := os.Stat(d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
}

func TestStaleSocketIsReplacedLiveOneRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	// A stale socket: bound, then its listener gone without unlinking.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	d := StartDaemon(t, blockdBin, dir)
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	c.Close()

	// A second daemon on the same live socket must refuse to start.
	cmd := exec.Command(blockdBin, "--socket", sock)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second daemon on a live socket: err %v, output %s", err, out)
	}
	d.Stop(t)
}

func TestDefaultSocket(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(blockdBin)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir)
	d := &Daemon{Dir: dir, Sock: filepath.Join(dir, "blockd.sock"), cmd: cmd}
	cmd.Stderr = &d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.waitAccepting(t, d.stderr.String)
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	c.Close()
	d.Stop(t)
	if !strings.Contains(d.stderr.String(), d.Sock) {
		t.Fatalf("start-up log does not name the socket: %s", d.stderr.String())
	}
}

func TestStdioMonitor(t *testing.T) {
	cmd := exec.Command(blockdBin, "--chardev", "stdio,id=s", "--monitor", "chardev=s")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" +
		`{"execute":"query-version","id":1}` + "\n" + `{"execute":"quit"}` + "\n")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("blockd: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want greeting and 3 replies, got %q", lines)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &v); err != nil || v["id"] != float64(1) {
		t.Fatalf("query-version reply %q", lines[2])
	}
	// QEMU's separators, which scripts matching text depend on.
	if lines[1] != `{"return": {}}` || lines[3] != `{"return": {}}` {
		t.Fatalf("replies not in QEMU's format: %q", lines)
	}
}

// Command-line errors use qemu-storage-daemon's texts and exit status.
func TestCommandLineErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "blockd: unrecognized option '--bogus'"},
		{[]string{"--chardev", "socket,id=m,path=/tmp/x.sock,server=on,wait=off,bogus=1"},
			"blockd: --chardev socket,id=m,path=/tmp/x.sock,server=on,wait=off,bogus=1: Invalid parameter 'bogus'"},
		{[]string{"--monitor", "chardev=nope"}, `blockd: --monitor chardev=nope: chardev "nope" not found`},
		{[]string{"--chardev"}, "blockd: option '--chardev' requires an argument"},
	}
	for _, c := range cases {
		out, err := exec.Command(blockdBin, c.args...).CombinedOutput()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%v: want exit 1, got %v", c.args, err)
		}
		if got := strings.TrimSpace(string(out)); got != c.want {
			t.Errorf("%v:\n got  %q\n want %q", c.args, got, c.want)
		}
	}
	out, err := exec.Command(blockdBin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--chardev") {
		t.Errorf("--help: %v %s", err, out)
	}
	out, err = exec.Command(blockdBin, "-V").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "blockd version ") {
		t.Errorf("-V: %v %s", err, out)
	}
}

func asExit(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

// --blockdev creates nodes at start-up, in keyval form (dotted keys for
// nested options) or as JSON; errors are qemu-storage-daemon's.
func TestBlockdevOnCommandLine(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, blockdBin, dir,
		"--blockdev", "driver=null-co,node-name=n,size=1048576",
		"--blockdev", "driver=raw,node-name=r,file.driver=file,file.filename="+img,
		"--blockdev", `{"driver": "null-co", "node-name": "j", "read-zeroes": true}`,
		"--log-format", "json")
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	r, _ := c.Command(t, "query-named-block-nodes", map[string]any{"flat": true})
	got := map[string]string{}
	for _, n := range r["return"].([]any) {
		m := n.(map[string]any)
		got[m["node-name"].(string)] = m["drv"].(string)
	}
	if got["n"] != "null-co" || got["r"] != "raw" || got["j"] != "null-co" || len(got) != 4 {
		t.Fatalf("nodes from the command line: %v", got)
	}
	c.Close()
	d.Stop(t)
	for _, line := range strings.Split(strings.TrimSpace(d.Stderr()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || v["msg"] == nil {
			t.Fatalf("--log-format json wrote a non-JSON line: %q", line)
		}
	}

	for _, c := range []struct{ spec, want string }{
		{"driver=file,node-name=f,filename=/nonexistent",
			"Could not open '/nonexistent': No such file or directory"},
		{"driver=null-co,node-name=n,size=abc", "Parameter 'size' expects integer"},
		{"driver=nope,node-name=n", "Parameter 'driver' does not accept value 'nope'"},
	} {
		out, err := exec.Command(blockdBin, "--socket", filepath.Join(dir, "x.sock"), "--blockdev", c.spec).CombinedOutput()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: want exit 1, got %v", c.spec, err)
		}
		want := "blockd: --blockdev " + c.spec + ": " + c.want
		if !strings.Contains(string(out), want) {
			t.Errorf("%s:\n got  %q\n want %q", c.spec, out, want)
		}
	}
}
