package qcow2

import (
	"errors"
	"fmt"

	"blockd/blockio"
)

// ReopenOptions are what a reopen may change on an open image: the access
// mode and QEMU's qcow2 runtime options, given in full (zero values and a
// nil LazyRefcounts are the defaults, as in OpenOptions).
type ReopenOptions struct {
	ReadOnly                                                    bool
	CacheSize, L2CacheSize, L2CacheEntrySize, RefcountCacheSize int64
	LazyRefcounts                                               *bool
}

// Reopen is a prepared reopen; exactly one of Commit and Abort finishes
// it.
type Reopen struct {
	img                      *Image
	readOnly, lazy           bool
	l2c, rc                  *metaCache // new caches, nil: keep the current ones
	sliceBytes, sliceEntries int64
}

// ReopenPrepare validates the new options as qcow2_update_options_prepare
// does (same texts as at open), writes the caches back, and, when the
// image goes read-only or stops using lazy refcounts, flushes everything
// and clears the dirty bit (qcow2_mark_clean), so that the commit has
// nothing left to write.
func (img *Image) ReopenPrepare(o ReopenOptions) (*Reopen, error) {
	tmp := &Image{g: img.g}
	tmp.size.Store(img.size.Load())
	if err := tmp.setupCaches(OpenOptions{CacheSize: o.CacheSize, L2CacheSize: o.L2CacheSize,
		L2CacheEntrySize: o.L2CacheEntrySize, RefcountCacheSize: o.RefcountCacheSize}); err != nil {
		return nil, err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	r := &Reopen{img: img, readOnly: o.ReadOnly}
	if tmp.sliceBytes != img.sliceBytes || tmp.l2c.max != img.l2c.max || tmp.rc.max != img.rc.max {
		r.l2c, r.rc, r.sliceBytes, r.sliceEntries = tmp.l2c, tmp.rc, tmp.sliceBytes, tmp.sliceEntries
	}
	writable := !img.readOnly && !img.closed.Load() && !img.broken.Load()
	if writable {
		if err := img.flushCaches(); err != nil {
			return nil, fmt.Errorf("Failed to flush the L2 table cache: %w", err)
		}
	}
	r.lazy = img.hdr.compat&compatLazyRefcounts != 0
	if o.LazyRefcounts != nil {
		r.lazy = *o.LazyRefcounts
	}
	if r.lazy && img.version.Load() < 3 {
		return nil, errors.New("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level")
	}
	if writable && (img.lazy && !r.lazy || o.ReadOnly) {
		if err := img.markCleanLocked(); err != nil {
			if !o.ReadOnly {
				return nil, fmt.Errorf("Failed to disable lazy refcounts: %w", err)
			}
			return nil, err
		}
	}
	return r, nil
}

// markCleanLocked is qcow2_mark_clean: write everything back, then clear
// the dirty bit lazy refcounts set.
func (img *Image) markCleanLocked() error {
	if err := img.flushAll(); err != nil {
		return err
	}
	if img.hdr.incompat&incompatDirty != 0 {
		if err := img.writeIncompat(img.hdr.incompat &^ incompatDirty); err != nil {
			return err
		}
		return img.file.Flush()
	}
	return nil
}

// Commit switches to the new options. It does no I/O: the image is
// quiescent, and new caches replace the old ones only if nothing was
// written since the prepare flushed them.
func (r *Reopen) Commit() {
	img := r.img
	defer img.lockExclusive()()
	if r.l2c != nil && img.l2c.nDirty == 0 && img.rc.nDirty == 0 {
		img.l2c, img.rc = r.l2c, r.rc
		img.sliceBytes, img.sliceEntries = r.sliceBytes, r.sliceEntries
	}
	img.lazy = r.lazy
	img.readOnly = r.readOnly
}

// Abort drops the prepared reopen; what the prepare wrote back stays
// written, as in QEMU.
func (r *Reopen) Abort() {}

// SetFile makes the image use another device for its file (a reopen that
// switched the file child). The image must be quiescent.
func (img *Image) SetFile(dev blockio.Device) {
	defer img.lockExclusive()()
	img.file, img.debug = dev, blockio.DebugEvents(dev)
}
