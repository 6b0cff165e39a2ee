package qcow2

// Metadata write-back and its ordering (everything here runs under mu).
//
// L2 slices and refcount blocks are cached write-back. Three flags record
// what must reach stable storage before what, in the spirit of QEMU's
// qcow2_cache_set_dependency / depends_on_flush:
//
//   - l2DependsRef: dirty L2 entries point at clusters whose refcount
//     increment is still only in the refcount cache. Before any L2 slice is
//     written, all dirty refcount blocks are written and the file flushed.
//     (Not used with lazy refcounts: the dirty bit covers it.)
//   - refDependsL2: dirty refcount blocks hold decrements for clusters that
//     an on-disk L2 (or L1) entry may still reference. Before any refcount
//     block is written, all dirty L2 slices are written and the file
//     flushed. It also guards reuse: a cluster freed this way is not handed
//     out again (allocation increments a zero refcount) before the L2
//     change that freed it is stable, or a crash could leave two L2 entries
//     pointing at it.
//   - needDataFlush: dirty L2 entries point at freshly written guest data;
//     the file is flushed before any L2 slice is written.
//
// Invariant: l2DependsRef and refDependsL2 are never both set; setting one
// first resolves the other by writing back the other cache.
//
// The L1 table, the refcount table and the header are written through
// (never cached), each preceded by metadataBarrier when it makes new
// clusters reachable.

func (img *Image) l2Key(l2off, sliceIdx int64) int64 { return l2off + sliceIdx*img.sliceBytes }

// l2Get returns the cache slot of the L2 slice at host offset key,
// loading it if needed.
func (img *Image) l2Get(key int64) (int32, []byte, error) {
	if i, ok := img.l2c.lookup(key); ok {
		return i, img.l2c.slots[i].buf, nil
	}
	i, ok := img.l2c.victim()
	if !ok {
		return -1, nil, errCachePinned
	}
	if img.l2c.slots[i].dirty {
		if err := img.l2Prereq(); err != nil {
			return -1, nil, err
		}
		if err := img.writeL2Slot(i); err != nil {
			return -1, nil, err
		}
	}
	buf := img.l2c.install(i, key)
	img.event("l2_load")
	if err := img.readMeta(buf, key); err != nil {
		img.l2c.drop(key)
		return -1, nil, err
	}
	return i, buf, nil
}

// rcGet is l2Get for refcount blocks. Every use counts as a load, as
// QEMU's load_refcount_block raises its event before asking the cache.
func (img *Image) rcGet(key int64) (int32, []byte, error) {
	img.event("refblock_load")
	if i, ok := img.rc.lookup(key); ok {
		return i, img.rc.slots[i].buf, nil
	}
	i, err := img.rcVictim()
	if err != nil {
		return -1, nil, err
	}
	buf := img.rc.install(i, key)
	if err := img.readMeta(buf, key); err != nil {
		img.rc.drop(key)
		return -1, nil, err
	}
	return i, buf, nil
}

// rcInstall caches a refcount block whose content the caller has just
// written to disk (a new block), avoiding a read back.
func (img *Image) rcInstall(key int64, content []byte) error {
	i, err := img.rcVictim()
	if err != nil {
		return err
	}
	copy(img.rc.install(i, key), content)
	return nil
}

func (img *Image) rcVictim() (int32, error) {
	i, ok := img.rc.victim()
	if !ok {
		return -1, errCachePinned
	}
	if img.rc.slots[i].dirty {
		if err := img.refPrereq(); err != nil {
			return -1, err
		}
		if err := img.writeRCSlot(i); err != nil {
			return -1, err
		}
	}
	return i, nil
}

// readMeta reads a metadata block; the part past the end of the file
// reads as zeroes (QEMU writes some tables with their exact size).
func (img *Image) readMeta(buf []byte, off int64) error {
	return img.readFileClamped(buf, off)
}

func (img *Image) writeL2Slot(i int32) error {
	s := &img.l2c.slots[i]
	if k := img.meta.check(&img.g, s.key, int64(len(s.buf)), metaL2); k != metaNone {
		return img.corruptf(true, s.key, int64(len(s.buf)), "%s", overlapMessage(k))
	}
	img.event("l2_update")
	if err := img.file.WriteAt(s.buf, s.key, 0); err != nil {
		return err
	}
	img.l2c.markClean(i)
	return nil
}

func (img *Image) writeRCSlot(i int32) error {
	s := &img.rc.slots[i]
	if k := img.meta.check(&img.g, s.key, int64(len(s.buf)), metaRefblock); k != metaNone {
		return img.corruptf(true, s.key, int64(len(s.buf)), "%s", overlapMessage(k))
	}
	img.event("refblock_update_part")
	if err := img.file.WriteAt(s.buf, s.key, 0); err != nil {
		return err
	}
	img.rc.markClean(i)
	return nil
}

// l2Prereq makes everything an L2 write-back depends on stable.
func (img *Image) l2Prereq() error {
	if img.l2DependsRef {
		if err := img.writeRefcounts(); err != nil {
			return err
		}
		if err := img.file.Flush(); err != nil {
			return err
		}
		img.l2DependsRef = false
		img.needDataFlush = false
		return nil
	}
	if img.needDataFlush {
		if err := img.file.Flush(); err != nil {
			return err
		}
		img.needDataFlush = false
	}
	return nil
}

// refPrereq makes everything a refcount write-back depends on stable.
func (img *Image) refPrereq() error {
	if !img.refDependsL2 {
		return nil
	}
	if err := img.writeL2s(); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.refDependsL2 = false
	return nil
}

// writeL2s writes back every dirty L2 slice (without evicting).
func (img *Image) writeL2s() error {
	if img.l2c.nDirty == 0 {
		return nil
	}
	if err := img.l2Prereq(); err != nil {
		return err
	}
	for i := range img.l2c.slots {
		if img.l2c.slots[i].dirty {
			if err := img.writeL2Slot(int32(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeRefcounts writes back every dirty refcount block.
func (img *Image) writeRefcounts() error {
	if img.rc.nDirty == 0 {
		return nil
	}
	if err := img.refPrereq(); err != nil {
		return err
	}
	for i := range img.rc.slots {
		if img.rc.slots[i].dirty {
			if err := img.writeRCSlot(int32(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// beforeLink must be called before L2 entries are changed to point at
// newly allocated clusters holding newly written data.
func (img *Image) beforeLink() error {
	if img.lazy {
		if err := img.markDirty(); err != nil {
			return err
		}
	} else if !img.l2DependsRef {
		if img.refDependsL2 {
			if err := img.refPrereq(); err != nil {
				return err
			}
		}
		img.l2DependsRef = true
	}
	img.needDataFlush = true
	return nil
}

// beforeDecrement must be called before a refcount is decremented because
// an L2/L1 entry stopped referencing the cluster.
func (img *Image) beforeDecrement() error {
	if img.refDependsL2 {
		return nil
	}
	if img.l2DependsRef {
		if err := img.writeRefcounts(); err != nil {
			return err
		}
		if err := img.file.Flush(); err != nil {
			return err
		}
		img.l2DependsRef = false
	}
	img.refDependsL2 = true
	return nil
}

// metadataBarrier makes the refcount increments done so far, and every
// write issued so far, stable. Used before a write-through L1, refcount
// table or header update makes new clusters reachable.
func (img *Image) metadataBarrier() error {
	if img.lazy {
		if err := img.markDirty(); err != nil {
			return err
		}
	} else if err := img.writeRefcounts(); err != nil {
		return err
	}
	if err := img.file.Flush(); err != nil {
		return err
	}
	img.needDataFlush = false
	if img.rc.nDirty == 0 {
		img.l2DependsRef = false
	}
	return nil
}

// flushCaches writes back both caches in dependency order; the caller
// flushes the file afterwards.
func (img *Image) flushCaches() error {
	if img.l2DependsRef {
		if err := img.writeRefcounts(); err != nil {
			return err
		}
		if err := img.writeL2s(); err != nil {
			return err
		}
	} else {
		if err := img.writeL2s(); err != nil {
			return err
		}
		if err := img.writeRefcounts(); err != nil {
			return err
		}
	}
	return nil
}

// markDirty sets the dirty bit before the first refcount update that lazy
// refcounts will not order (qcow2_mark_dirty).
func (img *Image) markDirty() error {
	if img.hdr.incompat&incompatDirty != 0 {
		return nil
	}
	return img.writeIncompat(img.hdr.incompat | incompatDirty)
}
