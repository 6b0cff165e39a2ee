package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/xts"
)

// hashFor returns the hash a header's hash-spec names.
func hashFor(spec string) (func() hash.Hash, error) {
	switch spec {
	case "sha1":
		return sha1.New, nil
	case "sha224":
		return sha256.New224, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("Unsupported hash algorithm '%s'", spec)
}

// sectorCipher encrypts and decrypts whole 512-byte sectors; sector is
// the IV's sector number.
type sectorCipher interface {
	encrypt(dst, src []byte, sector uint64)
	decrypt(dst, src []byte, sector uint64)
}

// newSectorCipher builds the cipher of a header's cipher-name and
// cipher-mode ("aes", "xts-plain64") with key.
func newSectorCipher(name, mode string, key []byte) (sectorCipher, error) {
	if name != "aes" {
		return nil, fmt.Errorf("Unsupported cipher algorithm '%s'", name)
	}
	chain, ivgen, _ := strings.Cut(mode, "-")
	ivhash := ""
	if g, h, ok := strings.Cut(ivgen, ":"); ok {
		ivgen, ivhash = g, h
	}
	switch chain {
	case "xts":
		if ivgen != "plain64" && ivgen != "plain" {
			return nil, fmt.Errorf("Unsupported IV generator '%s' with mode xts", ivgen)
		}
		if n := len(key) / 2; len(key)%2 != 0 || n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("Unsupported cipher key size %d", len(key))
		}
		c, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			return nil, err
		}
		return &xtsCipher{c: c, plain32: ivgen == "plain"}, nil
	case "cbc":
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("Unsupported cipher key size %d", len(key))
		}
		cc := &cbcCipher{b: b}
		switch ivgen {
		case "plain":
			cc.plain32 = true
		case "plain64":
		case "essiv":
			hf, err := hashFor(ivhash)
			if err != nil {
				return nil, err
			}
			h := hf()
			h.Write(key)
			ek, err := aes.NewCipher(h.Sum(nil))
			if err != nil {
				return nil, fmt.Errorf("Unsupported ESSIV hash '%s'", ivhash)
			}
			cc.essiv = ek
		default:
			return nil, fmt.Errorf("Unsupported IV generator '%s'", ivgen)
		}
		return cc, nil
	}
	return nil, fmt.Errorf("Unsupported cipher mode '%s'", chain)
}

// xtsCipher: the plain64 IV is the little-endian sector number, which is
// XTS's tweak as x/crypto/xts forms it.
type xtsCipher struct {
	c       *xts.Cipher
	plain32 bool
}

func (x *xtsCipher) iv(sector uint64) uint64 {
	if x.plain32 {
		return sector & 0xffffffff
	}
	return sector
}

func (x *xtsCipher) encrypt(dst, src []byte, sector uint64) {
	for i := 0; i < len(src); i += sectorSize {
		x.c.Encrypt(dst[i:i+sectorSize], src[i:i+sectorSize], x.iv(sector))
		sector++
	}
}

func (x *xtsCipher) decrypt(dst, src []byte, sector uint64) {
	for i := 0; i < len(src); i += sectorSize {
		x.c.Decrypt(dst[i:i+sectorSize], src[i:i+sectorSize], x.iv(sector))
		sector++
	}
}

type cbcCipher struct {
	b       cipher.Block
	essiv   cipher.Block // nil unless essiv
	plain32 bool
}

func (c *cbcCipher) iv(sector uint64) []byte {
	iv := make([]byte, aes.BlockSize)
	if c.plain32 {
		binary.LittleEndian.PutUint32(iv, uint32(sector))
	} else {
		binary.LittleEndian.PutUint64(iv, sector)
	}
	if c.essiv != nil {
		c.essiv.Encrypt(iv, iv)
	}
	return iv
}

func (c *cbcCipher) encrypt(dst, src []byte, sector uint64) {
	for i := 0; i < len(src); i += sectorSize {
		cipher.NewCBCEncrypter(c.b, c.iv(sector)).CryptBlocks(dst[i:i+sectorSize], src[i:i+sectorSize])
		sector++
	}
}

func (c *cbcCipher) decrypt(dst, src []byte, sector uint64) {
	for i := 0; i < len(src); i += sectorSize {
		cipher.NewCBCDecrypter(c.b, c.iv(sector)).CryptBlocks(dst[i:i+sectorSize], src[i:i+sectorSize])
		sector++
	}
}

// diffuse is the anti-forensic diffusion: each digest-sized piece
// becomes H(index || piece), the last one truncated.
func diffuse(h func() hash.Hash, b []byte) {
	d := h()
	size := d.Size()
	var idx [4]byte
	for i, off := 0, 0; off < len(b); i, off = i+1, off+size {
		end := min(off+size, len(b))
		d.Reset()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		d.Write(idx[:])
		d.Write(b[off:end])
		copy(b[off:end], d.Sum(nil))
	}
}

// afMerge recovers a key of n bytes from its split material.
func afMerge(h func() hash.Hash, material []byte, n, stripes int) []byte {
	d := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		s := material[i*n : (i+1)*n]
		for j := range d {
			d[j] ^= s[j]
		}
		diffuse(h, d)
	}
	last := material[(stripes-1)*n : stripes*n]
	for j := range d {
		d[j] ^= last[j]
	}
	return d
}

// afSplit spreads key over stripes blocks; random fills the first
// stripes-1 of them.
func afSplit(h func() hash.Hash, key []byte, stripes int, random []byte) []byte {
	n := len(key)
	out := make([]byte, n*stripes)
	copy(out, random[:n*(stripes-1)])
	d := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		s := out[i*n : (i+1)*n]
		for j := range d {
			d[j] ^= s[j]
		}
		diffuse(h, d)
	}
	last := out[(stripes-1)*n:]
	for j := range d {
		last[j] = d[j] ^ key[j]
	}
	return out
}
