// Package gnutls owns blockd's binding to GnuTLS, used for TLS with
// pre-shared keys (tls-creds-psk), which Go's crypto/tls does not offer.
//
// libgnutls.so.30 is opened at run time with purego the first time a PSK
// server is created, so blockd builds without C headers or cgo and runs
// without GnuTLS until someone asks for TLS-PSK; a missing library is an
// error for that request only. Sessions run on the socket's descriptor in
// non-blocking mode and wait for readiness through Go's network poller, so
// no thread is parked in C and deadlines and Close work as on any net.Conn.
package gnutls

import (
	"fmt"
	"sync"

	"github.com/ebitengine/purego"
)

// Library is the GnuTLS soname blockd loads (Debian package libgnutls30).
const Library = "libgnutls.so.30"

// Values from <gnutls/gnutls.h> (stable ABI of soname 30).
const (
	flagServer   = 1
	flagClient   = 1 << 1
	flagNonblock = 1 << 3
	flagNoSignal = 1 << 6

	crdPSK    = 4
	pskKeyHex = 1

	secParamMedium = 35
	x509FmtPEM     = 1
	shutWR         = 1

	eAgain                = -28
	eInterrupted          = -52
	eWarningAlertReceived = -16
	ePrematureTermination = -110
)

// lib holds the bound functions. Signatures follow the C prototypes;
// ssize_t and size_t are int and uintptr (64-bit Linux).
type lib struct {
	version string

	strerror     func(code int32) string
	checkVersion func(req string) string

	pskAllocServer      func(cred *uintptr) int32
	pskFreeServer       func(cred uintptr)
	pskSetServerFile    func(cred uintptr, path string) int32
	pskSetServerKnownDH func(cred uintptr, secParam int32) int32
	pskSetServerDH      func(cred uintptr, dh uintptr)
	pskServerUsername   func(session uintptr) string
	pskAllocClient      func(cred *uintptr) int32
	pskFreeClient       func(cred uintptr)
	pskSetClient        func(cred uintptr, username string, key *datum, format int32) int32

	dhInit        func(dh *uintptr) int32
	dhDeinit      func(dh uintptr)
	dhImportPKCS3 func(dh uintptr, data *datum, format int32) int32

	initSession       func(session *uintptr, flags uint32) int32
	deinit            func(session uintptr)
	prioritySetDirect func(session uintptr, priority string, errPos *uintptr) int32
	credentialsSet    func(session uintptr, typ int32, cred uintptr) int32
	transportSetInt2  func(session uintptr, recvFD, sendFD int32)
	handshakeTimeout  func(session uintptr, ms uint32)
	handshake         func(session uintptr) int32
	recordDirection   func(session uintptr) int32
	recordRecv        func(session uintptr, buf []byte, n uintptr) int
	recordSend        func(session uintptr, buf []byte, n uintptr) int
	bye               func(session uintptr, how int32) int32
	protocolVersion   func(session uintptr) int32
	protocolName      func(version int32) string
}

// datum is gnutls_datum_t.
type datum struct {
	data *byte
	size uint32
}

var (
	loadOnce sync.Once
	loaded   *lib
	loadErr  error
)

// Load opens GnuTLS once; every later call returns the same result.
func Load() error {
	loadOnce.Do(func() { loaded, loadErr = open(Library) })
	return loadErr
}

// Version is the loaded GnuTLS version ("" before a successful Load).
func Version() string {
	if loaded == nil {
		return ""
	}
	return loaded.version
}

// open loads the library and binds every function blockd uses; a missing
// library or symbol is an error, never a panic.
func open(name string) (*lib, error) {
	h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("TLS-PSK needs GnuTLS, which could not be loaded (install Debian's libgnutls30): %v", err)
	}
	l := &lib{}
	syms := []struct {
		fn   any
		name string
	}{
		{&l.strerror, "gnutls_strerror"},
		{&l.checkVersion, "gnutls_check_version"},
		{&l.pskAllocServer, "gnutls_psk_allocate_server_credentials"},
		{&l.pskFreeServer, "gnutls_psk_free_server_credentials"},
		{&l.pskSetServerFile, "gnutls_psk_set_server_credentials_file"},
		{&l.pskSetServerKnownDH, "gnutls_psk_set_server_known_dh_params"},
		{&l.pskSetServerDH, "gnutls_psk_set_server_dh_params"},
		{&l.pskServerUsername, "gnutls_psk_server_get_username"},
		{&l.pskAllocClient, "gnutls_psk_allocate_client_credentials"},
		{&l.pskFreeClient, "gnutls_psk_free_client_credentials"},
		{&l.pskSetClient, "gnutls_psk_set_client_credentials"},
		{&l.dhInit, "gnutls_dh_params_init"},
		{&l.dhDeinit, "gnutls_dh_params_deinit"},
		{&l.dhImportPKCS3, "gnutls_dh_params_import_pkcs3"},
		{&l.initSession, "gnutls_init"},
		{&l.deinit, "gnutls_deinit"},
		{&l.prioritySetDirect, "gnutls_priority_set_direct"},
		{&l.credentialsSet, "gnutls_credentials_set"},
		{&l.transportSetInt2, "gnutls_transport_set_int2"},
		{&l.handshakeTimeout, "gnutls_handshake_set_timeout"},
		{&l.handshake, "gnutls_handshake"},
		{&l.recordDirection, "gnutls_record_get_direction"},
		{&l.recordRecv, "gnutls_record_recv"},
		{&l.recordSend, "gnutls_record_send"},
		{&l.bye, "gnutls_bye"},
		{&l.protocolVersion, "gnutls_protocol_get_version"},
		{&l.protocolName, "gnutls_protocol_get_name"},
	}
	for _, s := range syms {
		sym, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("TLS-PSK needs GnuTLS 3.6 or later: %s lacks %s", name, s.name)
		}
		purego.RegisterFunc(s.fn, sym)
	}
	// 3.6 brings TLS 1.3 and the PSK calls above; the check also makes
	// sure the library initialised itself.
	if l.checkVersion("3.6.0") == "" {
		return nil, fmt.Errorf("TLS-PSK needs GnuTLS 3.6 or later, %s is %s", name, l.checkVersion(""))
	}
	l.version = l.checkVersion("")
	return l, nil
}

// errText is gnutls_strerror.
func errText(code int) string {
	return loaded.strerror(int32(code))
}
