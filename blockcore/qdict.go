package blockcore

import (
	"bytes"
	"encoding/json"
	"slices"
)

// qdict is an option dictionary that serializes its keys in the order
// QEMU's QDict iterates them: by bucket (tdb_hash modulo 512), newest
// first within a bucket. json: filenames are compared as strings by
// clients and tests, so the order is part of the interface.
type qdict []qdictEntry

type qdictEntry struct {
	key string
	val any
}

const qdictBuckets = 512

// tdbHash is the hash QEMU's qdict uses.
func tdbHash(key string) uint32 {
	value := 0x238F13AF * uint32(len(key))
	for i := 0; i < len(key); i++ {
		value += uint32(key[i]) << (uint(i) * 5 % 24)
	}
	return 1103515243*value + 12345
}

// set adds or replaces a key.
func (d qdict) set(key string, val any) qdict {
	for i := range d {
		if d[i].key == key {
			d[i].val = val
			return d
		}
	}
	return append(d, qdictEntry{key, val})
}

// ordered returns the entries in QDict iteration order.
func (d qdict) ordered() []qdictEntry {
	out := slices.Clone(d)
	idx := map[string]int{}
	for i, e := range d {
		idx[e.key] = i
	}
	slices.SortStableFunc(out, func(a, b qdictEntry) int {
		ba, bb := tdbHash(a.key)%qdictBuckets, tdbHash(b.key)%qdictBuckets
		if ba != bb {
			return int(ba) - int(bb)
		}
		return idx[b.key] - idx[a.key] // inserted at the bucket's head
	})
	return out
}

// encode writes the entries in QDict order with QEMU's ", " and ": ".
// (Not MarshalJSON: encoding/json would compact the result.)
func (d qdict) encode() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range d.ordered() {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(e.key)
		b.Write(k)
		b.WriteString(": ")
		if sub, ok := e.val.(qdict); ok {
			b.Write(sub.encode())
			continue
		}
		v, _ := json.Marshal(e.val)
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes()
}
