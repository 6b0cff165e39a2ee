package ghash

import (
	"slices"
	"testing"
)

// Slot orders seen in qemu-storage-daemon 7.2's replies: QOM class
// properties (qom-list-properties reverses them) and /objects children.
func TestSlotOrderMatchesReference(t *testing.T) {
	for _, c := range []struct{ inserted, slots []string }{
		{[]string{"loaded", "format", "keyid", "iv"}, []string{"format", "loaded", "keyid", "iv"}},
		{[]string{"aio-max-batch", "thread-pool-min", "thread-pool-max"}, []string{"thread-pool-max", "aio-max-batch", "thread-pool-min"}},
		{[]string{"verify-peer", "dir", "endpoint", "priority"}, []string{"priority", "verify-peer", "dir", "endpoint"}},
		{[]string{"io0", "s0", "p0", "a0"}, []string{"a0", "s0", "io0", "p0"}},
	} {
		tb := New()
		for _, k := range c.inserted {
			tb.Insert(k)
		}
		if got := tb.Keys(); !slices.Equal(got, c.slots) {
			t.Errorf("%v: slots %v, want %v", c.inserted, got, c.slots)
		}
	}
}

// Removal leaves the others in place and a key inserted twice is kept once.
func TestRemoveAndDuplicates(t *testing.T) {
	tb := New()
	var keys []string
	for i := range 100 {
		k := string(rune('a'+i%26)) + string(rune('A'+i/26))
		keys = append(keys, k)
		tb.Insert(k)
		tb.Insert(k)
	}
	if n := len(tb.Keys()); n != 100 {
		t.Fatalf("%d keys after inserting 100 twice", n)
	}
	for _, k := range keys[:90] {
		tb.Remove(k)
	}
	got := tb.Keys()
	slices.Sort(got)
	want := slices.Clone(keys[90:])
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
}

// IterRemove leaves the table's size as it is, Remove may shrink it: a
// QOM container (whose children go with g_hash_table_iter_remove) then
// lists what is left in another order than a shrunk table would.
func TestIterRemoveKeepsSize(t *testing.T) {
	build := func() *Table {
		tb := New()
		for _, k := range []string{"m", "r0", "mem", "n0", "f0", "p0", "s0", "s1", "pt", "st", "mx"} {
			tb.Insert(k)
		}
		return tb
	}
	a, b := build(), build()
	for _, k := range []string{"r0", "mem", "f0", "p0", "s0", "s1", "pt", "st"} {
		a.IterRemove(k)
		b.Remove(k)
	}
	// Recorded from qemu-storage-daemon 7.2 (query-chardev, reversed).
	if got := a.Keys(); !slices.Equal(got, []string{"m", "n0", "mx"}) {
		t.Errorf("after iter removals: %v", got)
	}
	if got := b.Keys(); !slices.Equal(got, []string{"n0", "mx", "m"}) {
		t.Errorf("after removals with resizing: %v", got)
	}
}
