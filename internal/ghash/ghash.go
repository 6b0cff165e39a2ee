// Package ghash reproduces the iteration order of a GLib 2.74 string hash
// table (g_str_hash, quadratic probing, resizing as ghash.c does), for
// the places where the reference's replies list things in that order:
// the first unexpected member a QObject input visitor reports, QOM
// property and child lists.
package ghash

type Table struct {
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

// New returns an empty table.
func New() *Table {
	t := &Table{}
	t.setShift(ghashMinShift)
	t.keys = make([]string, t.size)
	t.hashes = make([]uint32, t.size)
	return t
}

func (t *Table) setShift(shift uint) {
	t.shift = min(shift, uint(len(ghashPrimes)-1))
	t.size = 1 << t.shift
	t.mod = ghashPrimes[t.shift]
	t.mask = t.size - 1
}

func (t *Table) index(h uint32) uint32 { return (h * 11) % t.mod }

// Insert adds key (once).
func (t *Table) Insert(key string) {
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

// Remove deletes key if present, as g_hash_table_remove does (which may
// shrink the table).
func (t *Table) Remove(key string) {
	if t.tombstone(key) {
		t.maybeResize()
	}
}

// IterRemove deletes key if present, as g_hash_table_iter_remove does:
// the slot becomes a tombstone and the table is not resized. QOM removes
// a child this way (object_unparent).
func (t *Table) IterRemove(key string) { t.tombstone(key) }

func (t *Table) tombstone(key string) bool {
	h := gStrHash(key)
	if h <= 1 {
		h = 2
	}
	idx := t.index(h)
	for step := uint32(0); t.hashes[idx] != 0; {
		if t.hashes[idx] == h && t.keys[idx] == key {
			t.hashes[idx], t.keys[idx] = 1, ""
			t.nnodes--
			return true
		}
		step++
		idx = (idx + step) & t.mask
	}
	return false
}

func (t *Table) maybeResize() {
	size := int(t.size)
	if size > t.nnodes*4 && size > 1<<ghashMinShift || size <= t.noccupied+t.noccupied/16 {
		t.resize()
	}
}

// resize is g_hash_table_resize: rehash in place, carrying displaced
// entries along, with a bitmap of the slots already claimed.
func (t *Table) resize() {
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

// Keys returns the keys in the table's slot order, which is the order
// g_hash_table_iter and g_hash_table_foreach visit them in.
func (t *Table) Keys() []string {
	out := make([]string, 0, t.nnodes)
	for i := uint32(0); i < t.size; i++ {
		if t.hashes[i] >= 2 {
			out = append(out, t.keys[i])
		}
	}
	return out
}
