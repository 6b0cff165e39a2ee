package qcow2

// metaCache is a bounded LRU of fixed-size metadata blocks (L2 table slices
// or refcount blocks) keyed by their host offset, holding the raw big-endian
// bytes so that loading and writing back need no conversion.
//
// Invariants (all access under Image.mu):
//   - index maps the key of every live slot to its position; free slots
//     have key -1 and are not in index or in the LRU list;
//   - a slot's buffer is allocated on first use and reused after eviction,
//     so a warm cache does no allocation;
//   - pinned slots are never chosen as victims, which keeps the buffer a
//     caller holds valid while it performs further cache operations;
//   - write-back never evicts: only victim() frees slots, so flushing one
//     cache on behalf of the other cannot invalidate pinned buffers.
type metaCache struct {
	entrySize int
	max       int
	slots     []cacheSlot
	index     map[int64]int32
	head      int32 // most recently used
	tail      int32 // least recently used
	nDirty    int
}

type cacheSlot struct {
	key        int64
	buf        []byte
	dirty      bool
	pins       int32
	linked     bool
	prev, next int32
}

func newMetaCache(entrySize, max int) *metaCache {
	if max < 2 {
		max = 2
	}
	return &metaCache{
		entrySize: entrySize,
		max:       max,
		index:     make(map[int64]int32),
		head:      -1,
		tail:      -1,
	}
}

func (c *metaCache) unlink(i int32) {
	s := &c.slots[i]
	if !s.linked {
		return
	}
	s.linked = false
	if s.prev >= 0 {
		c.slots[s.prev].next = s.next
	} else {
		c.head = s.next
	}
	if s.next >= 0 {
		c.slots[s.next].prev = s.prev
	} else {
		c.tail = s.prev
	}
	s.prev, s.next = -1, -1
}

func (c *metaCache) pushFront(i int32) {
	s := &c.slots[i]
	s.linked = true
	s.prev, s.next = -1, c.head
	if c.head >= 0 {
		c.slots[c.head].prev = i
	}
	c.head = i
	if c.tail < 0 {
		c.tail = i
	}
}

// lookup returns the slot holding key and marks it most recently used.
func (c *metaCache) lookup(key int64) (int32, bool) {
	i, ok := c.index[key]
	if !ok {
		return -1, false
	}
	if c.head != i {
		c.unlink(i)
		c.pushFront(i)
	}
	return i, true
}

// victim returns a slot to reuse: a fresh one while below capacity, else
// the least recently used unpinned one. The caller writes it back if it is
// dirty and then calls install. ok is false when every slot is pinned.
func (c *metaCache) victim() (int32, bool) {
	if len(c.slots) < c.max {
		c.slots = append(c.slots, cacheSlot{key: -1, prev: -1, next: -1})
		return int32(len(c.slots) - 1), true
	}
	for i := c.tail; i >= 0; i = c.slots[i].prev {
		if c.slots[i].pins == 0 {
			return i, true
		}
	}
	return -1, false
}

// install makes slot i hold key (content to be filled by the caller).
func (c *metaCache) install(i int32, key int64) []byte {
	s := &c.slots[i]
	if s.key >= 0 {
		delete(c.index, s.key)
	}
	c.unlink(i)
	if s.dirty {
		s.dirty = false
		c.nDirty--
	}
	if s.buf == nil {
		s.buf = make([]byte, c.entrySize)
	}
	s.key = key
	c.index[key] = i
	c.pushFront(i)
	return s.buf
}

// drop forgets key without writing it back (the block was freed or
// rewritten behind the cache).
func (c *metaCache) drop(key int64) {
	i, ok := c.index[key]
	if !ok {
		return
	}
	s := &c.slots[i]
	delete(c.index, key)
	c.unlink(i)
	if s.dirty {
		s.dirty = false
		c.nDirty--
	}
	s.key = -1
	// Move the slot to the LRU end so it is reused first.
	if c.tail >= 0 {
		c.slots[c.tail].next = i
	}
	s.linked = true
	s.prev, s.next = c.tail, -1
	c.tail = i
	if c.head < 0 {
		c.head = i
	}
}

// dropAll empties the cache, discarding dirty contents.
func (c *metaCache) dropAll() {
	for i := range c.slots {
		c.slots[i].key = -1
		c.slots[i].dirty = false
		c.slots[i].pins = 0
	}
	c.slots = c.slots[:0]
	c.index = make(map[int64]int32)
	c.head, c.tail, c.nDirty = -1, -1, 0
}

func (c *metaCache) markDirty(i int32) {
	if !c.slots[i].dirty {
		c.slots[i].dirty = true
		c.nDirty++
	}
}

func (c *metaCache) markClean(i int32) {
	if c.slots[i].dirty {
		c.slots[i].dirty = false
		c.nDirty--
	}
}

func (c *metaCache) pin(i int32)   { c.slots[i].pins++ }
func (c *metaCache) unpin(i int32) { c.slots[i].pins-- }
