package gnutls

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockd/internal/needtool"
	"blockd/internal/testpki"
)

const prio = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

func needLib(t *testing.T) {
	t.Helper()
	if err := Load(); err != nil {
		needtool.Missing(t, err.Error())
	}
}

// pskFile writes a keys.psk with the given lines.
func pskFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.psk")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pair returns both ends of a TCP connection on loopback.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

type result struct {
	c   *Conn
	err error
}

// shake runs both handshakes and returns their results.
func shake(t *testing.T, srv *PSKServer, cli *PSKClient) (s, c result) {
	t.Helper()
	sn, cn := pair(t)
	ch := make(chan result, 1)
	go func() {
		tc, err := srv.Handshake(sn)
		if err != nil {
			sn.Close() // as a server does: the client sees the end
		}
		ch <- result{tc, err}
	}()
	cc, cerr := cli.Handshake(cn)
	if cerr != nil {
		cn.Close()
	}
	return <-ch, result{cc, cerr}
}

func TestPSKRoundTrip(t *testing.T) {
	needLib(t)
	file := pskFile(t, "bob:00112233", "alice:0123456789abcdef0123456789abcdef")
	srv, err := NewPSKServer(file, "", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := NewPSKClient("alice", "0123456789abcdef0123456789abcdef", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, c := shake(t, srv, cli)
	if s.err != nil || c.err != nil {
		t.Fatalf("handshake: server %v, client %v", s.err, c.err)
	}
	if u := s.c.PeerUsername(); u != "alice" {
		t.Fatalf("server saw identity %q", u)
	}
	if p := s.c.Protocol(); !strings.HasPrefix(p, "TLS1.") {
		t.Fatalf("protocol %q", p)
	}

	// Echo 4 MiB through the server while the client writes and reads at
	// once: records span many socket reads and the send buffers fill.
	payload := make([]byte, 4<<20)
	_, _ = rand.Read(payload)
	echoed := make(chan error, 1)
	go func() {
		_, err := io.CopyN(s.c, s.c, int64(len(payload)))
		echoed <- err
	}()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.c.Write(payload)
		wrote <- err
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c.c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed data differs")
	}

	// close_notify from the client reads as EOF on the server.
	if err := c.c.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.c.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("server read after client close: %d, %v", n, err)
	}
	if err := s.c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestPSKRefused: an unknown identity or a wrong key fails the handshake
// on both sides with GnuTLS's reason, and the server's credentials keep
// working for the next client.
func TestPSKRefused(t *testing.T) {
	needLib(t)
	file := pskFile(t, "alice:0123456789abcdef")
	srv, err := NewPSKServer(file, "", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct{ user, key string }{
		{"mallory", "0123456789abcdef"},
		{"alice", "fedcba9876543210"},
	} {
		cli, err := NewPSKClient(tc.user, tc.key, prio)
		if err != nil {
			t.Fatal(err)
		}
		s, c := shake(t, srv, cli)
		cli.Close()
		if s.err == nil || c.err == nil {
			t.Fatalf("%s/%s: handshake passed: server %v, client %v", tc.user, tc.key, s.err, c.err)
		}
		var ge *Error
		if !errors.As(s.err, &ge) || !strings.HasPrefix(s.err.Error(), "TLS handshake failed: ") {
			t.Fatalf("server error %v", s.err)
		}
	}
	cli, err := NewPSKClient("alice", "0123456789abcdef", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, c := shake(t, srv, cli)
	if s.err != nil || c.err != nil {
		t.Fatalf("good client after refused ones: server %v, client %v", s.err, c.err)
	}
	s.c.Close()
	c.c.Close()
}

// TestHandshakeDeadline: a client that connects and says nothing is cut
// off by the connection's deadline, not waited for.
func TestHandshakeDeadline(t *testing.T) {
	needLib(t)
	srv, err := NewPSKServer(pskFile(t, "alice:00"), "", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	sn, _ := pair(t)
	_ = sn.SetDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = srv.Handshake(sn)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client: %v", err)
	}
}

// TestCloseWakesReader: Close from another goroutine ends a Read that
// waits for data, and the session is freed after it.
func TestCloseWakesReader(t *testing.T) {
	needLib(t)
	srv, err := NewPSKServer(pskFile(t, "qemu:abcdef01"), "", prio)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewPSKClient("qemu", "abcdef01", prio)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, c := shake(t, srv, cli)
	if s.err != nil || c.err != nil {
		t.Fatalf("handshake: %v %v", s.err, c.err)
	}
	defer c.c.Close()
	done := make(chan error, 1)
	go func() {
		_, err := s.c.Read(make([]byte, 100))
		done <- err
	}()
	// Closing while the reader is parked in the poller must wake it.
	for i := 0; i < 100 && s.c.refsNow() == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	s.c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	srv.Close()
	if !s.c.isFreed() {
		t.Fatal("session not freed after close")
	}
}

// TestDHParamsFile: DH parameters from a file (or GnuTLS's own when there
// is none) serve a DHE-PSK-only session; a file that does not parse, or
// is missing, is refused with the reference's texts.
func TestDHParamsFile(t *testing.T) {
	needLib(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pem")
	if err := os.WriteFile(good, []byte(testpki.FFDHE2048), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckDHParams(good); err != nil {
		t.Fatal(err)
	}
	const dhePrio = "NORMAL:-VERS-TLS1.3:-KX-ALL:+DHE-PSK"
	keys := pskFile(t, "qemu:00112233445566778899aabbccddeeff")
	for _, dh := range []string{good, ""} {
		srv, err := NewPSKServer(keys, dh, dhePrio)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := NewPSKClient("qemu", "00112233445566778899aabbccddeeff", dhePrio)
		if err != nil {
			t.Fatal(err)
		}
		s, c := shake(t, srv, cli)
		if s.err != nil || c.err != nil {
			t.Fatalf("DHE-PSK with dh-params %q: server %v, client %v", dh, s.err, c.err)
		}
		if p := c.c.Protocol(); p != "TLS1.2" {
			t.Fatalf("protocol %s", p)
		}
		s.c.Close()
		c.c.Close()
		cli.Close()
		srv.Close()
	}
	bad := filepath.Join(dir, "dh-params.pem")
	if err := os.WriteFile(bad, []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewPSKServer(pskFile(t, "a:00"), bad, prio)
	if err == nil || !strings.HasPrefix(err.Error(), "Unable to load DH parameters from "+bad+": ") {
		t.Fatalf("bad dh-params: %v", err)
	}
	_, err = NewPSKServer(pskFile(t, "a:00"), filepath.Join(dir, "none.pem"), prio)
	if err == nil || !strings.Contains(err.Error(), "No such file or directory") {
		t.Fatalf("missing dh-params: %v", err)
	}
}

func TestMissingLibrary(t *testing.T) {
	_, err := open("libgnutls-blockd-missing.so.30")
	if err == nil || !strings.Contains(err.Error(), "libgnutls30") || !strings.Contains(err.Error(), "libgnutls-blockd-missing.so.30") {
		t.Fatalf("missing library: %v", err)
	}
}

func TestBadPriority(t *testing.T) {
	needLib(t)
	srv, err := NewPSKServer(pskFile(t, "qemu:abcdef01"), "", "NORMAL:+NO-SUCH-THING")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	sn, _ := pair(t)
	_, err = srv.Handshake(sn)
	if err == nil || !strings.HasPrefix(err.Error(), "Unable to set TLS session priority NORMAL:+NO-SUCH-THING: ") {
		t.Fatalf("bad priority: %v", err)
	}
}
