// Package luks owns the luks format driver: LUKS1 images as QEMU reads
// and writes them (its file child holds a LUKS1 header, eight key slots
// and the encrypted payload), opened with the passphrase of a secret
// object (key-secret), and their creation (blockdev-create luks).
//
// header.go is the on-disk header; crypt.go the sector ciphers, IV
// generators, PBKDF2 and the anti-forensic splitter; luks.go unlocking
// and the data path; create.go new images with QEMU's layout.
// Ciphers: AES-128/192/256 in XTS (plain, plain64) and CBC (plain,
// plain64, essiv) modes, hashes sha1, sha224, sha256, sha384, sha512 —
// the configurations QEMU creates and cryptsetup uses by default.
package luks

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

const (
	sectorSize = 512
	headerSize = 592
	numSlots   = 8
	saltLen    = 32
	digestLen  = 20
	// stripes is the anti-forensic split of every key slot.
	stripes = 4000
	// slotActive and slotInactive are the key slot states on disk.
	slotActive   = 0x00AC71F3
	slotInactive = 0x0000DEAD
	// keySlotOffset is where QEMU puts the first key slot's material
	// (bytes), and keySlotAlign how it aligns each slot's size.
	keySlotOffset = 4096
	keySlotAlign  = 4096
)

var magic = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}

// keySlot is one of the eight key slots.
type keySlot struct {
	Active     uint32
	Iterations uint32
	Salt       [saltLen]byte
	KeyOffset  uint32 // sectors
	Stripes    uint32
}

// header is the LUKS1 partition header.
type header struct {
	Version       uint16
	CipherName    string
	CipherMode    string
	HashSpec      string
	PayloadOffset uint32 // sectors
	KeyBytes      uint32
	MKDigest      [digestLen]byte
	MKDigestSalt  [saltLen]byte
	MKDigestIter  uint32
	UUID          string
	Slots         [numSlots]keySlot
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// errNotLUKS is QEMU's text for a volume without the magic.
var errNotLUKS = fmt.Errorf("Volume is not in LUKS format")

// parseHeader decodes the first 592 bytes of a volume.
func parseHeader(b []byte) (*header, error) {
	if len(b) < headerSize || !bytes.Equal(b[:6], magic) {
		return nil, errNotLUKS
	}
	be := binary.BigEndian
	h := &header{
		Version:       be.Uint16(b[6:]),
		CipherName:    cstring(b[8:40]),
		CipherMode:    cstring(b[40:72]),
		HashSpec:      cstring(b[72:104]),
		PayloadOffset: be.Uint32(b[104:]),
		KeyBytes:      be.Uint32(b[108:]),
		MKDigestIter:  be.Uint32(b[164:]),
		UUID:          cstring(b[168:208]),
	}
	if h.Version != 1 {
		return nil, fmt.Errorf("Unsupported LUKS version %d", h.Version)
	}
	copy(h.MKDigest[:], b[112:132])
	copy(h.MKDigestSalt[:], b[132:164])
	for i := range h.Slots {
		s := b[208+48*i:]
		h.Slots[i] = keySlot{Active: be.Uint32(s), Iterations: be.Uint32(s[4:]),
			KeyOffset: be.Uint32(s[40:]), Stripes: be.Uint32(s[44:])}
		copy(h.Slots[i].Salt[:], s[8:40])
	}
	return h, nil
}

// encode writes the header in its on-disk form.
func (h *header) encode() []byte {
	b := make([]byte, headerSize)
	be := binary.BigEndian
	copy(b, magic)
	be.PutUint16(b[6:], h.Version)
	copy(b[8:40], h.CipherName)
	copy(b[40:72], h.CipherMode)
	copy(b[72:104], h.HashSpec)
	be.PutUint32(b[104:], h.PayloadOffset)
	be.PutUint32(b[108:], h.KeyBytes)
	copy(b[112:132], h.MKDigest[:])
	copy(b[132:164], h.MKDigestSalt[:])
	be.PutUint32(b[164:], h.MKDigestIter)
	copy(b[168:208], h.UUID)
	for i, sl := range h.Slots {
		s := b[208+48*i:]
		be.PutUint32(s, sl.Active)
		be.PutUint32(s[4:], sl.Iterations)
		copy(s[8:40], sl.Salt[:])
		be.PutUint32(s[40:], sl.KeyOffset)
		be.PutUint32(s[44:], sl.Stripes)
	}
	return b
}
