// Package qdict owns the key order of QEMU's QDict, which its JSON output
// follows: keys come by tdb_hash bucket (of 512), the newest first within
// a bucket. blockd's json: filenames and its qemu-img-style JSON are
// compared as text by clients and tests, so the order is part of the
// interface.
package qdict

import "slices"

// Dict is a dictionary that remembers insertion order.
type Dict []Entry

// Entry is one member.
type Entry struct {
	Key string
	Val any
}

const buckets = 512

// hash is tdb_hash from QEMU's qobject/qdict.c.
func hash(key string) uint32 {
	value := 0x238F13AF * uint32(len(key))
	for i := 0; i < len(key); i++ {
		value += uint32(key[i]) << (uint(i) * 5 % 24)
	}
	return 1103515243*value + 12345
}

// Set adds a member, or replaces the value of an existing key.
func (d Dict) Set(key string, val any) Dict {
	for i := range d {
		if d[i].Key == key {
			d[i].Val = val
			return d
		}
	}
	return append(d, Entry{key, val})
}

// Ordered returns the members in QDict iteration order.
func (d Dict) Ordered() []Entry {
	out := slices.Clone(d)
	pos := map[string]int{}
	for i, e := range d {
		pos[e.Key] = i
	}
	slices.SortStableFunc(out, func(a, b Entry) int {
		ba, bb := hash(a.Key)%buckets, hash(b.Key)%buckets
		if ba != bb {
			return int(ba) - int(bb)
		}
		return pos[b.Key] - pos[a.Key] // inserted at the bucket's head
	})
	return out
}
