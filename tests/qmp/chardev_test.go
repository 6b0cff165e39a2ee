package qmptest

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The command line's chardevs are the chardev registry's: the monitor's
// is listed, open and busy; one no monitor uses is opened, listed and
// removable; its socket accepts and goes away with it; and a chardev
// added at run time does not become a monitor (the reference has no
// command for that either).
func TestCommandLineChardevs(t *testing.T) {
	dir := t.TempDir()
	spare := filepath.Join(dir, "spare.sock")
	d := StartDaemon(t, blockdBin, dir, "--chardev", "socket,id=spare,path="+spare+",server=on,wait=off",
		"--chardev", "ringbuf,id=rb,size=8", "--chardev", "null,id=nul,logfile="+filepath.Join(dir, "log"))
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	c.Negotiate(t)
	r, _ := c.Command(t, "query-chardev", nil)
	got := map[string]map[string]any{}
	for _, e := range r["return"].([]any) {
		m := e.(map[string]any)
		got[m["label"].(string)] = m
	}
	if m := got["m"]; m == nil || m["frontend-open"] != true || m["filename"] != "unix:"+d.Sock+",server=on" {
		t.Errorf("monitor chardev: %v", got["m"])
	}
	if m := got["spare"]; m == nil || m["frontend-open"] != false || m["filename"] != "disconnected:unix:"+spare+",server=on" {
		t.Errorf("spare chardev: %v", got["spare"])
	}
	if m := got["rb"]; m == nil || m["filename"] != "ringbuf" || got["nul"] == nil {
		t.Errorf("ringbuf and null chardevs of the command line: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "log")); err != nil {
		t.Errorf("logfile of --chardev null: %v", err)
	}
	c.Command(t, "ringbuf-write", map[string]any{"device": "rb", "data": "0123456789"})
	if r, _ := c.Command(t, "ringbuf-read", map[string]any{"device": "rb", "size": 100}); r["return"] != "23456789" {
		t.Errorf("ring of --chardev ringbuf,size=8: %v", r)
	}
	if r, _ := c.Command(t, "chardev-remove", map[string]any{"id": "m"}); errDesc(r) != "Chardev 'm' is busy" {
		t.Errorf("removing the monitor's chardev: %v", r)
	}
	conn, err := net.Dial("unix", spare)
	if err != nil {
		t.Fatalf("spare chardev not listening: %v", err)
	}
	conn.Close()
	if r, _ := c.Command(t, "chardev-remove", map[string]any{"id": "spare"}); r["error"] != nil {
		t.Fatalf("chardev-remove spare: %v", r)
	}
	if _, err := os.Stat(spare); !os.IsNotExist(err) {
		t.Errorf("spare socket file left: %v", err)
	}
	// A socket chardev added now accepts a connection but speaks no QMP.
	late := filepath.Join(dir, "late.sock")
	r, _ = c.Command(t, "chardev-add", map[string]any{"id": "late", "backend": map[string]any{"type": "socket",
		"data": map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": late}}, "server": true, "wait": false}}})
	if r["error"] != nil {
		t.Fatal(r)
	}
	lc, err := net.Dial("unix", late)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Write([]byte(`{"execute": "qmp_capabilities"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	// The chardev, not a monitor, holds that client, and the monitor
	// still answers meanwhile.
	for i := 0; ; i++ {
		r, _ := c.Command(t, "query-chardev", nil)
		found := ""
		for _, e := range r["return"].([]any) {
			if m := e.(map[string]any); m["label"] == "late" {
				found, _ = m["filename"].(string)
			}
		}
		if found == "unix:"+late+",server=on" {
			break
		}
		if i == 1000 {
			t.Fatalf("late chardev never took its client: %q", found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errDesc(r map[string]any) string {
	e, _ := r["error"].(map[string]any)
	d, _ := e["desc"].(string)
	return d
}

// --chardev refusals print the reference's texts, checked against the
// reference itself when it is installed.
func TestChardevOptionRefusals(t *testing.T) {
	dir := t.TempDir()
	ref := referenceDaemon(t)
	for _, c := range []struct{ spec, want string }{
		{"null", "chardev: no id specified"},
		{"nope,id=x", "'nope' is not a valid char driver name"},
		{"ringbuf,id=r,bogus=1", "Invalid parameter 'bogus'"},
		{"ringbuf,id=r,size=12", "size of ringbuf chardev must be power of two"},
		{"file,id=f", "chardev: file: no filename given"},
		{"file,id=f,path=/nonexist/x", "Could not open '/nonexist/x': No such file or directory"},
		{"file,id=f,path=o.txt,append=maybe", "Parameter 'append' expects 'on' or 'off'"},
		{"pipe,id=p", "chardev: pipe: no device path given"},
		{"serial,id=x", "chardev: serial/tty: no device path given"},
		{"socket,id=s,path=nosuch.sock", "Failed to connect to 'nosuch.sock': No such file or directory"},
		{"socket,id=s,host=h", "chardev: socket: no port given"},
		{"socket,id=s,path=a,host=b", "None or one of 'path', 'fd' or 'host' option required."},
		{"socket,id=s,path=q.sock,server=on,wait=off,reconnect=x", "Parameter 'reconnect' expects a number"},
		{"udp,id=u", "chardev: udp: remote port not specified"},
		{"pty,id=p,logfile=/nonexist/l", "Could not create '/nonexist/l': No such file or directory"},
	} {
		args := []string{"--chardev", "stdio,id=mon", "--monitor", "chardev=mon", "--chardev", c.spec}
		cmd := exec.Command(blockdBin, args...)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(`{"execute":"quit"}`)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%s: want exit 1, got %v (%s)", c.spec, err, out)
		}
		want := "blockd: --chardev " + c.spec + ": " + c.want
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("--chardev %s:\n got  %q\n want %q", c.spec, got, want)
		}
		if ref == "" {
			continue
		}
		// Only stderr: the reference greets on its stdio monitor before
		// it reaches the failing option.
		var stderr strings.Builder
		cmd = exec.Command(ref, args...)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(`{"execute":"quit"}`)
		cmd.Stderr = &stderr
		_ = cmd.Run()
		if out := stderr.String(); !strings.Contains(out, "--chardev "+c.spec+": "+c.want) {
			t.Errorf("the reference says %q for --chardev %s, this test expects %q", out, c.spec, c.want)
		}
	}
}

// A server socket of the command line waits for its first client before
// blockd serves its monitors, as the reference does; a signal ends the
// wait and blockd exits cleanly.
func TestChardevWaitsForClient(t *testing.T) {
	dir := t.TempDir()
	w := filepath.Join(dir, "w.sock")
	sock := filepath.Join(dir, "qmp.sock")
	start := func() *exec.Cmd {
		cmd := exec.Command(blockdBin, "--chardev", "socket,id=w,path="+w+",server=on",
			"--chardev", "socket,id=m,path="+sock+",server=on,wait=off", "--monitor", "chardev=m")
		cmd.SysProcAttr = DieWithTest()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if _, err := os.Stat(w); err == nil {
				return cmd
			}
			if i == 1000 {
				t.Fatal("w.sock never appeared")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cmd := start()
	// The monitor is bound but not served until w has a client. The
	// socket file exists from bind(), a moment before listen(): a dial
	// in between is refused, so retry that.
	var wc net.Conn
	for deadline := time.Now().Add(ReplyTimeout); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if wc, err = net.Dial("unix", w); err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	defer wc.Close()
	cl := Dial(t, sock)
	cl.Negotiate(t)
	r, _ := cl.Command(t, "qom-get", map[string]any{"path": "/chardevs/w", "property": "connected"})
	if r["return"] != true {
		t.Errorf("w not connected: %v", r)
	}
	cl.Close()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("blockd after SIGTERM: %v", err)
	}

	// Nobody comes: SIGTERM ends the wait.
	cmd = start()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !asExit(err, &ee) {
		t.Fatalf("blockd did not exit: %v", err)
	}
	if _, err := os.Stat(w); !os.IsNotExist(err) {
		t.Errorf("w.sock left behind: %v", err)
	}
}
