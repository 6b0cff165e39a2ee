package qmptest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/internal/gnutls"
	"blockd/internal/testpki"
)

// writePSKDir fills a tls-creds-psk directory: user's key, and DH
// parameters so that the reference does not spend seconds making its own.
func writePSKDir(t *testing.T, dir, user, key string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "keys.psk"), []byte(user+":"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dh-params.pem"), []byte(testpki.FFDHE2048), 0o600); err != nil {
		t.Fatal(err)
	}
}

// inetMonitorAddr finds the address an inet chardev (port 0) was bound
// to, from query-chardev's "disconnected:tcp:HOST:PORT,server=on".
func inetMonitorAddr(t *testing.T, c *Client, id string) string {
	t.Helper()
	r, _ := c.Command(t, "query-chardev", nil)
	for _, e := range r["return"].([]any) {
		m := e.(map[string]any)
		if m["label"] == id {
			f := m["filename"].(string)
			f = strings.TrimPrefix(f, "disconnected:tcp:")
			return strings.TrimSuffix(f, ",server=on")
		}
	}
	t.Fatalf("no chardev %s in %v", id, r)
	return ""
}

// qmpOver speaks QMP on conn: greeting, capabilities, then query-chardev.
func qmpOver(conn net.Conn) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(ReplyTimeout))
	rd := bufio.NewReader(conn)
	var lines []string
	read := func() error {
		l, err := rd.ReadString('\n')
		lines = append(lines, strings.TrimSpace(l))
		return err
	}
	if err := read(); err != nil {
		return "", err
	}
	for _, cmd := range []string{`{"execute":"qmp_capabilities"}`, `{"execute":"query-chardev"}`} {
		if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
			return "", err
		}
		if err := read(); err != nil {
			return "", err
		}
	}
	return strings.Join(lines, "\n"), nil
}

// Monitors on inet sockets with tls-creds, x509 (crypto/tls) and PSK
// (GnuTLS): a TLS client gets QMP and shows in query-chardev as the
// reference shows its client; a client that does not speak TLS gets
// nothing and leaves the monitor serving.
func TestTLSMonitors(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "blockd test CA")
	x509Dir, pskDir := filepath.Join(dir, "x509"), filepath.Join(dir, "psk")
	for _, p := range []string{x509Dir, pskDir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ca.WriteCA(x509Dir)
	ca.Issue(x509Dir, "server", pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	// verify-peer is on by default: the client shows a certificate too.
	ca.Issue(dir, "client", pkix.Name{CommonName: "client"}, x509.ExtKeyUsageClientAuth)
	clientCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client-cert.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("a5", 32)
	writePSKDir(t, pskDir, "alice", key)
	d := StartDaemon(t, blockdBin, dir,
		"--object", "tls-creds-x509,id=tx,endpoint=server,dir="+x509Dir,
		"--object", "tls-creds-psk,id=tp,endpoint=server,dir="+pskDir,
		"--chardev", "socket,id=mx,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=tx", "--monitor", "chardev=mx",
		"--chardev", "socket,id=mp,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=tp", "--monitor", "chardev=mp")
	defer d.Stop(t)
	c := Dial(t, d.Sock)
	defer c.Close()
	c.Negotiate(t)
	xAddr, pAddr := inetMonitorAddr(t, c, "mx"), inetMonitorAddr(t, c, "mp")

	// Not TLS: no greeting, and the monitor goes on serving.
	plain, err := net.Dial("tcp", xAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if out, err := qmpOver(plain); err == nil || strings.Contains(out, "QMP") {
		t.Errorf("a client without TLS got %q (%v)", out, err)
	}
	plain.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	xc, err := tls.Dial("tcp", xAddr, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{clientCert}})
	if err != nil {
		t.Fatalf("x509 TLS monitor: %v", err)
	}
	defer xc.Close()
	out, err := qmpOver(xc)
	if err != nil {
		t.Fatalf("QMP over x509 TLS: %v %s", err, out)
	}
	want := fmt.Sprintf(`"filename": "tcp:%s,server=on <-> %s"`, xAddr, xc.LocalAddr())
	if !strings.Contains(out, `"QMP"`) || !strings.Contains(out, want) {
		t.Errorf("QMP over x509 TLS:\n%s\nwant %s", out, want)
	}

	cl, err := gnutls.NewPSKClient("alice", key, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	raw, err := net.Dial("tcp", pAddr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := cl.Handshake(raw)
	if err != nil {
		raw.Close()
		t.Fatalf("PSK TLS monitor: %v", err)
	}
	defer pc.Close()
	if out, err := qmpOver(pc); err != nil || !strings.Contains(out, `"return": {}`) {
		t.Errorf("QMP over TLS-PSK: %v\n%s", err, out)
	}
}

// Socket chardevs' TLS refusals, on the command line and in chardev-add,
// answer as qemu-storage-daemon's; a chardev added with TLS takes TLS
// clients.
func TestChardevTLSLikeReference(t *testing.T) {
	dir := t.TempDir()
	pskDir := filepath.Join(dir, "psk")
	if err := os.MkdirAll(pskDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("3c", 32)
	writePSKDir(t, pskDir, "qemu", key)
	objects := []string{"--object", "tls-creds-psk,id=p0,endpoint=server,dir=" + pskDir,
		"--object", "tls-creds-psk,id=pc,endpoint=client,dir=" + pskDir, "--object", "secret,id=sec0,data=x"}
	// A monitor on a unix socket with tls-creds: the whole start refused.
	spec := "socket,id=u,path=" + filepath.Join(dir, "u.sock") + ",server=on,wait=off,tls-creds=p0"
	out, _ := exec.Command(blockdBin, append(objects, "--chardev", spec, "--monitor", "chardev=u")...).CombinedOutput()
	if want := "blockd: --chardev " + spec + ": 'tls_creds' option is incompatible with 'unix' address type"; strings.TrimSpace(string(out)) != want {
		t.Errorf("unix monitor with TLS:\n got  %q\n want %q", out, want)
	}
	inet := map[string]any{"type": "inet", "data": map[string]any{"host": "127.0.0.1", "port": "0"}}
	adds := []map[string]any{
		{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": filepath.Join(dir, "c.sock")}}, "server": true, "wait": false, "tls-creds": "p0"},
		{"addr": inet, "server": true, "wait": false, "tls-authz": "z"},
		{"addr": inet, "server": true, "wait": false, "tls-creds": "nope"},
		{"addr": inet, "server": true, "wait": false, "tls-creds": "sec0"},
		{"addr": inet, "server": true, "wait": false, "tls-creds": "pc"},
		{"addr": inet, "server": false, "tls-creds": "p0"},
	}
	answers := func(bin, sub string) []string {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		_, c := StartSession(t, bin, filepath.Join(dir, sub), objects...)
		var got []string
		for i, a := range adds {
			r, _ := c.Command(t, "chardev-add", map[string]any{"id": fmt.Sprintf("c%d", i), "backend": map[string]any{"type": "socket", "data": a}})
			b, _ := json.Marshal(r)
			got = append(got, string(b))
		}
		return got
	}
	if ref := referenceDaemon(t); ref != "" {
		want := answers(ref, "ref")
		for i, g := range answers(blockdBin, "blockd") {
			if g != want[i] {
				t.Errorf("chardev-add %v:\n got  %s\n want %s", adds[i], g, want[i])
			}
		}
	}

	// A spare chardev with TLS: a PSK client completes its handshake.
	if err := os.MkdirAll(filepath.Join(dir, "spare"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, c := StartSession(t, blockdBin, filepath.Join(dir, "spare"), objects...)
	c.Ok(t, "chardev-add", map[string]any{"id": "s", "backend": map[string]any{"type": "socket",
		"data": map[string]any{"addr": inet, "server": true, "wait": false, "tls-creds": "p0"}}})
	addr := inetMonitorAddr(t, c, "s")
	cl, err := gnutls.NewPSKClient("qemu", key, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(ReplyTimeout))
	tc, err := cl.Handshake(raw)
	if err != nil {
		raw.Close()
		t.Fatalf("TLS-PSK to a spare chardev: %v", err)
	}
	if _, err := tc.Write([]byte("dropped\n")); err != nil {
		t.Errorf("write to the spare chardev: %v", err)
	}
	tc.Close()
}
