package nbdtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTLSPSKDaemon: an export behind --object tls-creds-psk served to
// QEMU's and libnbd's PSK clients: qemu-io writes and reads, nbdcopy
// writes with four connections, qemu-img compares, nbdinfo maps. A wrong
// key, an unknown user and a client without TLS are refused while a
// qemu-io session stays connected and served, and the refused handshakes
// leave no descriptor behind.
func TestTLSPSKDaemon(t *testing.T) {
	need(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
	dir := t.TempDir()
	const keyAlice, keyQemu = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	credDir := func(name string, lines ...string) string {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "keys.psk"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	srvDir := credDir("server", "alice:"+keyAlice, "qemu:"+keyQemu)
	alice := credDir("alice", "alice:"+keyAlice)
	qemuDef := credDir("qemu", "qemu:"+keyQemu)
	wrongKey := credDir("wrongkey", "alice:"+keyQemu)
	wrongUser := credDir("wronguser", "mallory:"+keyAlice)

	qcow := filepath.Join(dir, "a.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "64M")
	pidfile := filepath.Join(dir, "pid")
	s := startNBD(t, dir, ",tls-creds=tls0", "--pidfile", pidfile,
		"--object", "tls-creds-psk,id=tls0,endpoint=server,dir="+srvDir,
		"--blockdev", qcow2Node("n", qcow),
		"--export", "type=nbd,id=e,node-name=n,name=disk,writable=on")
	fds := fdCounter(t, pidfile)

	// QEMU clients: "username" defaults to qemu.
	qemuArgs := func(dir, user string) []string {
		obj := "tls-creds-psk,id=tls0,endpoint=client,dir=" + dir
		if user != "" {
			obj += ",username=" + user
		}
		return []string{"--object", obj, "--image-opts",
			"driver=nbd,server.type=unix,server.path=" + s.nbdSock + ",export=disk,tls-creds=tls0"}
	}
	libnbdURI := func(user, dir string) string {
		return fmt.Sprintf("nbds+unix://%s@/disk?socket=%s&tls-psk-file=%s", user, s.nbdSock, filepath.Join(dir, "keys.psk"))
	}
	noFail := func(what, out string) {
		t.Helper()
		if strings.Contains(out, "fail") || strings.Contains(out, "error") {
			t.Fatalf("%s:\n%s", what, out)
		}
	}

	out := run(t, "qemu-io", append(qemuArgs(alice, "alice"),
		"-c", "write -P 0x5a 1M 4M", "-c", "flush", "-c", "read -P 0x5a 1M 4M", "-c", "read -P 0 0 1M")...)
	noFail("qemu-io as alice", out)
	f0 := fds()

	// A session as the default user that stays open across the refusals.
	sess := exec.Command("qemu-io", qemuArgs(qemuDef, "")...)
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stderr = sess.Stdout
	if err := sess.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sess.Process.Kill(); _ = sess.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	sessRead := func(what string) {
		t.Helper()
		if _, err := io.WriteString(stdin, "read -P 0x5a 1M 4M\n"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		timeout := time.After(time.Minute)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: qemu-io session ended", what)
				}
				noFail(what, l)
				if strings.Contains(l, "read 4194304/4194304 bytes at offset 1048576") {
					return
				}
			case <-timeout:
				t.Fatalf("%s: no answer from the qemu-io session", what)
			}
		}
	}
	sessRead("session before the refusals")

	for _, bad := range []struct {
		what string
		args []string
	}{
		{"wrong key", qemuArgs(wrongKey, "alice")},
		{"unknown user", qemuArgs(wrongUser, "mallory")},
	} {
		out, err := runErr("qemu-img", append([]string{"info"}, bad.args...)...)
		if err == nil || !strings.Contains(out, "TLS handshake failed") {
			t.Fatalf("qemu-img with a %s: %v\n%s", bad.what, err, out)
		}
	}
	if out, err := runErr("nbdinfo", libnbdURI("alice", wrongKey)); err == nil || !strings.Contains(out, "handshake") {
		t.Fatalf("nbdinfo with a wrong key: %v\n%s", err, out)
	}
	if out, err := runErr("qemu-img", "info", s.uri("disk")); err == nil || !strings.Contains(out, "TLS") {
		t.Fatalf("client without TLS: %v\n%s", err, out)
	}
	sessRead("session after the refusals")
	if _, err := io.WriteString(stdin, "quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := sess.Wait(); err != nil {
		t.Fatalf("qemu-io session: %v", err)
	}

	// nbdcopy writes a whole image over four connections; qemu-img
	// compares it through the export.
	src := filepath.Join(dir, "src.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", src, "64M")
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x22 17M 5M", "-c", "write -P 0x33 60M 4M", src)
	run(t, "nbdcopy", "-C", "4", src, libnbdURI("alice", alice))
	cmp := run(t, "qemu-img", "compare", "--object", "tls-creds-psk,id=tls0,endpoint=client,dir="+qemuDef,
		"--image-opts", "driver=file,filename="+src,
		"driver=nbd,server.type=unix,server.path="+s.nbdSock+",export=disk,tls-creds=tls0")
	if !strings.Contains(cmp, "Images are identical") {
		t.Fatalf("qemu-img compare over PSK: %s", cmp)
	}
	m := run(t, "nbdinfo", "--map", libnbdURI("alice", alice))
	if !strings.Contains(m, "data") {
		t.Fatalf("nbdinfo --map over PSK:\n%s", m)
	}

	deadline := time.Now().Add(20 * time.Second)
	for fds() > f0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon holds %d descriptors, %d before the PSK clients", fds(), f0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.qmp.Close()
	s.Stop(t)
	run(t, "qemu-img", "check", "-q", qcow)
	if out, err := runErr("qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, qcow); err != nil {
		t.Fatalf("image after the daemon stopped: %v\n%s", err, out)
	}
}

// fdCounter counts the open descriptors of the daemon whose pid is in
// pidfile.
func fdCounter(t *testing.T, pidfile string) func() int {
	t.Helper()
	pb, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	fdDir := "/proc/" + strings.TrimSpace(string(pb)) + "/fd"
	return func() int {
		e, err := os.ReadDir(fdDir)
		if err != nil {
			t.Fatal(err)
		}
		return len(e)
	}
}
