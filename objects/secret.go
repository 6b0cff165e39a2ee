package objects

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"blockd/internal/errtext"
	"blockd/internal/qemu"
	"blockd/schema"
)

// secretInst is a secret object: its properties as set, and the value
// loaded from them at creation. Later qom-set changes the properties
// only, as in the reference, whose setters do not reload.
type secretInst struct {
	p     SecretProperties
	value []byte
}

func secretOf(inst any) *secretInst { return inst.(*secretInst) }

func init() {
	RegisterClass(&Class{Name: "secret_common", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"},
		Props: []Property{
			loadedProp,
			{Name: "format", Type: "QCryptoSecretFormat",
				Get: func(inst any) any {
					if f := secretOf(inst).p.Format; f != nil {
						return string(*f)
					}
					return "raw"
				},
				Set: func(inst any, n string, v json.RawMessage) error {
					f, err := visitEnum(n, v, SecretFormat("").EnumValues())
					if err == nil {
						sf := SecretFormat(f)
						secretOf(inst).p.Format = &sf
					}
					return err
				}},
			strProp("keyid", func(inst any) **string { return &secretOf(inst).p.KeyID }),
			strProp("iv", func(inst any) **string { return &secretOf(inst).p.IV }),
		}})
	RegisterClass(&Class{Name: "secret", Parent: "secret_common",
		Props: []Property{
			strProp("data", func(inst any) **string { return &secretOf(inst).p.Data }),
			strProp("file", func(inst any) **string { return &secretOf(inst).p.File }),
		},
		Init: func(o *ObjectOptions) (any, error) {
			s := &secretInst{}
			if o.Secret != nil {
				s.p = *o.Secret
			}
			if s.p.Loaded != nil {
				return nil, schema.Errorf("Property 'secret.loaded' is not writable")
			}
			return s, nil
		},
		Complete: func(r *Registry, inst any) (err error) {
			s := secretOf(inst)
			s.value, err = r.loadSecret(&s.p)
			return err
		},
	})
}

// loadSecret reads a secret's data (inline or from its file), decrypts
// it with the master key keyid when given, and decodes base64, in the
// reference's order and with its texts.
func (r *Registry) loadSecret(p *SecretProperties) ([]byte, error) {
	if p.Data != nil && p.File != nil {
		return nil, errors.New("'file' and 'data' are mutually exclusive")
	}
	var input []byte
	switch {
	case p.Data != nil:
		input = []byte(*p.Data)
	case p.File != nil:
		b, err := os.ReadFile(*p.File)
		if err != nil {
			// The reference reports GLib's message, quotes included.
			return nil, fmt.Errorf("Unable to read %s: Failed to open file \u201c%s\u201d: %s",
				*p.File, *p.File, errtext.Strerror(errtext.Errno(err)))
		}
		input = b
	default:
		return nil, errors.New("Either 'file' or 'data' must be provided")
	}
	return r.decodeSecret(&p.SecretCommonProperties, input)
}

// decodeSecret is what every secret type does with its raw input
// (qcrypto_secret_common_complete): decrypt it with the master key
// keyid when given, and decode base64.
func (r *Registry) decodeSecret(p *SecretCommonProperties, input []byte) ([]byte, error) {
	base64Format := p.Format != nil && *p.Format == "base64"
	if p.KeyID != nil {
		return r.decryptSecret(*p.KeyID, p.IV, input, base64Format)
	}
	if base64Format {
		return qemu.Base64Decode(string(input))
	}
	return input, nil
}

// decryptSecret is AES-256-CBC with the 32-byte master key secret keyid
// and a base64 IV; the padding is PKCS#7, checked as the reference does.
func (r *Registry) decryptSecret(keyid string, iv64 *string, input []byte, base64Format bool) ([]byte, error) {
	key, err := r.Secret(keyid)
	if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, errors.New("Key should be 32 bytes in length")
	}
	if iv64 == nil {
		return nil, errors.New("IV is required to decrypt secret")
	}
	iv, err := qemu.Base64Decode(*iv64)
	if err != nil {
		return nil, err
	}
	if len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("IV should be 16 bytes in length not %d", len(iv))
	}
	ct := input
	if base64Format {
		if ct, err = qemu.Base64Decode(string(input)); err != nil {
			return nil, err
		}
	}
	if len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("Length %d must be a multiple of block size %d", len(ct), aes.BlockSize)
	}
	if len(ct) == 0 {
		return []byte{}, nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad > 16 || pad > len(pt) {
		return nil, fmt.Errorf("Incorrect number of padding bytes (%d) found on decrypted data", pad)
	}
	return pt[:len(pt)-pad], nil
}
