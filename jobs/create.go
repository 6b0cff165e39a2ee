package jobs

import (
	"context"
	"errors"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/drivers/file"
	"blockd/drivers/luks"
	"blockd/drivers/qcow2"
	"blockd/drivers/rbd"
	"blockd/schema"
)

// Jobs that are not block jobs (blockdev-create's "create", and
// x-blockdev-amend's "amend") announce only JOB_STATUS_CHANGE, are
// invisible to query-block-jobs and the block-job-* commands, and are
// dismissed by hand (JOB_MANUAL_DISMISS).

// isBlockJob reports whether the job is a block job (BLOCK_JOB_* events).
func (j *Job) isBlockJob() bool { return j.typ != "create" && j.typ != "amend" }

// oneShot is a job whose work is one call: setup (on the owner, before
// the worker starts) may already have failed; work runs in the worker.
// Progress is 0/1 until the work returns, then 1/1 whatever the outcome,
// as QEMU's blockdev_create_run and blockdev_amend_run report it.
type oneShot struct {
	m     *Manager
	err   error        // setup failure
	work  func() error // I/O, in the worker
	edges []*blockcore.Child
	// quick: the job ends before the command's reply, as QEMU's does
	// when its coroutine never yields: x-blockdev-amend of qcow2 (no I/O
	// that can block), rbd creation (librbd's calls block the coroutine).
	quick bool
}

func (o *oneShot) Run(j *Job) error {
	j.SetTotal(1)
	err := o.err
	if err == nil {
		err = o.work()
	}
	j.Progress(1)
	if err != nil {
		// The job's error is the whole message, not just an errno's text.
		return errors.New(err.Error())
	}
	return nil
}

func (o *oneShot) Prepare() error { return nil }
func (o *oneShot) Abort()         {}
func (o *oneShot) Clean() {
	for _, c := range o.edges {
		o.m.g.DetachUser(c)
	}
	o.edges = nil
}
func (o *oneShot) CanComplete() bool          { return false }
func (o *oneShot) SoftCancelAfterReady() bool { return false }

// startOneShot creates and starts a one-shot job. A job whose setup
// failed ends before the command's reply, as QEMU's does when its
// coroutine fails before its first I/O.
func (m *Manager) startOneShot(id string, typ schema.JobType, o *oneShot) error {
	j, err := m.create(id, typ, 0, true, false)
	if err != nil {
		for _, c := range o.edges {
			m.g.DetachUser(c)
		}
		return err
	}
	m.start(j, o)
	if o.err != nil || o.quick {
		m.waitWorker(j)
	}
	return nil
}

// registerLifecycle declares blockdev-create and x-blockdev-amend.
func (m *Manager) registerLifecycle(r *schema.Registry) {
	schema.Define(r, "blockdev-create", func(_ context.Context, a *schema.BlockdevCreateArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockdevCreate(a)
	})
	schema.Define(r, "x-blockdev-amend", func(_ context.Context, a *schema.BlockdevAmendArgs) (schema.Empty, error) {
		return schema.Empty{}, m.blockdevAmend(a)
	}, schema.Features("unstable"))
}

// blockdevAmend is qmp_x_blockdev_amend: checks in QEMU's order, then an
// amend job (type amend, dismissed by hand) that runs the driver's
// amend.
func (m *Manager) blockdevAmend(a *schema.BlockdevAmendArgs) error {
	n := m.g.Lookup(a.NodeName)
	if n == nil {
		return schema.Errorf("Cannot find device='' nor node-name='%s'", a.NodeName)
	}
	if string(a.Options.Driver) != n.Driver().Name {
		return schema.Errorf("x-blockdev-amend doesn't support changing the block driver")
	}
	am, ok := n.Impl().(blockcore.Amender)
	if !ok {
		return schema.Errorf("Driver does not support x-blockdev-amend")
	}
	opts, force := a.Options, a.Force != nil && *a.Force
	o := &oneShot{m: m, quick: true, work: func() error { return am.Amend(&opts, force) }}
	return m.startOneShot(a.JobID, "amend", o)
}

// blockdevCreate is qmp_blockdev_create: drivers without a creation
// function are refused; otherwise a create job runs the driver's.
func (m *Manager) blockdevCreate(a *schema.BlockdevCreateArgs) error {
	o := &oneShot{m: m}
	switch {
	case a.Options.File != nil:
		f := a.Options.File
		opts := file.CreateOptions{Filename: f.Filename, Size: int64(f.Size), NoCOW: f.Nocow != nil && *f.Nocow}
		if f.Preallocation != nil {
			opts.Preallocation = string(*f.Preallocation)
		}
		o.work = func() error { return file.Create(opts) }
	case a.Options.Qcow2 != nil:
		m.setupQcow2Create(o, a.Options.Qcow2)
	case a.Options.Rbd != nil:
		r, secrets := a.Options.Rbd, m.g.Objects()
		o.work = func() error { return rbd.Create(r, secrets) }
		o.quick = true
	case a.Options.Luks != nil:
		m.setupLUKSCreate(o, a.Options.Luks)
	default:
		return schema.Errorf("Driver does not support blockdev-create")
	}
	return m.startOneShot(a.JobID, "create", o)
}

// setupQcow2Create resolves the file node, checks the options and takes
// the creation permissions (write and resize, sharing everything, as
// qcow2_co_create's backend). Failures are recorded in o.err.
func (m *Manager) setupQcow2Create(o *oneShot, q *schema.BlockdevCreateOptionsQcow2) {
	if q.File.Reference == nil {
		o.err = schema.Errorf("blockd creates qcow2 images only on an existing node: 'file' must name it")
		return
	}
	n := m.g.Lookup(*q.File.Reference)
	if n == nil {
		o.err = schema.Errorf("Cannot find device='%s' nor node-name='%s'", *q.File.Reference, *q.File.Reference)
		return
	}
	co := qcow2.CreateOptions{Size: int64(q.Size)}
	if q.Version != nil && *q.Version == "v2" {
		co.Compat = "0.10"
	}
	if q.ClusterSize != nil {
		co.ClusterSize = int64(*q.ClusterSize)
		if co.ClusterSize == 0 {
			co.ClusterSize = -1 // refused by the check, as QEMU refuses 0
		}
	}
	if q.BackingFile != nil {
		co.BackingFile = *q.BackingFile
	}
	if q.BackingFmt != nil {
		co.BackingFormat = string(*q.BackingFmt)
	}
	co.LazyRefcounts = q.LazyRefcounts != nil && *q.LazyRefcounts
	co.ExtendedL2 = q.ExtendedL2 != nil && *q.ExtendedL2
	if q.RefcountBits != nil {
		co.RefcountBits = int(*q.RefcountBits)
		if co.RefcountBits <= 0 {
			co.RefcountBits = 3 // refused with QEMU's text
		}
	}
	if q.CompressionType != nil {
		co.CompressionType = string(*q.CompressionType)
	}
	prealloc := "off"
	if q.Preallocation != nil {
		prealloc = string(*q.Preallocation)
	}
	if err := qcow2.CheckCreateOptions(co); err != nil {
		o.err = err
		return
	}
	switch {
	case co.BackingFile != "" && prealloc != "off" && !co.ExtendedL2:
		o.err = schema.Errorf("Backing file and preallocation can only be used at the same time if extended_l2 is on")
	case prealloc != "off":
		o.err = schema.Errorf("blockd creates qcow2 images with preallocation 'off' only")
	case q.DataFile != nil || q.DataFileRaw != nil && *q.DataFileRaw:
		o.err = schema.Errorf("blockd does not support qcow2 external data files ('data-file')")
	case q.Encrypt != nil:
		o.err = schema.Errorf("blockd does not support encrypted qcow2 images ('encrypt')")
	}
	if o.err != nil {
		return
	}
	c, err := m.g.AttachUser(blockcore.Backend{}, n, "root", blockio.PermWrite|blockio.PermResize, blockio.PermAll)
	if err != nil {
		o.err = err
		return
	}
	o.edges = append(o.edges, c)
	dev := n.IO()
	o.work = func() error { return qcow2.Create(dev, co) }
}

// setupLUKSCreate resolves the file node and the passphrase and takes
// the creation permissions, as block_crypto_co_create_luks; the header
// is written by the job.
func (m *Manager) setupLUKSCreate(o *oneShot, q *schema.BlockdevCreateOptionsLUKS) {
	if q.File.Reference == nil {
		o.err = schema.Errorf("blockd creates luks images only on an existing node: 'file' must name it")
		return
	}
	n := m.g.Lookup(*q.File.Reference)
	if n == nil {
		o.err = schema.Errorf("Cannot find device='%s' nor node-name='%s'", *q.File.Reference, *q.File.Reference)
		return
	}
	if q.Preallocation != nil && *q.Preallocation != "off" {
		o.err = schema.Errorf("blockd creates luks images with preallocation 'off' only")
		return
	}
	// The passphrase is looked up by the job, whose failure follows the
	// command's reply, as in qemu-storage-daemon.
	var pass []byte
	var passErr error
	switch store := m.g.Objects(); {
	case q.KeySecret == nil:
		passErr = schema.Errorf("Parameter 'key-secret' is required for cipher")
	case store == nil:
		passErr = schema.Errorf("No secret with id '%s'", *q.KeySecret)
	default:
		pass, passErr = store.Secret(*q.KeySecret)
	}
	co := luks.CreateOptions{}
	if q.CipherAlg != nil {
		co.CipherAlg = string(*q.CipherAlg)
	}
	if q.CipherMode != nil {
		co.CipherMode = string(*q.CipherMode)
	}
	if q.IvgenAlg != nil {
		co.IvgenAlg = string(*q.IvgenAlg)
	}
	if q.IvgenHashAlg != nil {
		co.IvgenHashAlg = string(*q.IvgenHashAlg)
	}
	if q.HashAlg != nil {
		co.HashAlg = string(*q.HashAlg)
	}
	if q.IterTime != nil {
		co.IterTime = *q.IterTime
	}
	c, err := m.g.AttachUser(blockcore.Backend{}, n, "root", blockio.PermWrite|blockio.PermResize, blockio.PermAll)
	if err != nil {
		o.err = err
		return
	}
	o.edges = append(o.edges, c)
	dev, size := n.IO(), int64(q.Size)
	o.work = func() error {
		if passErr != nil {
			return passErr
		}
		return luks.Create(dev, size, pass, co)
	}
}
