package objects

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"blockd/internal/gnutls"
	"blockd/internal/needtool"
	"blockd/internal/testpki"
	"blockd/schema"
)

func mkdir(t *testing.T, parts ...string) string {
	d := filepath.Join(parts...)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func mustAdd(t *testing.T, r *Registry, spec string) {
	t.Helper()
	if err := r.AddFromCLI(spec); err != nil {
		t.Fatalf("--object %s: %v", spec, err)
	}
}

// handshake runs a TLS handshake between cfg on a server and a crypto/tls
// client holding the given certificate files (none when certDir is "");
// it returns the server's error and, if it succeeded, the client's name.
func handshake(t *testing.T, cfg *tls.Config, roots *x509.CertPool, certDir string) (string, error) {
	t.Helper()
	ccfg := &tls.Config{RootCAs: roots}
	if certDir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "client-cert.pem"), filepath.Join(certDir, "client-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		ccfg.Certificates = []tls.Certificate{cert}
	}
	return handshakeWith(t, cfg, ccfg)
}

// handshakeWith runs a TLS handshake between a server with cfg and a
// client with ccfg (ServerName is set to localhost).
func handshakeWith(t *testing.T, cfg, ccfg *tls.Config) (string, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		name := ""
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			name = PeerName(pc[0])
		}
		_, _ = tc.Write([]byte("ok"))
		done <- result{name: name}
	}()
	ccfg = ccfg.Clone()
	ccfg.ServerName = "localhost"
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), ccfg)
	if err == nil {
		_, _ = io.ReadAll(conn) // TLS 1.3 reports client-cert refusals on the first read
		conn.Close()
	}
	res := <-done
	return res.name, res.err
}

// TestX509ServerConfig: credentials made with crypto/x509 in QEMU's
// layout serve TLS; verify-peer requires a client certificate from the
// same CA; ca-crl.pem revokes; authz-simple matches the peer's name.
func TestX509ServerConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Test CA")
	srv := mkdir(t, dir, "server")
	ca.WriteCA(srv)
	ca.Issue(srv, "server", pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	cli := mkdir(t, dir, "client")
	ca.WriteCA(cli)
	clientCert := ca.Issue(cli, "client", pkix.Name{CommonName: "client", Organization: []string{"Example"}}, x509.ExtKeyUsageClientAuth)
	other := testpki.NewCA(t, "Other CA")
	stranger := mkdir(t, dir, "stranger")
	other.Issue(stranger, "client", pkix.Name{CommonName: "client"}, x509.ExtKeyUsageClientAuth)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	r := NewRegistry(nil)
	mustAdd(t, r, "tls-creds-x509,id=tls0,endpoint=server,dir="+srv)
	mustAdd(t, r, "tls-creds-x509,id=tlsnv,endpoint=server,verify-peer=off,dir="+srv)
	mustAdd(t, r, "tls-creds-x509,id=tlsc,dir="+cli)
	mustAdd(t, r, "authz-simple,id=auth0,identity=CN=client,,O=Example")

	cfg, err := r.TLSServerConfig("tls0")
	if err != nil {
		t.Fatal(err)
	}
	name, err := handshake(t, cfg, roots, cli)
	if err != nil {
		t.Fatalf("client with a certificate from the CA: %v", err)
	}
	if name != "CN=client,O=Example" {
		t.Fatalf("peer name %q", name)
	}
	if ok, err := r.Authorize("auth0", name); !ok || err != nil {
		t.Fatalf("Authorize(%q) = %v, %v", name, ok, err)
	}
	if ok, err := r.Authorize("auth0", "CN=other"); ok || err != nil {
		t.Fatalf("Authorize(CN=other) = %v, %v", ok, err)
	}
	if _, err := handshake(t, cfg, roots, ""); err == nil {
		t.Fatal("verify-peer=on accepted a client without a certificate")
	}
	if _, err := handshake(t, cfg, roots, stranger); err == nil {
		t.Fatal("verify-peer=on accepted a certificate from another CA")
	}
	nv, err := r.TLSServerConfig("tlsnv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, nv, roots, ""); err != nil {
		t.Fatalf("verify-peer=off refused a client without certificate: %v", err)
	}

	// The client side, from the client's own directory, as a future nbd
	// client driver would load it.
	ccfg, err := r.TLSClientConfig("tlsc")
	if err != nil {
		t.Fatal(err)
	}
	if name, err := handshakeWith(t, cfg, ccfg); err != nil || name != "CN=client,O=Example" {
		t.Fatalf("TLSClientConfig against TLSServerConfig: %q, %v", name, err)
	}
	if _, err := r.TLSClientConfig("tls0"); err == nil || err.Error() != "Expected TLS credentials for a client endpoint" {
		t.Errorf("TLSClientConfig of server credentials: %v", err)
	}

	// A CRL naming the client's certificate revokes it.
	ca.WriteCRL(srv, clientCert)
	mustAdd(t, r, "tls-creds-x509,id=tlscrl,endpoint=server,dir="+srv)
	crlCfg, _ := r.TLSServerConfig("tlscrl")
	if _, err := handshake(t, crlCfg, roots, cli); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked client certificate: %v", err)
	}

	for id, want := range map[string]string{
		"nope":  "No TLS credentials with id 'nope'",
		"auth0": "Object with id 'auth0' is not TLS credentials",
		"tlsc":  "Expected TLS credentials for a server endpoint",
	} {
		if _, err := r.TLSServerConfig(id); err == nil || err.Error() != want {
			t.Errorf("TLSServerConfig(%s): %v, want %q", id, err, want)
		}
	}
	if _, err := r.Authorize("nope", "x"); err == nil || err.Error() != "Cannot find QAuthZ object ID nope" {
		t.Errorf("Authorize(nope): %v", err)
	}
	if _, err := r.Authorize("tls0", "x"); err == nil || err.Error() != "Object 'tls0' is not a QAuthZ subclass" {
		t.Errorf("Authorize(tls0): %v", err)
	}

	// A configuration already handed out survives object-del, as the
	// reference's NBD server keeps its credentials.
	if err := r.del("tls0"); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, cfg, roots, cli); err != nil {
		t.Fatalf("config after object-del: %v", err)
	}
}

// TestX509SanityCheck: the reference's checks at creation time.
func TestX509SanityCheck(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "CA")
	// A server certificate that is itself a CA is refused.
	bad := mkdir(t, dir, "bad")
	ca.WriteCA(bad)
	testpki.WritePEM(t, filepath.Join(bad, "server-cert.pem"), "CERTIFICATE", ca.Cert.Raw)
	kder, _ := x509.MarshalPKCS8PrivateKey(ca.Key)
	testpki.WritePEM(t, filepath.Join(bad, "server-key.pem"), "PRIVATE KEY", kder)
	r := NewRegistry(nil)
	err := r.AddFromCLI("tls-creds-x509,id=t,endpoint=server,dir=" + bad)
	if want := "The certificate " + bad + "/server-cert.pem basic constraints show it as a CA"; err == nil || err.Error() != want {
		t.Fatalf("CA as server certificate: %v, want %q", err, want)
	}
	if err := r.AddFromCLI("tls-creds-x509,id=t,endpoint=server,sanity-check=off,dir=" + bad); err != nil {
		t.Fatalf("sanity-check=off: %v", err)
	}
	// A client certificate used as a server certificate has the wrong
	// purpose.
	wrong := mkdir(t, dir, "wrong")
	ca.WriteCA(wrong)
	ca.Issue(wrong, "server", pkix.Name{CommonName: "x"}, x509.ExtKeyUsageClientAuth)
	if err := r.AddFromCLI("tls-creds-x509,id=t2,endpoint=server,dir=" + wrong); err == nil ||
		!strings.Contains(err.Error(), "failed validation against") {
		t.Fatalf("client certificate as server certificate: %v", err)
	}
}

// TestPSK: keys.psk loads; the server side runs on GnuTLS with the
// object's priority plus the PSK key exchanges, and a client with a key
// from the file gets through (tls-authz is not consulted for PSK, as in
// the reference); crypto/tls configurations refuse PSK credentials.
func TestPSK(t *testing.T) {
	dir := t.TempDir()
	const key = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "keys.psk"), []byte("qemu:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(nil)
	mustAdd(t, r, "tls-creds-psk,id=p,endpoint=server,dir="+dir)
	mustAdd(t, r, "tls-creds-psk,id=p12,endpoint=server,priority=NORMAL:-VERS-TLS1.3,dir="+dir)
	mustAdd(t, r, "tls-creds-psk,id=pc,endpoint=client,dir="+dir)
	if _, err := r.TLSServerConfig("p"); !errors.Is(err, ErrPSKUnsupported) {
		t.Fatalf("PSK server config: %v", err)
	}
	if _, err := r.TLSServer("pc", nil); err == nil || err.Error() != "Expected TLS credentials for a server endpoint" {
		t.Fatalf("PSK client credentials as a server: %v", err)
	}
	if err := gnutls.Load(); err != nil {
		needtool.Missing(t, err.Error())
	}
	cli, err := gnutls.NewPSKClient("qemu", key, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	missing := "no-such-authz"
	for id, proto := range map[string]string{"p": "TLS1.3", "p12": "TLS1.2"} {
		srv, err := r.TLSServer(id, &missing)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			nc, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			tc, err := srv.Handshake(nc)
			if err == nil {
				_, err = tc.Write([]byte("hello"))
				tc.Close()
			} else {
				nc.Close()
			}
			done <- err
		}()
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cli.Handshake(nc)
		if err != nil {
			t.Fatalf("%s: client handshake: %v (server: %v)", id, err, <-done)
		}
		if got := cc.Protocol(); got != proto {
			t.Errorf("%s: protocol %s, want %s", id, got, proto)
		}
		b, err := io.ReadAll(cc)
		if err != nil || string(b) != "hello" {
			t.Errorf("%s: read %q, %v", id, b, err)
		}
		cc.Close()
		if err := <-done; err != nil {
			t.Fatalf("%s: server: %v", id, err)
		}
		l.Close()
		srv.Close()
	}

	// A dh-params.pem that does not parse fails the object's creation.
	if err := os.WriteFile(filepath.Join(dir, "dh-params.pem"), []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = r.AddFromCLI("tls-creds-psk,id=pdh,endpoint=server,dir=" + dir)
	if want := "Unable to load DH parameters from " + dir + "/dh-params.pem: Base64 unexpected header error."; err == nil || err.Error() != want {
		t.Fatalf("bad dh-params.pem: %v, want %q", err, want)
	}
}

// TestSecrets: inline, file, base64, and AES-256-CBC encrypted secrets
// under a master key, decrypted as the reference does.
func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	mfile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(mfile, master, 0o600); err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, 16)
	_, _ = rand.Read(iv)
	plain := []byte("the disk password")
	pad := 16 - len(plain)%16
	padded := append(append([]byte{}, plain...), []byte(strings.Repeat(string(rune(pad)), pad))...)
	block, _ := aes.NewCipher(master)
	ct := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, padded)

	r := NewRegistry(nil)
	mustAdd(t, r, "secret,id=raw,data=abc")
	mustAdd(t, r, "secret,id=b64,data=YWJj,format=base64")
	mustAdd(t, r, "secret,id=master,file="+mfile)
	mustAdd(t, r, "secret,id=enc,keyid=master,format=base64,data="+base64.StdEncoding.EncodeToString(ct)+
		",iv="+base64.StdEncoding.EncodeToString(iv))
	for id, want := range map[string]string{"raw": "abc", "b64": "abc", "enc": string(plain)} {
		got, err := r.Secret(id)
		if err != nil || string(got) != want {
			t.Errorf("Secret(%s) = %q, %v; want %q", id, got, err, want)
		}
	}
	for spec, want := range map[string]string{
		"secret,id=e1,keyid=master,data=abc":                                             "IV is required to decrypt secret",
		"secret,id=e2,keyid=master,data=abc,iv=AAAA":                                     "IV should be 16 bytes in length not 3",
		"secret,id=e3,keyid=raw,data=abc,iv=AAAA":                                        "Key should be 32 bytes in length",
		"secret,id=e4,keyid=nope,data=abc":                                               "No secret with id 'nope'",
		"secret,id=e5,keyid=master,data=abc,iv=" + base64.StdEncoding.EncodeToString(iv): "Length 3 must be a multiple of block size 16",
	} {
		if err := r.AddFromCLI(spec); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if _, err := r.Secret("nope"); err == nil || err.Error() != "No secret with id 'nope'" {
		t.Errorf("Secret(nope): %v", err)
	}
	mustAdd(t, r, "iothread,id=io")
	if _, err := r.Secret("io"); err == nil || err.Error() != "Object with id 'io' is not a secret" {
		t.Errorf("Secret(io): %v", err)
	}
}

// TestUse: a pinned object cannot be deleted until released.
func TestUse(t *testing.T) {
	r := NewRegistry(nil)
	mustAdd(t, r, "secret,id=s,data=x")
	release, err := r.Use("s")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.del("s"); err == nil || err.Error() != "object 's' is in use, can not be deleted" {
		t.Fatalf("del of a pinned object: %v", err)
	}
	release()
	release() // idempotent
	if err := r.del("s"); err != nil {
		t.Fatalf("del after release: %v", err)
	}
	if _, err := r.Use("s"); schema.AsError(err) == nil {
		t.Fatal("Use of a deleted object")
	}
}

// TestX509WithGnuTLSClient: GnuTLS, the library QEMU's TLS clients use,
// handshakes with the server configuration built from a credentials
// directory, presenting the client certificate a QEMU client would load
// from its own directory; without one it is refused.
func TestX509WithGnuTLSClient(t *testing.T) {
	cli := needtool.Find(t, "gnutls-cli")[0]
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Test CA")
	srv := mkdir(t, dir, "server")
	ca.WriteCA(srv)
	ca.Issue(srv, "server", pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth)
	cdir := mkdir(t, dir, "client")
	ca.WriteCA(cdir)
	ca.Issue(cdir, "client", pkix.Name{CommonName: "qemu-client", Organization: []string{"Example"}}, x509.ExtKeyUsageClientAuth)
	r := NewRegistry(nil)
	mustAdd(t, r, "tls-creds-x509,id=tls0,endpoint=server,dir="+srv)
	mustAdd(t, r, "authz-simple,id=auth0,identity=CN=qemu-client,,O=Example")
	cfg, err := r.TLSServerConfig("tls0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		allowed bool
		err     error
	}
	results := make(chan result, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			err = tc.Handshake()
			res := result{err: err}
			if err == nil {
				res.allowed, res.err = r.Authorize("auth0", PeerName(tc.ConnectionState().PeerCertificates[0]))
				_, _ = tc.Write([]byte("hello\n"))
			}
			tc.Close()
			results <- res
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	gnutls := func(withCert bool) (string, error) {
		args := []string{"--x509cafile=" + filepath.Join(cdir, "ca-cert.pem"), "-p", port, "localhost"}
		if withCert {
			args = append(args, "--x509certfile="+filepath.Join(cdir, "client-cert.pem"),
				"--x509keyfile="+filepath.Join(cdir, "client-key.pem"))
		}
		cmd := exec.Command(cli, args...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := gnutls(true)
	res := <-results
	if err != nil || res.err != nil || !res.allowed {
		t.Fatalf("gnutls-cli with the client certificate: %v, server: %+v\n%s", err, res, out)
	}
	out, err = gnutls(false)
	res = <-results
	if res.err == nil {
		t.Fatalf("the server accepted gnutls-cli without a client certificate (%v)\n%s", err, out)
	}
}
