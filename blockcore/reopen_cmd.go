package blockcore

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"

	"blockd/schema"
)

// registerReopen declares blockdev-reopen and its predecessor
// x-blockdev-reopen, one implementation behind both.
func (g *Graph) registerReopen(r *schema.Registry) {
	schema.Define(r, "blockdev-reopen", func(_ context.Context, a *schema.BlockdevReopenArgs) (schema.Empty, error) {
		list := make([]*schema.BlockdevOptions, len(a.Options))
		for i := range a.Options {
			list[i] = &a.Options[i]
		}
		return schema.Empty{}, g.Reopen(list)
	}, schema.OnArgumentError(func(_ context.Context, raw json.RawMessage, err *schema.Error) error {
		var a struct{ Options []json.RawMessage }
		if json.Unmarshal(raw, &a) != nil {
			return nil
		}
		return g.driverChange(a.Options, err)
	}))
	schema.Define(r, "x-blockdev-reopen", func(_ context.Context, a *schema.BlockdevOptions) (schema.Empty, error) {
		return schema.Empty{}, g.Reopen([]*schema.BlockdevOptions{a})
	}, schema.Features("unstable"), schema.OnArgumentError(func(_ context.Context, raw json.RawMessage, err *schema.Error) error {
		return g.driverChange([]json.RawMessage{raw}, err)
	}))
}

// driverChange answers a reopen whose options name a driver QEMU knows
// but blockd lacks: QEMU's schema accepts the name and the reopen then
// refuses to change a node's driver, so that is the answer for a node
// with another driver. nil leaves the decoding error.
func (g *Graph) driverChange(options []json.RawMessage, err *schema.Error) error {
	if !strings.Contains(err.Desc, "driver' does not accept value") {
		return nil
	}
	for _, o := range options {
		opts := newFlat()
		dec := json.NewDecoder(bytes.NewReader(o))
		dec.UseNumber()
		if opts.readObject(dec, "") != nil {
			return nil
		}
		driver, _ := opts.get("driver")
		name, _ := opts.get("node-name")
		nn, _ := name.(string)
		dn, _ := driver.(string)
		n := g.nodes[nn]
		if n == nil || dn == n.drv.Name || !slices.Contains(qemuDrivers, dn) {
			continue
		}
		// What bdrv_reopen_prepare checks before comparing values.
		if err := checkReset(n, opts); err != nil {
			return err
		}
		return schema.Errorf("Cannot change the option 'driver'")
	}
	return nil
}

// qemuDrivers is qemu-storage-daemon 7.2's BlockdevDriver enum.
var qemuDrivers = []string{"blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs",
	"cloop", "compress", "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access",
	"ftp", "ftps", "gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "luks",
	"nbd", "nfs", "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2",
	"qed", "quorum", "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk",
	"vpc", "vvfat"}
