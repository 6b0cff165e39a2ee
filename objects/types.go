package objects

import "blockd/schema"

// The object-add arguments as QEMU 7.2's qapi/qom.json declares them,
// limited to the object types blockd implements, so that introspection
// and decoding tell clients exactly what they can use.

// ObjectType names the user-creatable types blockd has.
type ObjectType string

// EnumValues lists the implemented types (a subset of QEMU's
// ObjectType): the registered classes that object-add can create.
func (ObjectType) EnumValues() []string { return userCreatable() }

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

	AuthzList     *AuthZListProperties     `qapi:",variant=authz-list"`
	AuthzSimple   *AuthZSimpleProperties   `qapi:",variant=authz-simple"`
	Iothread      *IothreadProperties      `qapi:",variant=iothread"`
	MainLoop      *EventLoopBaseProperties `qapi:",variant=main-loop"`
	Secret        *SecretProperties        `qapi:",variant=secret"`
	SecretKeyring *SecretKeyringProperties `qapi:",variant=secret_keyring"`
	ThrottleGroup *ThrottleGroupProperties `qapi:",variant=throttle-group"`
	TLSCredsAnon  *TLSCredsAnonProperties  `qapi:",variant=tls-creds-anon"`
	TLSCredsPSK   *TLSCredsPSKProperties   `qapi:",variant=tls-creds-psk"`
	TLSCredsX509  *TLSCredsX509Properties  `qapi:",variant=tls-creds-x509"`

	AuthzListFile   *AuthZListFileProperties   `qapi:",variant=authz-listfile"`
	PrManagerHelper *PrManagerHelperProperties `qapi:",variant=pr-manager-helper"`
	ThreadContext   *ThreadContextProperties   `qapi:",variant=thread-context"`
	TLSCipherSuites *TLSCredsProperties        `qapi:",variant=tls-cipher-suites"`
}

// AuthZListPolicy is QAuthZListPolicy.
type AuthZListPolicy string

func (AuthZListPolicy) EnumValues() []string { return []string{"deny", "allow"} }

// QAPIName keeps the reference's name, which qom-list shows.
func (AuthZListPolicy) QAPIName() string { return "QAuthZListPolicy" }

// AuthZListFormat is QAuthZListFormat.
type AuthZListFormat string

func (AuthZListFormat) EnumValues() []string { return []string{"exact", "glob"} }

// AuthZListRule is QAuthZListRule: an identity (or glob) and what to do
// with a peer that matches it.
type AuthZListRule struct {
	Match  string           `qapi:"match"`
	Policy AuthZListPolicy  `qapi:"policy"`
	Format *AuthZListFormat `qapi:"format,optional"`
}

// AuthZListProperties: rules tried in order, then the default policy.
type AuthZListProperties struct {
	Policy *AuthZListPolicy `qapi:"policy,optional"`
	Rules  []AuthZListRule  `qapi:"rules,optional"`
}

// AuthZSimpleProperties: the one identity an authz-simple object allows.
type AuthZSimpleProperties struct {
	Identity string `qapi:"identity"`
}

// AuthZListFileProperties: authz-list's policy and rules, read from a
// JSON file and, with refresh, read again whenever it changes.
type AuthZListFileProperties struct {
	Filename string `qapi:"filename"`
	Refresh  *bool  `qapi:"refresh,optional"`
}

// PrManagerHelperProperties: the socket of a qemu-pr-helper.
type PrManagerHelperProperties struct {
	Path string `qapi:"path"`
}

// ThreadContextProperties: the CPUs (or the NUMA nodes' CPUs) a
// thread-context's thread may run on.
type ThreadContextProperties struct {
	CPUAffinity  *[]uint16 `qapi:"cpu-affinity,optional"`
	NodeAffinity *[]uint16 `qapi:"node-affinity,optional"`
}

// EventLoopBaseProperties are the event loop's tunables (main-loop's
// own, iothread's base). blockd checks and keeps them (iothread.go).
type EventLoopBaseProperties struct {
	AioMaxBatch   *int64 `qapi:"aio-max-batch,optional"`
	ThreadPoolMin *int64 `qapi:"thread-pool-min,optional"`
	ThreadPoolMax *int64 `qapi:"thread-pool-max,optional"`
}

// IothreadProperties add the polling parameters.
type IothreadProperties struct {
	EventLoopBaseProperties `qapi:",base"`
	PollMaxNs               *int64 `qapi:"poll-max-ns,optional"`
	PollGrow                *int64 `qapi:"poll-grow,optional"`
	PollShrink              *int64 `qapi:"poll-shrink,optional"`
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

// SecretKeyringProperties: a secret held by the kernel's key service.
type SecretKeyringProperties struct {
	SecretCommonProperties `qapi:",base"`
	Serial                 int32 `qapi:"serial"`
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

// TLSCredsAnonProperties: anonymous credentials (no certificates).
type TLSCredsAnonProperties struct {
	TLSCredsProperties `qapi:",base"`
	Loaded             *bool `qapi:"loaded,optional,features=deprecated"`
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

// ObjectPropertyInfo is one property in qom-list and qom-list-properties.
type ObjectPropertyInfo struct {
	Name         string     `qapi:"name"`
	Type         string     `qapi:"type"`
	Description  *string    `qapi:"description,optional"`
	DefaultValue schema.Any `qapi:"default-value,optional"`
}

// ObjectTypeInfo is one type in qom-list-types.
type ObjectTypeInfo struct {
	Name     string  `qapi:"name"`
	Abstract *bool   `qapi:"abstract,optional"`
	Parent   *string `qapi:"parent,optional"`
}

// QomListArgs is qom-list's argument.
type QomListArgs struct {
	Path string `qapi:"path"`
}

// QomGetArgs is qom-get's argument.
type QomGetArgs struct {
	Path     string `qapi:"path"`
	Property string `qapi:"property"`
}

// QomSetArgs is qom-set's argument.
type QomSetArgs struct {
	Path     string     `qapi:"path"`
	Property string     `qapi:"property"`
	Value    schema.Any `qapi:"value"`
}

// QomListTypesArgs is qom-list-types' argument.
type QomListTypesArgs struct {
	Implements *string `qapi:"implements,optional"`
	Abstract   *bool   `qapi:"abstract,optional"`
}

// QomListPropertiesArgs is qom-list-properties' argument.
type QomListPropertiesArgs struct {
	Typename string `qapi:"typename"`
}
