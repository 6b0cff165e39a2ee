package objects

import (
	"encoding/json"

	"blockd/schema"
)

// tlsInst is a TLS credentials object: its properties as set (qom-set
// changes them without reloading, as the reference's setters do) and the
// credentials loaded at creation.
type tlsInst struct {
	common *TLSCredsProperties
	x509   *TLSCredsX509Properties // one of x509, psk and anon is set
	psk    *TLSCredsPSKProperties
	anon   *TLSCredsAnonProperties
	creds  *tlsCreds
}

func tlsOf(inst any) *tlsInst { return inst.(*tlsInst) }

func boolProp(name string, def bool, field func(inst any) **bool) Property {
	return Property{Name: name, Type: "bool",
		Get: func(inst any) any {
			if b := *field(inst); b != nil {
				return *b
			}
			return def
		},
		Set: func(inst any, n string, v json.RawMessage) error {
			b, err := visitBool(n, v)
			if err == nil {
				*field(inst) = &b
			}
			return err
		}}
}

// loadedProp is the read-only "loaded" of the credential and secret
// types: an object that exists has been loaded.
var loadedProp = Property{Name: "loaded", Type: "bool", Get: func(any) any { return true }}

func init() {
	RegisterClass(&Class{Name: "tls-creds", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"},
		Props: []Property{
			boolProp("verify-peer", true, func(inst any) **bool { return &tlsOf(inst).common.VerifyPeer }),
			strProp("dir", func(inst any) **string { return &tlsOf(inst).common.Dir }),
			{Name: "endpoint", Type: "QCryptoTLSCredsEndpoint",
				Get: func(inst any) any {
					if e := tlsOf(inst).common.Endpoint; e != nil {
						return string(*e)
					}
					return "client"
				},
				Set: func(inst any, n string, v json.RawMessage) error {
					s, err := visitEnum(n, v, TLSEndpoint("").EnumValues())
					if err == nil {
						e := TLSEndpoint(s)
						tlsOf(inst).common.Endpoint = &e
					}
					return err
				}},
			strProp("priority", func(inst any) **string { return &tlsOf(inst).common.Priority }),
		}})
	RegisterClass(&Class{Name: "tls-creds-x509", Parent: "tls-creds",
		Props: []Property{
			loadedProp,
			boolProp("sanity-check", true, func(inst any) **bool { return &tlsOf(inst).x509.SanityCheck }),
			strProp("passwordid", func(inst any) **string { return &tlsOf(inst).x509.PasswordID }),
		},
		Init: func(o *ObjectOptions) (any, error) {
			p := &TLSCredsX509Properties{}
			if o.TLSCredsX509 != nil {
				*p = *o.TLSCredsX509
			}
			if p.Loaded != nil {
				return nil, schema.Errorf("Property 'tls-creds-x509.loaded' is not writable")
			}
			return &tlsInst{common: &p.TLSCredsProperties, x509: p}, nil
		},
		Complete: func(_ *Registry, inst any) (err error) {
			t := tlsOf(inst)
			t.creds, err = loadX509(t.x509)
			return err
		},
	})
	RegisterClass(&Class{Name: "tls-creds-psk", Parent: "tls-creds",
		Props: []Property{
			loadedProp,
			strProp("username", func(inst any) **string { return &tlsOf(inst).psk.Username }),
		},
		Init: func(o *ObjectOptions) (any, error) {
			p := &TLSCredsPSKProperties{}
			if o.TLSCredsPSK != nil {
				*p = *o.TLSCredsPSK
			}
			if p.Loaded != nil {
				return nil, schema.Errorf("Property 'tls-creds-psk.loaded' is not writable")
			}
			return &tlsInst{common: &p.TLSCredsProperties, psk: p}, nil
		},
		Complete: func(_ *Registry, inst any) (err error) {
			t := tlsOf(inst)
			t.creds, err = loadPSK(t.psk)
			return err
		},
	})
	// tls-cipher-suites only holds a priority string, which QEMU turns
	// into a cipher list for guest firmware (fw_cfg); nothing in a
	// storage daemon reads it. Like QEMU, blockd accepts it where TLS
	// credentials go and fails the handshake.
	RegisterClass(&Class{Name: "fw_cfg-data-generator", Parent: "interface", Abstract: true})
	RegisterClass(&Class{Name: "tls-cipher-suites", Parent: "tls-creds",
		Interfaces: []string{"fw_cfg-data-generator"},
		Init: func(o *ObjectOptions) (any, error) {
			p := &TLSCredsProperties{}
			if o.TLSCipherSuites != nil {
				*p = *o.TLSCipherSuites
			}
			return &tlsInst{common: p}, nil
		},
		Complete: func(_ *Registry, inst any) error {
			t := tlsOf(inst)
			if t.common.Priority == nil {
				return schema.Errorf("'priority' property is not set")
			}
			ep, verify := common(t.common)
			t.creds = &tlsCreds{endpoint: ep, verifyPeer: verify, priority: *t.common.Priority,
				unsupported: "tls-cipher-suites"}
			return nil
		},
	})
	RegisterClass(&Class{Name: "tls-creds-anon", Parent: "tls-creds",
		Props: []Property{loadedProp},
		Init: func(o *ObjectOptions) (any, error) {
			p := &TLSCredsAnonProperties{}
			if o.TLSCredsAnon != nil {
				*p = *o.TLSCredsAnon
			}
			if p.Loaded != nil {
				return nil, schema.Errorf("Property 'tls-creds-anon.loaded' is not writable")
			}
			return &tlsInst{common: &p.TLSCredsProperties, anon: p}, nil
		},
		Complete: func(_ *Registry, inst any) (err error) {
			t := tlsOf(inst)
			t.creds, err = loadAnon(t.anon)
			return err
		},
	})
}
