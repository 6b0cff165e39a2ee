package luks

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/pbkdf2"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/schema"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "luks", Format: true, Open: open})
}

// Volume is an unlocked LUKS1 volume over its file: the payload's
// plaintext as a blockio.Device.
type Volume struct {
	file    blockio.Device
	h       *header
	c       sectorCipher
	payload int64 // bytes

	// rmw serializes read-modify-write of partly written sectors, so two
	// small writes into one sector do not undo each other.
	rmw sync.Mutex
}

// ErrBadPassphrase is QEMU's text when no key slot opens.
var ErrBadPassphrase = errors.New("Invalid password, cannot unlock any keyslot")

// readHeader reads the header; a short volume reads as zeroes past its
// end, so that it is "not in LUKS format".
func readHeader(file blockio.Device) (*header, error) {
	b := make([]byte, headerSize)
	size, err := file.Size()
	if err != nil {
		return nil, err
	}
	if n := min(size, headerSize); n > 0 {
		if err := file.ReadAt(b[:n], 0); err != nil {
			return nil, err
		}
	}
	return parseHeader(b)
}

// Open unlocks the volume on file with passphrase.
func Open(file blockio.Device, passphrase []byte) (*Volume, error) {
	h, err := readHeader(file)
	if err != nil {
		return nil, err
	}
	hf, err := hashFor(h.HashSpec)
	if err != nil {
		return nil, err
	}
	// Check the cipher before trying slots, so that an unsupported one
	// is reported as such rather than as a wrong passphrase.
	if h.KeyBytes == 0 || h.KeyBytes > 128 {
		return nil, fmt.Errorf("LUKS key length %d is invalid", h.KeyBytes)
	}
	if _, err := newSectorCipher(h.CipherName, h.CipherMode, make([]byte, h.KeyBytes)); err != nil {
		return nil, err
	}
	size, err := file.Size()
	if err != nil {
		return nil, err
	}
	if int64(h.PayloadOffset)*sectorSize > size {
		return nil, fmt.Errorf("LUKS payload is overlapping with the header")
	}
	for i := range h.Slots {
		mk, err := tryKeySlot(file, h, hf, &h.Slots[i], passphrase, size)
		if err != nil {
			return nil, err
		}
		if mk == nil {
			continue
		}
		c, err := newSectorCipher(h.CipherName, h.CipherMode, mk)
		if err != nil {
			return nil, err
		}
		return &Volume{file: file, h: h, c: c, payload: int64(h.PayloadOffset) * sectorSize}, nil
	}
	return nil, ErrBadPassphrase
}

// tryKeySlot returns the master key when passphrase opens slot s, nil
// when it does not (or the slot is inactive).
func tryKeySlot(file blockio.Device, h *header, hf func() hash.Hash, s *keySlot, passphrase []byte, size int64) ([]byte, error) {
	if s.Active != slotActive {
		return nil, nil
	}
	if s.Stripes != stripes {
		return nil, fmt.Errorf("Keyslot is corrupted (stripes %d != %d)", s.Stripes, stripes)
	}
	n := int64(h.KeyBytes) * stripes
	sectors := (n + sectorSize - 1) / sectorSize
	off := int64(s.KeyOffset) * sectorSize
	if off+sectors*sectorSize > size {
		return nil, fmt.Errorf("Keyslot is corrupted (key material past the end of the volume)")
	}
	slotKey := pbkdf2.Key(passphrase, s.Salt[:], int(s.Iterations), int(h.KeyBytes), hf)
	c, err := newSectorCipher(h.CipherName, h.CipherMode, slotKey)
	if err != nil {
		return nil, err
	}
	material := make([]byte, sectors*sectorSize)
	if err := file.ReadAt(material, off); err != nil {
		return nil, err
	}
	c.decrypt(material, material, 0)
	mk := afMerge(hf, material, int(h.KeyBytes), stripes)
	digest := pbkdf2.Key(mk, h.MKDigestSalt[:], int(h.MKDigestIter), digestLen, hf)
	if !bytes.Equal(digest, h.MKDigest[:]) {
		return nil, nil
	}
	return mk, nil
}

// Size is the payload's size.
func (v *Volume) Size() (int64, error) {
	s, err := v.file.Size()
	if err != nil {
		return 0, err
	}
	return max(s-v.payload, 0), nil
}

// chunk bounds the bounce buffers of one step of a large request.
const chunk = 1 << 20

// span widens [off, off+n) to whole sectors.
func span(off, n int64) (int64, int64) {
	start := off / sectorSize * sectorSize
	end := (off + n + sectorSize - 1) / sectorSize * sectorSize
	return start, end
}

// ReadAt decrypts len(p) bytes of payload at off.
func (v *Volume) ReadAt(p []byte, off int64) error {
	size, err := v.Size()
	if err != nil {
		return err
	}
	if err := blockio.CheckRange(off, int64(len(p)), size); err != nil {
		return err
	}
	if off%sectorSize == 0 && len(p)%sectorSize == 0 {
		// Whole sectors decrypt in place in the caller's buffer.
		for len(p) > 0 {
			n := min(len(p), chunk)
			if err := v.file.ReadAt(p[:n], v.payload+off); err != nil {
				return err
			}
			v.c.decrypt(p[:n], p[:n], uint64(off/sectorSize))
			p, off = p[n:], off+int64(n)
		}
		return nil
	}
	start, end := span(off, int64(len(p)))
	buf := make([]byte, end-start)
	if err := v.readSectors(buf, start); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// readSectors decrypts whole sectors at off (sector aligned).
func (v *Volume) readSectors(buf []byte, off int64) error {
	if err := v.file.ReadAt(buf, v.payload+off); err != nil {
		return err
	}
	v.c.decrypt(buf, buf, uint64(off/sectorSize))
	return nil
}

// writeSectors encrypts whole sectors of plaintext p into a bounce
// buffer and writes them at off.
func (v *Volume) writeSectors(p []byte, off int64, f blockio.WriteFlags) error {
	buf := make([]byte, min(len(p), chunk))
	for len(p) > 0 {
		n := min(len(p), chunk)
		v.c.encrypt(buf[:n], p[:n], uint64(off/sectorSize))
		if err := v.file.WriteAt(buf[:n], v.payload+off, f); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt encrypts and writes p at off; partial sectors are read,
// merged and written back under a lock.
func (v *Volume) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	size, err := v.Size()
	if err != nil {
		return err
	}
	if err := blockio.CheckRange(off, int64(len(p)), size); err != nil {
		return err
	}
	if off%sectorSize == 0 && len(p)%sectorSize == 0 {
		return v.writeSectors(p, off, f)
	}
	v.rmw.Lock()
	defer v.rmw.Unlock()
	start, end := span(off, int64(len(p)))
	buf := make([]byte, end-start)
	if err := v.readSectors(buf[:sectorSize], start); err != nil {
		return err
	}
	if end-start > sectorSize {
		if err := v.readSectors(buf[len(buf)-sectorSize:], end-sectorSize); err != nil {
			return err
		}
	}
	copy(buf[off-start:], p)
	return v.writeSectors(buf, start, f)
}

// WriteZeroes writes encrypted zeroes: zeroes on disk would not read
// back as zeroes.
func (v *Volume) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	if f&blockio.NoFallback != 0 {
		return blockio.ErrNotSupported
	}
	size, err := v.Size()
	if err != nil {
		return err
	}
	if err := blockio.CheckRange(off, length, size); err != nil {
		return err
	}
	zero := make([]byte, min(length, chunk))
	for length > 0 {
		n := min(length, chunk)
		if err := v.WriteAt(zero[:n], off, f&blockio.FUA); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// Discard is ignored: freed ciphertext would not read as zeroes.
func (v *Volume) Discard(off, length int64) error { return nil }

func (v *Volume) Flush() error { return v.file.Flush() }

// BlockStatus: everything is data, as for any driver without its own
// block status.
func (v *Volume) BlockStatus(off, length int64) (blockio.Status, error) {
	size, err := v.Size()
	if err != nil {
		return blockio.Status{}, err
	}
	if err := blockio.CheckRange(off, length, size); err != nil || length == 0 {
		if err == nil {
			err = fmt.Errorf("%w: empty block status query", blockio.ErrOutOfRange)
		}
		return blockio.Status{}, err
	}
	return blockio.Status{Flags: blockio.StatusData | blockio.StatusAllocated, Length: length}, nil
}

// Truncate resizes the payload.
func (v *Volume) Truncate(size int64) error { return v.file.Truncate(v.payload + size) }

// node is the luks driver's node: a Volume on the file child.
type node struct {
	*Volume
	keySecret string
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	o := oc.Options.Luks
	if o.KeySecret == nil {
		return nil, schema.Errorf("Parameter 'key-secret' is required for cipher")
	}
	store := oc.Graph.Objects()
	if store == nil {
		return nil, schema.Errorf("No secret with id '%s'", *o.KeySecret)
	}
	pass, err := store.Secret(*o.KeySecret)
	if err != nil {
		return nil, err
	}
	v, err := Open(oc.File.Node.IO(), pass)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = errNotLUKS
		}
		return nil, schema.Errorf("%s", err)
	}
	return &node{Volume: v, keySecret: *o.KeySecret}, nil
}

func (n *node) Close() error { return nil }

// StrongOptions: key-secret is what the json: filename shows besides
// driver and file.
func (n *node) StrongOptions() map[string]any {
	return map[string]any{"key-secret": n.keySecret}
}

// FillImageInfo adds what qemu-storage-daemon reports for luks nodes.
func (n *node) FillImageInfo(info *schema.ImageInfo) {
	t := true
	info.Encrypted = &t
	h := n.h
	d := schema.QCryptoBlockInfoLUKS{
		HashAlg:        schema.QCryptoHashAlgorithm(h.HashSpec),
		PayloadOffset:  int64(h.PayloadOffset) * sectorSize,
		MasterKeyIters: int64(h.MKDigestIter),
		UUID:           h.UUID,
	}
	chain, ivgen, _ := strings.Cut(h.CipherMode, "-")
	if g, hs, ok := strings.Cut(ivgen, ":"); ok {
		ivgen = g
		ih := schema.QCryptoHashAlgorithm(hs)
		d.IvgenHashAlg = &ih
	}
	d.CipherMode, d.IvgenAlg = schema.QCryptoCipherMode(chain), schema.QCryptoIVGenAlgorithm(ivgen)
	keyBits := h.KeyBytes * 8
	if chain == "xts" {
		keyBits /= 2
	}
	d.CipherAlg = schema.QCryptoCipherAlgorithm(fmt.Sprintf("%s-%d", h.CipherName, keyBits))
	for _, s := range h.Slots {
		sl := schema.QCryptoBlockInfoLUKSSlot{Active: s.Active == slotActive, KeyOffset: int64(s.KeyOffset) * sectorSize}
		if sl.Active {
			it, st := int64(s.Iterations), int64(s.Stripes)
			sl.Iters, sl.Stripes = &it, &st
		}
		d.Slots = append(d.Slots, sl)
	}
	info.FormatSpecific = &schema.ImageInfoSpecific{Type: "luks", Luks: &schema.ImageInfoSpecificLUKSWrapper{Data: d}}
}

// DirtyFlag: a luks node answers bdrv_get_info, never dirty.
func (n *node) DirtyFlag() bool { return false }
