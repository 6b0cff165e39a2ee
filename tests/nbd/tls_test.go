package nbdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"blockd/blockio"
	"blockd/nbd"
)

// pki writes a CA and a server and a client certificate signed by it, in
// the file names QEMU's tls-creds-x509 reads from its dir.
type pki struct {
	dir    string
	server tls.Certificate
	pool   *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), pool: x509.NewCertPool()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "blockd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.pool.AddCert(ca)
	p.write(t, "ca-cert.pem", "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (der []byte, key *ecdsa.PrivateKey) {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"blockd"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	sDER, sKey := leaf(2, "server", x509.ExtKeyUsageServerAuth)
	cDER, cKey := leaf(3, "client", x509.ExtKeyUsageClientAuth)
	p.write(t, "client-cert.pem", "CERTIFICATE", cDER)
	ck, _ := x509.MarshalPKCS8PrivateKey(cKey)
	p.write(t, "client-key.pem", "PRIVATE KEY", ck)
	p.server = tls.Certificate{Certificate: [][]byte{sDER}, PrivateKey: sKey}
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) {
	if err := os.WriteFile(filepath.Join(p.dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

type memDev struct{ size int64 }

func (m memDev) ReadAt(p []byte, off int64) error {
	clear(p)
	return blockio.CheckRange(off, int64(len(p)), m.size)
}
func (m memDev) WriteAt([]byte, int64, blockio.WriteFlags) error    { return blockio.ErrReadOnly }
func (m memDev) WriteZeroes(int64, int64, blockio.WriteFlags) error { return blockio.ErrReadOnly }
func (m memDev) Discard(int64, int64) error                         { return blockio.ErrReadOnly }
func (m memDev) Flush() error                                       { return nil }
func (m memDev) BlockStatus(off, n int64) (blockio.Status, error) {
	return blockio.Status{Flags: blockio.StatusZero | blockio.StatusAllocated, Length: n}, nil
}
func (m memDev) Size() (int64, error) { return m.size, nil }
func (m memDev) Truncate(int64) error { return blockio.ErrNotSupported }

// TestTLSx509 serves an export that requires TLS with verified client
// certificates and an authorization check, and connects qemu-img with
// the same credentials, without TLS, and as a client the check refuses.
func TestTLSx509(t *testing.T) {
	need(t, "qemu-img")
	p := newPKI(t)
	var allow atomic.Bool
	var seenDN atomic.Value
	allow.Store(true)
	srv := nbd.NewServer(nbd.Options{
		TLS: goTLS{cfg: &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
			authorize: func(dn string) bool { seenDN.Store(dn); return allow.Load() }},
	})
	if err := srv.AddExport(&nbd.Export{Name: "disk", Dev: memDev{16 << 20}, Size: 16 << 20, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	opts := "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + itoa(port) + ",export=disk"
	creds := "tls-creds-x509,id=tls0,dir=" + p.dir + ",endpoint=client"

	out := run(t, "qemu-img", "info", "--object", creds, "--image-opts", opts+",tls-creds=tls0")
	if !strings.Contains(out, "virtual size: 16 MiB") {
		t.Fatalf("qemu-img info over TLS:\n%s", out)
	}
	if dn, _ := seenDN.Load().(string); !strings.Contains(dn, "CN=client") {
		t.Fatalf("authorization saw DN %q", dn)
	}
	out, err = runErr("qemu-img", "info", "--image-opts", opts)
	if err == nil || !strings.Contains(out, "TLS") {
		t.Fatalf("plain client was not refused for want of TLS: %v\n%s", err, out)
	}
	allow.Store(false)
	if out, err := runErr("qemu-img", "info", "--object", creds, "--image-opts", opts+",tls-creds=tls0"); err == nil {
		t.Fatalf("client refused by tls-authz got in:\n%s", out)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// goTLS is a crypto/tls nbd.TLSServer with an authorization check of the
// client certificate's DN (the daemon's own is in objects).
type goTLS struct {
	cfg       *tls.Config
	authorize func(dn string) bool
}

func (g goTLS) Handshake(nc net.Conn) (net.Conn, error) {
	tc := tls.Server(nc, g.cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	dn := ""
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		dn = certs[0].Subject.String()
	}
	if !g.authorize(dn) {
		return nil, errors.New("not authorized")
	}
	return tc, nil
}
