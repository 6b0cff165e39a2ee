package qmptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockd/internal/racechild"
)

// ReplyTimeout bounds every wait for blockd; a hang is a failure, not a
// stuck test run.
const ReplyTimeout = 20 * time.Second

// BuildBlockd compiles cmd/blockd into dir (with the race detector when the
// tests run with it) and returns the binary's path.
func BuildBlockd(dir string) (string, error) {
	bin := filepath.Join(dir, "blockd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "blockd/cmd/blockd")
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Daemon is a running blockd with one QMP monitor socket.
type Daemon struct {
	Dir    string
	Sock   string
	cmd    *exec.Cmd
	stderr lockedBuffer
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartDaemon runs bin with a monitor socket in dir and waits for it.
func StartDaemon(t testing.TB, bin, dir string, extra ...string) *Daemon {
	t.Helper()
	return StartDaemonFiles(t, bin, dir, nil, extra...)
}

// StartDaemonFiles is StartDaemon with files the daemon inherits as
// descriptors 3, 4, ...
func StartDaemonFiles(t testing.TB, bin, dir string, files []*os.File, extra ...string) *Daemon {
	t.Helper()
	d := &Daemon{Dir: dir, Sock: filepath.Join(dir, "qmp.sock")}
	args := append([]string{"--chardev", "socket,id=m,path=" + d.Sock + ",server=on,wait=off",
		"--monitor", "chardev=m"}, extra...)
	d.cmd = exec.Command(bin, args...)
	d.cmd.ExtraFiles = files
	d.cmd.Dir = dir
	d.cmd.SysProcAttr = DieWithTest()
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start blockd: %v", err)
	}
	// A test that ends without stopping its daemon (t.Fatal half way, a
	// path that returns early) must not leave it running, holding its
	// images and sockets, until the test binary exits.
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_ = d.Wait()
		}
	})
	d.waitAccepting(t, d.stderr.String)
	return d
}

// waitAccepting returns once the daemon accepts on d.Sock. Ready means
// accepting, not a socket file: the file exists between bind and listen,
// and a stale one may exist before the daemon starts.
func (d *Daemon) waitAccepting(t testing.TB, stderr func() string) {
	t.Helper()
	deadline := time.Now().Add(ReplyTimeout)
	for {
		if c, err := net.Dial("unix", d.Sock); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
			t.Fatalf("blockd did not accept on %s; stderr:\n%s", d.Sock, stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends SIGTERM and checks a clean exit that leaves no socket behind.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	if d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	if err := d.Wait(); err != nil {
		t.Errorf("blockd exit: %v; stderr:\n%s", err, d.stderr.String())
	}
	if _, err := os.Stat(d.Sock); err == nil {
		t.Errorf("socket %s left behind after exit", d.Sock)
	}
}

// Wait waits (bounded) for the process to exit.
func (d *Daemon) Wait() error { return d.WaitFor(ReplyTimeout) }

// WaitFor waits up to limit for the process to exit, and kills it then.
// The error is the process's (an *exec.ExitError) when it failed.
func (d *Daemon) WaitFor(limit time.Duration) error {
	if d.cmd.ProcessState != nil {
		if !d.cmd.ProcessState.Success() {
			return fmt.Errorf("exit status %v", d.cmd.ProcessState)
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		_ = d.cmd.Process.Kill()
		<-done
		return fmt.Errorf("blockd did not exit within %v", limit)
	}
}

// ReferenceCrash is what CrashAware panics with when qemu-storage-daemon
// died of a signal: the reference's own bug (7.2 segfaults now and then
// under load, the kernel logging the fault in its code), not a
// difference from blockd.
type ReferenceCrash struct{ Signal string }

// CrashAware is the testing.TB of a run against the reference daemon D:
// a fatal failure whose cause is D's death by a signal panics with
// ReferenceCrash, for RetryReferenceCrash to recover, instead of failing
// the test.
type CrashAware struct {
	*testing.T
	D       *Daemon // set once the reference is started
	Crashed bool    // the run ended in a ReferenceCrash
}

func (c *CrashAware) Fatalf(format string, args ...any) {
	c.T.Helper()
	if c.D != nil {
		var ee *exec.ExitError
		if err := c.D.WaitFor(2 * time.Second); errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				c.Crashed = true
				panic(ReferenceCrash{ws.Signal().String()})
			}
		}
	}
	c.T.Fatalf(format, args...)
}

// StopUnlessCrashed stops d as Daemon.Stop does, unless the run ended in
// d's crash (the reference is gone already). On a nil CrashAware, blockd's
// side of a comparison, it always stops.
func (c *CrashAware) StopUnlessCrashed(t testing.TB, d *Daemon) {
	t.Helper()
	if c == nil || !c.Crashed {
		d.Stop(t)
	}
}

// RetryReferenceCrash runs run once more when the reference daemon died of
// a signal during the first; a second crash fails the test.
func RetryReferenceCrash(t *testing.T, run func(ref *CrashAware)) {
	t.Helper()
	try := func() (crash *ReferenceCrash) {
		defer func() {
			if r := recover(); r != nil {
				rc, ok := r.(ReferenceCrash)
				if !ok {
					panic(r)
				}
				crash = &rc
			}
		}()
		run(&CrashAware{T: t})
		return nil
	}
	crash := try()
	if crash == nil {
		return
	}
	t.Logf("REFERENCE CRASHED: qemu-storage-daemon died of %s; running its side again", crash.Signal)
	if crash = try(); crash != nil {
		t.Fatalf("qemu-storage-daemon died of %s again", crash.Signal)
	}
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stderr returns what blockd logged so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// Client is a raw line-oriented connection to a monitor.
type Client struct {
	Conn     net.Conn
	r        *bufio.Reader
	greeting []byte // read by Dial, returned by the first Next
}

// Dial connects to a monitor socket and waits for its greeting, which the
// first Next returns. A connection closed before the greeting is retried:
// qemu-storage-daemon's monitor can drop the connection that follows
// another client's quick connect and close (StartDaemon's readiness
// probe), and the reference side of a test must not flake on that.
func Dial(t testing.TB, sock string) *Client {
	t.Helper()
	deadline := time.Now().Add(ReplyTimeout)
	for {
		c, err := net.Dial("unix", sock)
		if errors.Is(err, syscall.EAGAIN) && time.Now().Before(deadline) {
			// The listen backlog is full (other clients connecting).
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("dial %s: %v", sock, err)
		}
		r := bufio.NewReaderSize(c, 1<<20)
		_ = c.SetReadDeadline(deadline)
		line, err := r.ReadBytes('\n')
		if err == nil {
			return &Client{Conn: c, r: r, greeting: line}
		}
		_ = c.Close()
		if !errors.Is(err, io.EOF) || time.Now().After(deadline) {
			t.Fatalf("greeting from %s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Send writes raw bytes.
func (c *Client) Send(b []byte) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(ReplyTimeout))
	_, err := c.Conn.Write(b)
	return err
}

// Next reads the next message.
func (c *Client) Next() (map[string]any, []byte, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(ReplyTimeout))
	line, err := c.greeting, error(nil)
	if line != nil {
		c.greeting = nil
	} else {
		line, err = c.r.ReadBytes('\n')
	}
	if err != nil {
		return nil, line, err
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, line, fmt.Errorf("blockd sent invalid JSON %q: %v", line, err)
	}
	return m, line, nil
}

// Command sends one command and returns its reply, collecting any events
// that arrive before it. A greeting not yet read is dropped: it is never
// a command's reply, and returning it would shift every later reply by
// one (a test that checks the greeting reads it with Next first).
func (c *Client) Command(t testing.TB, cmd string, args any) (reply map[string]any, evs []map[string]any) {
	t.Helper()
	c.greeting = nil
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	if err := c.Send(append(b, '\n')); err != nil {
		t.Fatalf("send %s: %v", cmd, err)
	}
	for {
		m, raw, err := c.Next()
		if err != nil {
			t.Fatalf("reply to %s: %v (%q)", cmd, err, raw)
		}
		if _, ok := m["event"]; ok {
			evs = append(evs, m)
			continue
		}
		return m, evs
	}
}

// StartSession starts blockd in dir with extra arguments and returns it
// with a client past qmp_capabilities; both end with the test (the
// daemon with SIGTERM and Stop's checks).
func StartSession(t testing.TB, bin, dir string, extra ...string) (*Daemon, *Client) {
	t.Helper()
	d := StartDaemon(t, bin, dir, extra...)
	c := Dial(t, d.Sock)
	c.Negotiate(t)
	t.Cleanup(func() {
		c.Close()
		d.Stop(t)
	})
	return d, c
}

// Negotiate reads the greeting and leaves capabilities negotiation.
func (c *Client) Negotiate(t testing.TB) {
	t.Helper()
	if _, _, err := c.Next(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if r, _ := c.Command(t, "qmp_capabilities", nil); r["return"] == nil {
		t.Fatalf("negotiation failed: %v", r)
	}
}

// Ok runs a command that must succeed and returns its "return" value.
func (c *Client) Ok(t testing.TB, cmd string, args any) any {
	t.Helper()
	r, _ := c.Command(t, cmd, args)
	if e, ok := r["error"]; ok {
		t.Fatalf("%s: %v", cmd, e)
	}
	return r["return"]
}

// DeleteExport is block-export-del in safe mode once the export's last
// client has gone. A client tool that has just exited may not have been
// seen to disconnect yet ("export 'x' still in use"): that is retried,
// any other error fails the test.
func (c *Client) DeleteExport(t testing.TB, id string) {
	t.Helper()
	for deadline := time.Now().Add(ReplyTimeout); ; time.Sleep(10 * time.Millisecond) {
		r, _ := c.Command(t, "block-export-del", map[string]any{"id": id})
		e, failed := r["error"].(map[string]any)
		if !failed {
			return
		}
		if desc, _ := e["desc"].(string); !strings.HasSuffix(desc, "still in use") || time.Now().After(deadline) {
			t.Fatalf("block-export-del %s: %v", id, e)
		}
	}
}

// Err runs a command that must fail and returns its error's desc.
func (c *Client) Err(t testing.TB, cmd string, args any) string {
	t.Helper()
	r, _ := c.Command(t, cmd, args)
	e, ok := r["error"].(map[string]any)
	if !ok {
		t.Fatalf("%s succeeded, want an error", cmd)
	}
	desc, _ := e["desc"].(string)
	return desc
}

// WaitEvent reads messages until the named event arrives and returns it.
func (c *Client) WaitEvent(t testing.TB, name string) map[string]any {
	t.Helper()
	for {
		m, raw, err := c.Next()
		if err != nil {
			t.Fatalf("waiting for %s: %v (%q)", name, err, raw)
		}
		if m["event"] == name {
			return m
		}
	}
}

// Close closes the connection.
func (c *Client) Close() { _ = c.Conn.Close() }

// Run plays a transcript against a fresh daemon and reports every step
// that differs.
func Run(t *testing.T, bin string, tr *Transcript) {
	dir := t.TempDir()
	subst := func(s string) string { return strings.ReplaceAll(s, "$TMP", dir) }
	args := make([]string, len(tr.Args))
	for i, a := range tr.Args {
		args[i] = subst(a)
	}
	steps := tr.Steps
	// Setup commands before the first exchange run before the daemon starts.
	for len(steps) > 0 && steps[0].Kind == "sh" {
		RunShell(t, dir, subst(steps[0].Text), steps[0].Line)
		steps = steps[1:]
	}
	d := StartDaemon(t, bin, dir, args...)
	c := Dial(t, d.Sock)
	defer c.Close()
	quitSent := false
	for _, st := range steps {
		where := fmt.Sprintf("%s:%d", filepath.Base(tr.Name), st.Line)
		switch st.Kind {
		case "sh":
			if quitSent {
				// The daemon may still hold image locks while it exits.
				if err := d.Wait(); err != nil {
					t.Fatalf("%s: blockd exit after quit: %v\n%s", where, err, d.Stderr())
				}
			}
			RunShell(t, dir, subst(st.Text), st.Line)
		case "send", "sendraw", "repeat":
			var data []byte
			switch st.Kind {
			case "send":
				data = []byte(subst(st.Text) + "\n")
			case "sendraw":
				data = []byte(subst(st.Text))
			default:
				data = bytes.Repeat([]byte(st.Text), st.N)
			}
			if err := c.Send(data); err != nil {
				t.Fatalf("%s: send: %v", where, err)
			}
			quitSent = quitSent || strings.Contains(string(data), `"quit"`)
		case "expect":
			var want map[string]any
			if err := json.Unmarshal([]byte(st.Text), &want); err != nil {
				t.Fatalf("%s: bad expectation: %v", where, err)
			}
			got, raw, err := c.Next()
			if err != nil {
				t.Fatalf("%s: expected %s\n  got error %v (%q)\nblockd stderr:\n%s", where, st.Text, err, raw, d.Stderr())
			}
			if err := sameMemberOrder([]byte(st.Text), raw); err != nil {
				t.Fatalf("%s: %v\n  want: %s\n  got:  %s", where, err, st.Text, raw)
			}
			norm, err := normalize(got, dir)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if !matches(scrub(want, dir), norm) {
				t.Fatalf("%s: mismatch at %s\n  want: %s\n  got:  %s", where, firstDiff(scrub(want, dir), norm, "$"),
					compact(want), compact(norm))
			}
		case "eof":
			if uc, ok := c.Conn.(*net.UnixConn); ok {
				_ = uc.CloseWrite()
			}
			if m, raw, err := c.Next(); err == nil {
				t.Fatalf("%s: expected end of stream, got %s", where, compact(m))
			} else if len(raw) != 0 {
				t.Fatalf("%s: expected end of stream, got partial %q", where, raw)
			}
		}
	}
	d.Stop(t)
}

func RunShell(t *testing.T, dir, cmdline string, line int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("line %d: %s: %v\n%s", line, cmdline, err, out)
	}
}

// DieWithTest makes a daemon started by a test die with the test binary:
// a test binary killed by its timeout must not leave daemons behind that
// hold image locks and sockets for the next run.
func DieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// RunWithBlockd is the TestMain of every package that drives a blockd
// process: it builds blockd once into a temporary directory, stores its
// path in *bin, runs the tests and removes the build.
func RunWithBlockd(m *testing.M, bin *string) {
	racechild.NoExitSleep()
	dir, err := os.MkdirTemp("", "blockd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = BuildBlockd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
