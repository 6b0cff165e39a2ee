package rbd

import (
	"math/bits"

	"blockd/blockcore"
	"blockd/schema"
)

// Create is qemu_rbd_do_create (blockdev-create): check the options,
// connect and create the image with the given object size (0: librbd's
// default). It runs in a create job's worker.
func Create(o *schema.BlockdevCreateOptionsRbd, secrets blockcore.ObjectStore) error {
	if o.Location.Snapshot != nil {
		return schema.Errorf("Can't use snapshot name for image creation")
	}
	if o.Encrypt != nil {
		return schema.Errorf("blockd does not support encrypted rbd images ('encrypt')")
	}
	order := 0
	if o.ClusterSize != nil {
		objsize := uint64(*o.ClusterSize)
		if objsize&(objsize-1) != 0 {
			return schema.Errorf("obj size needs to be power of 2")
		}
		if objsize < 4096 {
			return schema.Errorf("obj size too small")
		}
		order = bits.TrailingZeros64(objsize)
	}
	// Creation never caches: nothing is written through this handle.
	c, err := connect(&o.Location, false, secrets)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.ioctx.CreateImage(o.Location.Image, uint64(o.Size), order); err != nil {
		return errnoErrorf(err, "error rbd create")
	}
	return nil
}
