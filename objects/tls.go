package objects

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"blockd/internal/errtext"
	"blockd/internal/gnutls"
)

// tlsCreds are loaded TLS credentials.
type tlsCreds struct {
	endpoint   TLSEndpoint
	verifyPeer bool
	psk        bool
	anon       bool
	// unsupported names a TLS credentials type no session can be made
	// with (tls-cipher-suites): QEMU finds that out at the handshake.
	unsupported string
	priority    string // the reference's GnuTLS priority; "" for the default

	// psk server side: files GnuTLS reads when a server starts
	pskFile string
	dhFile  string // "" without dh-params.pem
	// psk client side: the identity and its key (hex), read at object-add
	pskUser, pskKey string

	// x509 server side
	cert  tls.Certificate
	roots *x509.CertPool
	crl   *x509.RevocationList // nil without ca-crl.pem
}

// The file names the reference looks for in a credentials directory.
const (
	fileCACert     = "ca-cert.pem"
	fileCACRL      = "ca-crl.pem"
	fileServerCert = "server-cert.pem"
	fileServerKey  = "server-key.pem"
	fileClientCert = "client-cert.pem"
	fileClientKey  = "client-key.pem"
	fileDHParams   = "dh-params.pem"
	filePSK        = "keys.psk"
)

// credPath is qcrypto_tls_creds_get_path: dir/name, which must be
// readable when required; an optional file that is missing yields "".
func credPath(dir *string, name string, required bool) (string, error) {
	if dir == nil {
		return "", errors.New("Missing 'dir' property value")
	}
	p := *dir + "/" + name
	if err := syscall.Access(p, 4 /* R_OK */); err != nil {
		if required {
			return "", fmt.Errorf("Unable to access credentials %s: %s", p, errtext.Strerror(errtext.Errno(err)))
		}
		return "", nil
	}
	return p, nil
}

func common(p *TLSCredsProperties) (TLSEndpoint, bool) {
	ep := TLSEndpoint("client") // the reference's default
	if p.Endpoint != nil {
		ep = *p.Endpoint
	}
	verify := true
	if p.VerifyPeer != nil {
		verify = *p.VerifyPeer
	}
	return ep, verify
}

// loadX509 loads tls-creds-x509 as the reference does at creation: the
// files the endpoint needs, a sanity check of the certificates against
// the CA unless sanity-check=off, then the key pair.
func loadX509(p *TLSCredsX509Properties) (*tlsCreds, error) {
	ep, verify := common(&p.TLSCredsProperties)
	c := &tlsCreds{endpoint: ep, verifyPeer: verify}
	dir := p.Dir
	caPath, err := credPath(dir, fileCACert, true)
	if err != nil {
		return nil, err
	}
	crlPath, err := credPath(dir, fileCACRL, false)
	if err != nil {
		return nil, err
	}
	var certPath, keyPath string
	if ep == "server" {
		if certPath, err = credPath(dir, fileServerCert, true); err != nil {
			return nil, err
		}
		if keyPath, err = credPath(dir, fileServerKey, true); err != nil {
			return nil, err
		}
		if _, err = credPath(dir, fileDHParams, false); err != nil {
			return nil, err
		}
	} else {
		if certPath, err = credPath(dir, fileClientCert, false); err != nil {
			return nil, err
		}
		if keyPath, err = credPath(dir, fileClientKey, false); err != nil {
			return nil, err
		}
	}

	cas, err := loadCertList(caPath)
	if err != nil || len(cas) == 0 {
		return nil, fmt.Errorf("Unable to import CA certificate list %s", caPath)
	}
	c.roots = x509.NewCertPool()
	for _, ca := range cas {
		c.roots.AddCert(ca)
	}
	if p.SanityCheck == nil || *p.SanityCheck {
		if err := sanityCheck(ep == "server", cas, caPath, certPath); err != nil {
			return nil, err
		}
	}
	if crlPath != "" {
		b, err := os.ReadFile(crlPath)
		if err == nil {
			if blk, _ := pem.Decode(b); blk != nil {
				b = blk.Bytes
			}
			c.crl, err = x509.ParseRevocationList(b)
		}
		if err != nil {
			return nil, fmt.Errorf("Cannot load CRL %s: %v", crlPath, err)
		}
	}
	if certPath != "" && keyPath != "" {
		c.cert, err = tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, fmt.Errorf("Cannot load certificate '%s' & key '%s': The requested data were not available.", certPath, keyPath)
		}
	}
	return c, nil
}

// loadCertList parses every certificate of a PEM file.
func loadCertList(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
}

// sanityCheck is the reference's qcrypto_tls_creds_x509_sanity_check:
// validity times and basic constraints of the CA certificates and of our
// own certificate, then our certificate's chain up to the CA.
func sanityCheck(server bool, cas []*x509.Certificate, caPath, certPath string) error {
	now := time.Now()
	check := func(c *x509.Certificate, path string, isCA bool) error {
		if now.After(c.NotAfter) {
			return fmt.Errorf("The certificate %s has expired", path)
		}
		if now.Before(c.NotBefore) {
			return fmt.Errorf("The certificate %s is not yet active", path)
		}
		switch {
		case c.BasicConstraintsValid && c.IsCA && !isCA:
			return fmt.Errorf("The certificate %s basic constraints show it as a CA", path)
		case c.BasicConstraintsValid && !c.IsCA && isCA:
			return fmt.Errorf("The certificate %s basic constraints do not show it as a CA", path)
		case !c.BasicConstraintsValid && isCA && c.Version >= 3:
			return fmt.Errorf("The certificate %s is missing basic constraints for a CA", path)
		}
		return nil
	}
	for _, ca := range cas {
		if err := check(ca, caPath, true); err != nil {
			return err
		}
	}
	if certPath == "" {
		return nil
	}
	certs, err := loadCertList(certPath)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("Unable to import certificate %s", certPath)
	}
	own := certs[0]
	if err := check(own, certPath, false); err != nil {
		return err
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	if _, err := own.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("Our own certificate %s failed validation against %s: %s", certPath, caPath, verifyText(err))
	}
	return nil
}

// verifyText words a chain verification failure as GnuTLS does where
// the cases match.
func verifyText(err error) string {
	var ua x509.UnknownAuthorityError
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return "The certificate hasn't got a known issuer"
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "The certificate chain uses expired certificate"
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return "The certificate chain does not match the intended purpose"
	}
	return err.Error()
}

// loadAnon loads tls-creds-anon as the reference does: a server's
// directory may hold dh-params.pem; nothing else is read.
func loadAnon(p *TLSCredsAnonProperties) (*tlsCreds, error) {
	ep, verify := common(&p.TLSCredsProperties)
	c := &tlsCreds{endpoint: ep, verifyPeer: verify, anon: true}
	if ep == "server" && p.Dir != nil {
		if _, err := credPath(p.Dir, fileDHParams, false); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// loadPSK loads tls-creds-psk as the reference does: a server needs a
// readable keys.psk (parsed at handshake time) and no username; a client
// looks its username's key up at once.
func loadPSK(p *TLSCredsPSKProperties) (*tlsCreds, error) {
	ep, verify := common(&p.TLSCredsProperties)
	c := &tlsCreds{endpoint: ep, verifyPeer: verify, psk: true}
	if p.Priority != nil {
		c.priority = *p.Priority
	}
	if ep == "server" {
		if p.Username != nil {
			return nil, errors.New("username should not be set when endpoint=server")
		}
		var err error
		if c.dhFile, err = credPath(p.Dir, fileDHParams, false); err != nil {
			return nil, err
		}
		if c.pskFile, err = credPath(p.Dir, filePSK, true); err != nil {
			return nil, err
		}
		// The reference loads DH parameters with the credentials, so a
		// bad file fails object-add; that needs GnuTLS now, which is
		// otherwise loaded when a server starts.
		if c.dhFile != "" {
			if err := gnutls.CheckDHParams(c.dhFile); err != nil {
				return nil, err
			}
		}
		return c, nil
	}
	path, err := credPath(p.Dir, filePSK, true)
	if err != nil {
		return nil, err
	}
	user := "qemu"
	if p.Username != nil {
		user = *p.Username
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("Cannot read PSK file %s: %s", path, errtext.Strerror(errtext.Errno(err)))
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, key, ok := strings.Cut(line, ":"); ok && name == user {
			if _, err := hex.DecodeString(key); err != nil {
				return nil, errors.New("Cannot set PSK client credentials: Error in parsing.")
			}
			c.pskUser, c.pskKey = user, key
			return c, nil
		}
	}
	return nil, fmt.Errorf("Username %s not found in PSK file %s", user, path)
}

// ErrPSKUnsupported: TLS-PSK is served through GnuTLS (TLSServer); the
// crypto/tls configurations below cannot carry it.
var ErrPSKUnsupported = errors.New("TLS-PSK credentials have no crypto/tls configuration (Go's TLS stack has no PSK key exchange)")

// ErrAnonUnsupported is why anonymous credentials cannot be used.
var ErrAnonUnsupported = errors.New("anonymous TLS credentials are not supported by blockd (its TLS stack has no anonymous key exchange); use tls-creds-x509")

// errUnsupported is qcrypto_tls_session_new's refusal of credentials
// of a type it makes no sessions with.
func (c *tlsCreds) errUnsupported() error {
	return fmt.Errorf("Unsupported TLS credentials type %s", c.unsupported)
}

// clientConfig builds the crypto/tls client configuration.
func (c *tlsCreds) clientConfig(id string) (*tls.Config, error) {
	if c.unsupported != "" {
		return nil, c.errUnsupported()
	}
	if c.psk {
		return nil, fmt.Errorf("'%s': %w", id, ErrPSKUnsupported)
	}
	if c.anon {
		return nil, fmt.Errorf("'%s': %w", id, ErrAnonUnsupported)
	}
	cfg := &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
	if c.cert.Certificate != nil {
		cfg.Certificates = []tls.Certificate{c.cert}
	}
	return cfg, nil
}

// serverConfig builds the crypto/tls server configuration: our
// certificate, and with verify-peer a client certificate that must
// chain to the CA (and not be revoked by ca-crl.pem).
func (c *tlsCreds) serverConfig(id string) (*tls.Config, error) {
	if c.unsupported != "" {
		return nil, c.errUnsupported()
	}
	if c.psk {
		return nil, fmt.Errorf("'%s': %w", id, ErrPSKUnsupported)
	}
	if c.anon {
		return nil, fmt.Errorf("'%s': %w", id, ErrAnonUnsupported)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{c.cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.NoClientCert,
	}
	if c.verifyPeer {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = c.roots
		if crl := c.crl; crl != nil {
			cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
				for _, chain := range chains {
					for _, cert := range chain {
						for _, rev := range crl.RevokedCertificateEntries {
							if rev.SerialNumber.Cmp(cert.SerialNumber) == 0 &&
								bytes.Equal(cert.RawIssuer, crl.RawIssuer) {
								return errors.New("The certificate has been revoked")
							}
						}
					}
				}
				return nil
			}
		}
	}
	return cfg, nil
}
