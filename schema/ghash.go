package schema

import "blockd/internal/qdict"

// QEMU's QObject input visitor finds unexpected members (check_struct) by
// copying the object's keys, in QDict iteration order, into a GLib hash
// table, removing each member it visits, and reporting the first key left
// in the table's slot order. With several unexpected members, which one
// is named depends on that order, so it is reproduced here: GLib 2.74's
// g_str_hash, quadratic probing and resizing (ghash.c).

type ghash struct {
	shift             uint
	size, mod, mask   uint32
	nnodes, noccupied int
	keys              []string
	hashes            []uint32 // 0 unused, 1 tombstone, >= 2 a key
}

var ghashPrimes = []uint32{1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191,
	16381, 32749, 65521, 131071, 262139, 524287, 1048573, 2097143, 4194301}

const ghashMinShift = 3

func gStrHash(s string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(s); i++ {
		h = h<<5 + h + uint32(int32(int8(s[i]))) // signed char, as GLib
	}
	return h
}

func newGhash() *ghash {
	t := &ghash{}
	t.setShift(ghashMinShift)
	t.keys = make([]string, t.size)
	t.hashes = make([]uint32, t.size)
	return t
}

func (t *ghash) setShift(shift uint) {
	t.shift = min(shift, uint(len(ghashPrimes)-1))
	t.size = 1 << t.shift
	t.mod = ghashPrimes[t.shift]
	t.mask = t.size - 1
}

func (t *ghash) index(h uint32) uint32 { return (h * 11) % t.mod }

func (t *ghash) insert(key string) {
	h := gStrHash(key)
	if h <= 1 {
		h = 2
	}
	idx := t.index(h)
	tomb, haveTomb := uint32(0), false
	for step := uint32(0); t.hashes[idx] != 0; {
		if t.hashes[idx] == h && t.keys[idx] == key {
			return
		}
		if t.hashes[idx] == 1 && !haveTomb {
			tomb, haveTomb = idx, true
		}
		step++
		idx = (idx + step) & t.mask
	}
	if haveTomb {
		idx = tomb
	} else {
		t.noccupied++
	}
	t.keys[idx], t.hashes[idx] = key, h
	t.nnodes++
	t.maybeResize()
}

func (t *ghash) remove(key string) {
	h := gStrHash(key)
	if h <= 1 {
		h = 2
	}
	idx := t.index(h)
	for step := uint32(0); t.hashes[idx] != 0; {
		if t.hashes[idx] == h && t.keys[idx] == key {
			t.hashes[idx], t.keys[idx] = 1, ""
			t.nnodes--
			t.maybeResize()
			return
		}
		step++
		idx = (idx + step) & t.mask
	}
}

func (t *ghash) maybeResize() {
	size := int(t.size)
	if size > t.nnodes*4 && size > 1<<ghashMinShift || size <= t.noccupied+t.noccupied/16 {
		t.resize()
	}
}

// resize is g_hash_table_resize: rehash in place, carrying displaced
// entries along, with a bitmap of the slots already claimed.
func (t *ghash) resize() {
	oldSize := t.size
	n, shift := int(float64(t.nnodes)*1.333), uint(0)
	for ; n != 0; shift++ {
		n >>= 1
	}
	t.setShift(max(shift, ghashMinShift))
	if t.size > oldSize {
		t.keys = append(t.keys, make([]string, t.size-oldSize)...)
		t.hashes = append(t.hashes, make([]uint32, t.size-oldSize)...)
	}
	claimed := make([]bool, max(t.size, oldSize))
	for i := uint32(0); i < oldSize; i++ {
		if t.hashes[i] < 2 {
			t.hashes[i] = 0
			continue
		}
		if claimed[i] {
			continue
		}
		h, k := t.hashes[i], t.keys[i]
		t.hashes[i], t.keys[i] = 0, ""
		for {
			idx := t.index(h)
			for step := uint32(0); claimed[idx]; {
				step++
				idx = (idx + step) & t.mask
			}
			claimed[idx] = true
			if t.hashes[idx] >= 2 {
				// Carry the entry that was there to its own new place.
				h, t.hashes[idx] = t.hashes[idx], h
				k, t.keys[idx] = t.keys[idx], k
				continue
			}
			t.hashes[idx], t.keys[idx] = h, k
			break
		}
	}
	if t.size < oldSize {
		t.keys, t.hashes = t.keys[:t.size], t.hashes[:t.size]
	}
	t.noccupied = t.nnodes
}

// firstUnexpected returns the key check_struct reports among keys (in
// JSON order) after the members in used (in visit order) were removed.
func firstUnexpected(keys []string, used []string) string {
	var d qdict.Dict
	for _, k := range keys {
		d = d.Set(k, nil)
	}
	t := newGhash()
	for _, e := range d.Ordered() {
		t.insert(e.Key)
	}
	for _, k := range used {
		t.remove(k)
	}
	for i := uint32(0); i < t.size; i++ {
		if t.hashes[i] >= 2 {
			return t.keys[i]
		}
	}
	return ""
}
