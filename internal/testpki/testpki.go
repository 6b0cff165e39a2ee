// Package testpki owns the certificates tests make: a CA, leaf
// certificates and CRLs written with crypto/x509 in the file layout
// QEMU's tls-creds-x509 reads from its dir (ca-cert.pem, server-cert.pem,
// server-key.pem, client-cert.pem, client-key.pem, ca-crl.pem).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for one test.
type CA struct {
	t      testing.TB
	Cert   *x509.Certificate
	Key    *ecdsa.PrivateKey
	serial int64
}

// NewCA makes a self-signed CA valid for a day.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{t: t, Cert: cert, Key: key, serial: 1}
}

// WriteCA writes dir/ca-cert.pem.
func (ca *CA) WriteCA(dir string) {
	WritePEM(ca.t, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", ca.Cert.Raw)
}

// Issue signs a leaf certificate for localhost and 127.0.0.1 and writes
// it and its key as dir/<prefix>-cert.pem and dir/<prefix>-key.pem
// (prefix "server" or "client").
func (ca *CA) Issue(dir, prefix string, subject pkix.Name, usage x509.ExtKeyUsage) *x509.Certificate {
	t := ca.t
	t.Helper()
	ca.serial++
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: subject,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	WritePEM(t, filepath.Join(dir, prefix+"-cert.pem"), "CERTIFICATE", der)
	WritePEM(t, filepath.Join(dir, prefix+"-key.pem"), "PRIVATE KEY", kder)
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// WriteCRL writes dir/ca-crl.pem revoking the given certificates.
func (ca *CA) WriteCRL(dir string, revoked ...*x509.Certificate) {
	t := ca.t
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	WritePEM(t, filepath.Join(dir, "ca-crl.pem"), "X509 CRL", der)
}

// WritePEM writes one PEM block to path.
func WritePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FFDHE2048 is RFC 7919's 2048-bit group in PKCS#3 PEM (as certtool
// --get-dh-params --sec-param medium prints it), for a credentials
// directory's dh-params.pem: without one the reference generates
// parameters when the credentials are created, which takes seconds.
const FFDHE2048 = `-----BEGIN DH PARAMETERS-----
MIIBDAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAgICAQA=
-----END DH PARAMETERS-----
`
