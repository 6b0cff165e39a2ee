package objects

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"blockd/internal/errtext"
	"blockd/schema"
)

// keyringInst is a secret_keyring object: a secret read from the Linux
// kernel key retention service by serial number, then decrypted and
// decoded as any secret.
type keyringInst struct {
	p     SecretKeyringProperties
	value []byte
}

func init() {
	RegisterClass(&Class{Name: "secret_keyring", Parent: "secret_common",
		Props: []Property{{Name: "serial", Type: "int32_t",
			Get: func(inst any) any { return int64(inst.(*keyringInst).p.Serial) },
			Set: func(inst any, n string, v json.RawMessage) error {
				i, err := visitInt(n, v)
				if err == nil {
					inst.(*keyringInst).p.Serial = int32(i)
				}
				return err
			}}},
		Init: func(o *ObjectOptions) (any, error) {
			k := &keyringInst{}
			if o.SecretKeyring != nil {
				k.p = *o.SecretKeyring
			}
			if k.p.Loaded != nil {
				return nil, schema.Errorf("Property 'secret_keyring.loaded' is not writable")
			}
			return k, nil
		},
		Complete: func(r *Registry, inst any) (err error) {
			k := inst.(*keyringInst)
			raw, err := readKey(k.p.Serial)
			if err != nil {
				return err
			}
			k.value, err = r.decodeSecret(&k.p.SecretCommonProperties, raw)
			return err
		},
	})
}

// readKey is keyctl(KEYCTL_READ) of the key serial, sized by a first
// call as the reference does.
func readKey(serial int32) ([]byte, error) {
	fail := func(err error) error {
		var e unix.Errno
		if !errors.As(err, &e) {
			return err
		}
		return fmt.Errorf("Unable to read serial key %08x: %s", uint32(serial), errtext.Strerror(e))
	}
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, int(serial), nil, 0)
	if err != nil {
		return nil, fail(err)
	}
	buf := make([]byte, n)
	n, err = unix.KeyctlBuffer(unix.KEYCTL_READ, int(serial), buf, 0)
	if err != nil {
		return nil, fail(err)
	}
	return buf[:min(n, len(buf))], nil
}
