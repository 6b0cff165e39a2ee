package objects

// The object-add arguments as QEMU 7.2's qapi/qom.json declares them,
// limited to the object types blockd implements, so that introspection
// and decoding tell clients exactly what they can use.

// ObjectType names the user-creatable types blockd has.
type ObjectType string

// EnumValues lists the implemented types (a subset of QEMU's ObjectType).
func (ObjectType) EnumValues() []string {
	return []string{"authz-simple", "iothread", "secret", "throttle-group", "tls-creds-psk", "tls-creds-x509"}
}

// SecretFormat is QCryptoSecretFormat.
type SecretFormat string

func (SecretFormat) EnumValues() []string { return []string{"raw", "base64"} }

// TLSEndpoint is QCryptoTLSCredsEndpoint.
type TLSEndpoint string

func (TLSEndpoint) EnumValues() []string { return []string{"client", "server"} }

// ObjectOptions is object-add's argument and --object's value.
type ObjectOptions struct {
	QomType ObjectType `qapi:"qom-type,discriminator"`
	ID      string     `qapi:"id"`

	AuthzSimple   *AuthZSimpleProperties   `qapi:",variant=authz-simple"`
	Iothread      *IothreadProperties      `qapi:",variant=iothread"`
	Secret        *SecretProperties        `qapi:",variant=secret"`
	ThrottleGroup *ThrottleGroupProperties `qapi:",variant=throttle-group"`
	TLSCredsPSK   *TLSCredsPSKProperties   `qapi:",variant=tls-creds-psk"`
	TLSCredsX509  *TLSCredsX509Properties  `qapi:",variant=tls-creds-x509"`
}

// AuthZSimpleProperties: the one identity an authz-simple object allows.
type AuthZSimpleProperties struct {
	Identity string `qapi:"identity"`
}

// IothreadProperties are accepted and ignored: blockd runs I/O on
// goroutines, not on event-loop threads.
type IothreadProperties struct {
	AioMaxBatch   *int64 `qapi:"aio-max-batch,optional"`
	ThreadPoolMin *int64 `qapi:"thread-pool-min,optional"`
	ThreadPoolMax *int64 `qapi:"thread-pool-max,optional"`
	PollMaxNs     *int64 `qapi:"poll-max-ns,optional"`
	PollGrow      *int64 `qapi:"poll-grow,optional"`
	PollShrink    *int64 `qapi:"poll-shrink,optional"`
}

// SecretCommonProperties are shared by the secret types.
type SecretCommonProperties struct {
	Loaded *bool         `qapi:"loaded,optional,features=deprecated"`
	Format *SecretFormat `qapi:"format,optional"`
	KeyID  *string       `qapi:"keyid,optional"`
	IV     *string       `qapi:"iv,optional"`
}

// SecretProperties: a secret given inline or in a file.
type SecretProperties struct {
	SecretCommonProperties `qapi:",base"`
	Data                   *string `qapi:"data,optional"`
	File                   *string `qapi:"file,optional"`
}

// TLSCredsProperties are shared by the TLS credential types.
type TLSCredsProperties struct {
	VerifyPeer *bool        `qapi:"verify-peer,optional"`
	Dir        *string      `qapi:"dir,optional"`
	Endpoint   *TLSEndpoint `qapi:"endpoint,optional"`
	Priority   *string      `qapi:"priority,optional"`
}

// TLSCredsX509Properties: certificates in a directory.
type TLSCredsX509Properties struct {
	TLSCredsProperties `qapi:",base"`
	Loaded             *bool   `qapi:"loaded,optional,features=deprecated"`
	SanityCheck        *bool   `qapi:"sanity-check,optional"`
	PasswordID         *string `qapi:"passwordid,optional"`
}

// TLSCredsPSKProperties: pre-shared keys in dir/keys.psk.
type TLSCredsPSKProperties struct {
	TLSCredsProperties `qapi:",base"`
	Loaded             *bool   `qapi:"loaded,optional,features=deprecated"`
	Username           *string `qapi:"username,optional"`
}

// ObjectDelArgs is object-del's argument.
type ObjectDelArgs struct {
	ID string `qapi:"id"`
}
