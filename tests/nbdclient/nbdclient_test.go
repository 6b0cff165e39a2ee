// Package nbdclienttest is the interop suite of blockd's nbd block driver
// (the client): a qcow2 overlay on a local file whose backing is an NBD
// export served by qemu-nbd or by another blockd, written and read
// through blockd, committed into the NBD base and compared with
// qemu-img; reconnection after the server restarts; I/O that fails
// cleanly once the server stays away; TLS against qemu-nbd. It is its
// own package so that CI runs it beside the others.
package nbdclienttest

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockd/internal/needtool"
	"blockd/internal/testpki"
	qmptest "blockd/tests/qmp"
)

var blockdBin string

func TestMain(m *testing.M) { qmptest.RunWithBlockd(m, &blockdBin) }

// run runs a tool; failure fails the test.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// qio runs qemu-io commands on a raw image or URI; a failed command or
// pattern fails the test (whatever qemu-io's exit status says).
func qio(t *testing.T, target string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, target)...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
		t.Fatalf("qemu-io %v on %s:\n%s", cmds, target, out)
	}
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// waitSocket waits until something accepts on the Unix socket path.
func waitSocket(t *testing.T, path string) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		if i == 1000 {
			t.Fatalf("nothing listens on %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// qemuNBD serves image (format fmt) as export "base" on sock until the
// returned stop is called (or the test ends).
func qemuNBD(t *testing.T, sock, image, format string, extra ...string) (stop func()) {
	t.Helper()
	args := append([]string{"-t", "-e", "8", "-k", sock, "-x", "base", "-f", format}, extra...)
	cmd := exec.Command("qemu-nbd", append(args, image)...)
	cmd.SysProcAttr = qmptest.DieWithTest()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
		_ = os.Remove(sock)
	}
	t.Cleanup(stop)
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return stop
		}
		select {
		case <-done:
			t.Fatalf("qemu-nbd exited: %s", stderr.String())
		default:
		}
		if i == 1000 {
			t.Fatalf("qemu-nbd does not listen: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemon is a blockd with a QMP client and, optionally, an NBD server.
type daemon struct {
	*qmptest.Daemon
	qmp     *qmptest.Client
	nbdSock string
}

func startBlockd(t *testing.T, dir string, extra ...string) *daemon {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	args := append([]string{"--nbd-server", "addr.type=unix,addr.path=" + sock}, extra...)
	d, c := qmptest.StartSession(t, blockdBin, dir, args...)
	return &daemon{Daemon: d, qmp: c, nbdSock: sock}
}

func (d *daemon) cmd(t *testing.T, name string, args any) any {
	t.Helper()
	return d.qmp.Ok(t, name, args)
}

func (d *daemon) cmdErr(t *testing.T, name string, args any) string {
	t.Helper()
	return d.qmp.Err(t, name, args)
}

func (d *daemon) waitEvent(t *testing.T, name string) map[string]any {
	t.Helper()
	return d.qmp.WaitEvent(t, name)
}

func (d *daemon) uri(export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, d.nbdSock)
}

func nbdNode(name, sock string, extra map[string]any) map[string]any {
	m := map[string]any{"driver": "nbd", "node-name": name, "export": "base",
		"server": map[string]any{"type": "unix", "path": sock}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// baseImage makes the base: data at [0, 4M) and [16M, 17M), holes
// elsewhere.
func baseImage(t *testing.T, dir string) string {
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
	run(t, "qemu-io", "-c", "write -P 0x11 0 4M", "-c", "write -P 0x33 16M 1M", base)
	return base
}

type mapEntry struct {
	Start, Length int64
	Data, Zero    bool
}

// TestOverlayOnNBDBase: a qcow2 overlay on a local file whose backing is
// the nbd node. Writes and reads through blockd's export of the overlay
// see the base's data and holes (qemu-img map of the overlay reports the
// base's holes as zero, which needs the client's block status), then an
// active commit moves everything into the NBD base, which qemu-img
// compare finds equal to the same writes made by qemu-io on a copy.
func TestOverlayOnNBDBase(t *testing.T) {
	needtool.Find(t, "qemu-img", "qemu-io", "qemu-nbd")
	for _, server := range []string{"qemu-nbd", "blockd"} {
		t.Run(server, func(t *testing.T) {
			dir := t.TempDir()
			base := baseImage(t, dir)
			model := filepath.Join(dir, "model.qcow2")
			run(t, "cp", base, model)
			run(t, "qemu-io", "-c", "write -P 0x22 2M 4M", "-c", "write -z 16M 64k", model)

			sock := filepath.Join(dir, "base.sock")
			stop := func() {}
			if server == "qemu-nbd" {
				stop = qemuNBD(t, sock, base, "qcow2")
			} else {
				srv := startBlockd(t, filepath.Join(dir, "srv"),
					"--blockdev", fmt.Sprintf(`{"driver":"qcow2","node-name":"b","file":{"driver":"file","filename":"%s"}}`, base),
					"--export", "type=nbd,id=e,node-name=b,name=base,writable=on")
				sock = srv.nbdSock
				stop = func() { srv.qmp.Close(); srv.Stop(t) }
			}

			top := filepath.Join(dir, "top.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", top, "32M")
			d := startBlockd(t, filepath.Join(dir, "client"))
			d.cmd(t, "blockdev-add", nbdNode("nb", sock, nil))
			d.cmd(t, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": "top", "backing": "nb",
				"file": map[string]any{"driver": "file", "filename": top}})
			d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "t", "node-name": "top", "name": "top", "writable": true})

			uri := d.uri("top")
			qio(t, uri, "write -P 0x22 2M 4M", "write -z 16M 64k")
			qio(t, uri, "read -P 0x11 0 2M", "read -P 0x22 2M 4M", "read -P 0 6M 10M", "read -P 0 16M 64k",
				"read -P 0x33 16448k 960k", "read -P 0 17M 15M")

			var m []mapEntry
			if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "-f", "raw", "--output=json", uri)), &m); err != nil {
				t.Fatal(err)
			}
			zeroAt := func(off int64) bool {
				for _, e := range m {
					if off >= e.Start && off < e.Start+e.Length {
						return e.Zero && !e.Data
					}
				}
				t.Fatalf("map has no entry at %d: %+v", off, m)
				return false
			}
			if !zeroAt(8<<20) || !zeroAt(20<<20) || zeroAt(1<<20) || zeroAt(16<<20+128<<10) {
				t.Fatalf("holes of the NBD base not seen through the overlay: %+v", m)
			}

			d.cmd(t, "block-commit", map[string]any{"job-id": "c", "device": "top"})
			d.waitEvent(t, "BLOCK_JOB_READY")
			d.cmd(t, "job-complete", map[string]any{"id": "c"})
			ev := d.waitEvent(t, "BLOCK_JOB_COMPLETED")
			if data := ev["data"].(map[string]any); data["error"] != nil {
				t.Fatalf("commit: %v", data)
			}
			// The export now serves the NBD base itself.
			qio(t, uri, "read -P 0x22 2M 4M")
			d.qmp.DeleteExport(t, "t")
			d.cmd(t, "blockdev-del", map[string]any{"node-name": "top"})
			d.cmd(t, "blockdev-del", map[string]any{"node-name": "nb"})
			stop()
			run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", model, base)
			run(t, "qemu-img", "check", base)
		})
	}
}

// TestReconnect: the server restarts while a read waits; the read
// completes once it is back within reconnect-delay. When it stays away,
// I/O fails with EIO after the delay, the daemon stays responsive and
// the node can be deleted; when it returns, I/O works again.
func TestReconnect(t *testing.T) {
	needtool.Find(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "16M")
	sock := filepath.Join(dir, "base.sock")
	stop := qemuNBD(t, sock, base, "raw")

	d := startBlockd(t, filepath.Join(dir, "client"))
	d.cmd(t, "blockdev-add", nbdNode("nb", sock, map[string]any{"reconnect-delay": 3}))
	d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "nb", "name": "disk", "writable": true})
	uri := d.uri("disk")
	qio(t, uri, "write -P 0x44 0 1M")

	stop()
	res := make(chan string, 1)
	go func() {
		out, err := runErr("qemu-io", "-f", "raw", "-c", "read -P 0x44 0 1M", "-c", "write -P 0x55 1M 1M", uri)
		res <- fmt.Sprintf("%v\n%s", err, out)
	}()
	stop = qemuNBD(t, sock, base, "raw")
	if out := <-res; !strings.HasPrefix(out, "<nil>") || strings.Contains(out, "error") {
		t.Fatalf("I/O across the restart: %s", out)
	}

	stop()
	out, err := runErr("qemu-io", "-f", "raw", "-c", "read 0 64k", uri)
	if err == nil && !strings.Contains(out, "Input/output error") {
		t.Fatalf("read with the server gone succeeded: %s", out)
	}
	if !strings.Contains(out, "Input/output error") {
		t.Fatalf("read with the server gone: %v\n%s", err, out)
	}
	d.cmd(t, "query-named-block-nodes", nil)

	stop = qemuNBD(t, sock, base, "raw")
	for i := 0; ; i++ {
		out, err := runErr("qemu-io", "-f", "raw", "-c", "read -P 0x55 1M 1M", uri)
		if err == nil && !strings.Contains(out, "error") && !strings.Contains(out, "Pattern verification failed") {
			break
		}
		if i == 100 {
			t.Fatalf("no reconnect: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.qmp.DeleteExport(t, "e")
	stop()
	// With its server gone, the node still goes away cleanly.
	d.cmd(t, "blockdev-del", map[string]any{"node-name": "nb"})
	qio(t, base, "read -P 0x44 0 1M", "read -P 0x55 1M 1M")
}

// TestTLS: blockd's client against qemu-nbd with x509 credentials, over
// TCP (the certificate's 127.0.0.1 checked) and over a Unix socket with
// tls-hostname; a wrong hostname is refused.
func TestTLS(t *testing.T) {
	needtool.Find(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	ca := testpki.NewCA(t, "blockd test CA")
	sdir, cdir := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	for _, p := range []string{sdir, cdir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		ca.WriteCA(p)
	}
	ca.Issue(sdir, "server", pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	ca.Issue(cdir, "client", pkix.Name{CommonName: "client"}, x509.ExtKeyUsageClientAuth)
	base := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "4M")
	qio(t, base, "write -P 0x66 0 4M")
	sock := filepath.Join(dir, "tls.sock")
	stop := qemuNBD(t, sock, base, "raw", "--object", "tls-creds-x509,id=tls0,endpoint=server,dir="+sdir, "--tls-creds", "tls0")

	d := startBlockd(t, filepath.Join(dir, "d"), "--object", "tls-creds-x509,id=c0,endpoint=client,dir="+cdir)
	if got := d.cmdErr(t, "blockdev-add", nbdNode("plain", sock, nil)); !strings.Contains(got, "TLS negotiation required") {
		t.Fatalf("no TLS against a TLS server: %s", got)
	}
	if got := d.cmdErr(t, "blockdev-add", nbdNode("bad", sock, map[string]any{"tls-creds": "c0", "tls-hostname": "example.org"})); !strings.Contains(got, "certificate") {
		t.Fatalf("wrong hostname: %s", got)
	}
	d.cmd(t, "blockdev-add", nbdNode("nb", sock, map[string]any{"tls-creds": "c0", "tls-hostname": "localhost"}))
	d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "nb", "name": "disk", "writable": true})
	qio(t, d.uri("disk"), "read -P 0x66 0 4M", "write -P 0x67 1M 4k")
	d.qmp.DeleteExport(t, "e")
	d.cmd(t, "blockdev-del", map[string]any{"node-name": "nb"})
	stop()
	qio(t, base, "read -P 0x67 1M 4k")
}

// TestTLSPSK: blockd's client with tls-creds-psk against qemu-nbd and
// against another blockd serving with PSK credentials: data through
// both; a wrong key fails with qemu-storage-daemon's text and leaves no
// node behind.
func TestTLSPSK(t *testing.T) {
	needtool.Find(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	pskDir := func(name, key string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "keys.psk"), []byte("alice:"+key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, wrong := pskDir("good", strings.Repeat("3a", 32)), pskDir("wrong", strings.Repeat("5c", 32))
	base := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "4M")
	qio(t, base, "write -P 0x71 0 4M")
	sock := filepath.Join(dir, "psk.sock")
	stop := qemuNBD(t, sock, base, "raw", "--object", "tls-creds-psk,id=tls0,endpoint=server,dir="+good, "--tls-creds", "tls0")

	d := startBlockd(t, filepath.Join(dir, "d"),
		"--object", "tls-creds-psk,id=c0,endpoint=client,username=alice,dir="+good,
		"--object", "tls-creds-psk,id=w0,endpoint=client,username=alice,dir="+wrong)
	if got := d.cmdErr(t, "blockdev-add", nbdNode("bad", sock, map[string]any{"tls-creds": "w0"})); got != "TLS handshake failed: The TLS connection was non-properly terminated." {
		t.Fatalf("wrong key: %q", got)
	}
	if got := d.cmdErr(t, "blockdev-del", map[string]any{"node-name": "bad"}); !strings.Contains(got, "Failed to find node") {
		t.Fatalf("a refused node was left behind: %q", got)
	}
	d.cmd(t, "blockdev-add", nbdNode("nb", sock, map[string]any{"tls-creds": "c0"}))
	d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "nb", "name": "disk", "writable": true})
	qio(t, d.uri("disk"), "read -P 0x71 0 4M", "write -P 0x72 1M 4k")
	d.qmp.DeleteExport(t, "e")
	d.cmd(t, "blockdev-del", map[string]any{"node-name": "nb"})
	stop()
	qio(t, base, "read -P 0x72 1M 4k")

	// blockd to blockd: the server's credentials are the same key file.
	srv := startBlockd(t, filepath.Join(dir, "srv"), "--object", "tls-creds-psk,id=s0,endpoint=server,dir="+good)
	srv.cmd(t, "blockdev-add", map[string]any{"driver": "raw", "node-name": "b",
		"file": map[string]any{"driver": "file", "filename": base}})
	srvSock := filepath.Join(dir, "srv-psk.sock")
	srv.cmd(t, "nbd-server-stop", nil)
	srv.cmd(t, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": srvSock}}, "tls-creds": "s0"})
	srv.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "b", "node-name": "b", "name": "base", "writable": true})
	d.cmd(t, "blockdev-add", nbdNode("nb2", srvSock, map[string]any{"tls-creds": "c0"}))
	d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e2", "node-name": "nb2", "name": "disk2", "writable": true})
	qio(t, d.uri("disk2"), "read -P 0x72 1M 4k", "write -P 0x73 2M 64k")
	d.qmp.DeleteExport(t, "e2")
	d.cmd(t, "blockdev-del", map[string]any{"node-name": "nb2"})
	srv.qmp.DeleteExport(t, "b")
	srv.cmd(t, "blockdev-del", map[string]any{"node-name": "b"})
	qio(t, base, "read -P 0x73 2M 64k", "read -P 0x71 0 1M")
}

// TestVsockLikeReference: vsock server addresses are parsed, and refused
// when unreachable, with qemu-storage-daemon's texts; the same daemon's
// vsock NBD export is read through them where this kernel has a vsock
// loopback transport (skipped loudly elsewhere: connecting needs one).
func TestVsockLikeReference(t *testing.T) {
	qsd := needtool.Find(t, "qemu-storage-daemon")[0]
	dir := t.TempDir()
	servers := []map[string]any{
		{"type": "vsock", "cid": "x", "port": "1"},
		{"type": "vsock", "cid": "3", "port": "4294967296"},
		{"type": "vsock", "cid": "3", "port": "1234"},
	}
	answers := func(bin, sub string) []string {
		_, c := qmptest.StartSession(t, bin, filepath.Join(dir, sub))
		var out []string
		for i, s := range servers {
			out = append(out, c.Err(t, "blockdev-add", map[string]any{"driver": "nbd", "node-name": fmt.Sprintf("v%d", i), "server": s, "export": "x"}))
		}
		return out
	}
	for _, sub := range []string{"ref", "blockd"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	want, got := answers(qsd, "ref"), answers(blockdBin, "blockd")
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("server %v: blockd %q, reference %q", servers[i], got[i], want[i])
		}
	}
}

// TestVsockExport reads and writes another blockd's vsock NBD export
// through an nbd node. Connecting needs a vsock loopback transport
// (vsock_loopback) or a peer VM: without one the test skips loudly.
func TestVsockExport(t *testing.T) {
	needtool.Find(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "1M")
	qio(t, base, "write -P 0x3c 0 1M")
	if err := os.MkdirAll(filepath.Join(dir, "srv"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, srv := qmptest.StartSession(t, blockdBin, filepath.Join(dir, "srv"))
	srv.Ok(t, "blockdev-add", map[string]any{"driver": "raw", "node-name": "b", "file": map[string]any{"driver": "file", "filename": base}})
	port := fmt.Sprint(40000 + os.Getpid()%20000)
	r, _ := srv.Command(t, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "vsock", "data": map[string]any{"cid": "4294967295", "port": port}}})
	if r["error"] != nil {
		t.Skipf("SKIP LOUDLY: no AF_VSOCK listener on this kernel (%v): vsock nbd client NOT TESTED", r["error"])
	}
	srv.Ok(t, "block-export-add", map[string]any{"type": "nbd", "id": "b", "node-name": "b", "name": "base", "writable": true})
	d := startBlockd(t, filepath.Join(dir, "d"))
	r, _ = d.qmp.Command(t, "blockdev-add", map[string]any{"driver": "nbd", "node-name": "v", "export": "base",
		"server": map[string]any{"type": "vsock", "cid": "1", "port": port}})
	if r["error"] != nil {
		t.Skipf("SKIP LOUDLY: no vsock loopback transport on this kernel (%v): vsock nbd client NOT TESTED", r["error"])
	}
	d.cmd(t, "block-export-add", map[string]any{"type": "nbd", "id": "e", "node-name": "v", "name": "disk", "writable": true})
	qio(t, d.uri("disk"), "read -P 0x3c 0 1M", "write -P 0x3d 4k 4k")
	d.qmp.DeleteExport(t, "e")
	d.cmd(t, "blockdev-del", map[string]any{"node-name": "v"})
	srv.DeleteExport(t, "b")
	srv.Ok(t, "blockdev-del", map[string]any{"node-name": "b"})
	qio(t, base, "read -P 0x3d 4k 4k")
}
