package luks

import (
	"crypto/rand"
	"fmt"
	"hash"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/pbkdf2"

	"blockd/blockio"
)

// CreateOptions are blockdev-create luks's crypto options; empty fields
// take QEMU's defaults (aes-256, xts, plain64, sha256, 2000 ms).
type CreateOptions struct {
	CipherAlg, CipherMode, IvgenAlg, IvgenHashAlg, HashAlg string
	IterTime                                               int64 // milliseconds
}

// Minimum PBKDF2 iterations (QEMU's QCRYPTO_BLOCK_LUKS_MIN_*_ITERS).
const minIters = 1000

// layout returns the header's cipher name and mode strings and the key
// size of the options, or QEMU-style errors for what blockd lacks.
func (o *CreateOptions) layout() (name, mode string, keyBytes int, err error) {
	keyBytes = map[string]int{"aes-128": 16, "aes-192": 24, "aes-256": 32}[o.CipherAlg]
	if keyBytes == 0 {
		return "", "", 0, fmt.Errorf("Cipher algorithm '%s' is not supported by blockd's luks driver", o.CipherAlg)
	}
	switch o.CipherMode {
	case "xts":
		keyBytes *= 2
		if o.IvgenAlg == "essiv" {
			return "", "", 0, fmt.Errorf("ESSIV is not supported with XTS mode by blockd's luks driver")
		}
	case "cbc":
	default:
		return "", "", 0, fmt.Errorf("Cipher mode '%s' is not supported by blockd's luks driver", o.CipherMode)
	}
	mode = o.CipherMode + "-" + o.IvgenAlg
	if o.IvgenAlg == "essiv" {
		mode += ":" + o.IvgenHashAlg
	}
	return "aes", mode, keyBytes, nil
}

func (o *CreateOptions) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.CipherAlg, "aes-256")
	def(&o.CipherMode, "xts")
	def(&o.IvgenAlg, "plain64")
	def(&o.HashAlg, "sha256")
	def(&o.IvgenHashAlg, "sha256")
	if o.IterTime == 0 {
		o.IterTime = 2000
	}
}

// itersPerSecond measures PBKDF2 with hf the way QEMU's
// qcrypto_pbkdf2_count_iters does: time a batch, grow it until it lasts
// long enough to be measured.
func itersPerSecond(hf func() hash.Hash, keyBytes int) int64 {
	pass, salt := make([]byte, keyBytes), make([]byte, saltLen)
	for n := int64(1 << 12); ; n *= 2 {
		t0 := time.Now()
		pbkdf2.Key(pass, salt, int(n), digestLen, hf)
		if d := time.Since(t0); d >= 100*time.Millisecond || n >= 1<<26 {
			return int64(float64(n) / d.Seconds())
		}
	}
}

// Create writes a LUKS1 volume of size bytes of payload on file, with
// one active key slot for passphrase, in QEMU's layout: slot material
// from 4 KiB on, each slot 4 KiB aligned, the payload after the eighth.
// The file is resized to hold the payload; the payload is not written.
func Create(file blockio.Device, size int64, passphrase []byte, o CreateOptions) error {
	o.defaults()
	name, mode, keyBytes, err := o.layout()
	if err != nil {
		return err
	}
	hf, err := hashFor(o.HashAlg)
	if err != nil {
		return err
	}
	if _, err := hashFor(o.IvgenHashAlg); o.IvgenAlg == "essiv" && err != nil {
		return err
	}
	if o.IterTime < 0 {
		return fmt.Errorf("iter-time must be positive")
	}
	h := &header{Version: 1, CipherName: name, CipherMode: mode, HashSpec: o.HashAlg,
		KeyBytes: uint32(keyBytes), UUID: uuid.New().String()}
	mk := make([]byte, keyBytes)
	rand.Read(mk)
	rand.Read(h.MKDigestSalt[:])

	rate := itersPerSecond(hf, keyBytes)
	slotIters := max(rate*o.IterTime/1000, minIters)
	mkIters := max(rate*o.IterTime/1000/8, minIters)
	if slotIters > 1<<32-1 || mkIters > 1<<32-1 {
		return fmt.Errorf("PBKDF iterations %d too large", slotIters)
	}
	h.MKDigestIter = uint32(mkIters)
	copy(h.MKDigest[:], pbkdf2.Key(mk, h.MKDigestSalt[:], int(mkIters), digestLen, hf))

	splitSectors := (int64(keyBytes)*stripes + sectorSize - 1) / sectorSize
	slotSectors := (splitSectors*sectorSize + keySlotAlign - 1) / keySlotAlign * keySlotAlign / sectorSize
	for i := range h.Slots {
		h.Slots[i] = keySlot{Active: slotInactive, Stripes: stripes,
			KeyOffset: uint32(keySlotOffset/sectorSize + int64(i)*slotSectors)}
	}
	h.PayloadOffset = uint32(keySlotOffset/sectorSize + numSlots*slotSectors)

	s := &h.Slots[0]
	s.Active, s.Iterations = slotActive, uint32(slotIters)
	rand.Read(s.Salt[:])
	slotKey := pbkdf2.Key(passphrase, s.Salt[:], int(slotIters), keyBytes, hf)
	c, err := newSectorCipher(name, mode, slotKey)
	if err != nil {
		return err
	}
	random := make([]byte, keyBytes*(stripes-1))
	rand.Read(random)
	material := make([]byte, splitSectors*sectorSize)
	copy(material, afSplit(hf, mk, stripes, random))
	c.encrypt(material, material, 0)

	payload := int64(h.PayloadOffset) * sectorSize
	if err := file.Truncate(payload + size); err != nil {
		return err
	}
	if err := file.WriteAt(material, int64(s.KeyOffset)*sectorSize, 0); err != nil {
		return err
	}
	if err := file.WriteAt(h.encode(), 0, 0); err != nil {
		return err
	}
	return file.Flush()
}
