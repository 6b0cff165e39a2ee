// Package blkverify owns the blkverify test driver: every request goes to
// both the image under test ("test") and a raw reference image ("raw");
// reads must return the same data and every request the same outcome.
// Where QEMU prints the mismatch and exits the whole process, blockd logs
// it and fails the request with EIO, so one failed check does not take
// down the daemon's other clients.
package blkverify

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"blockd/blockcore"
	"blockd/blockio"
)

func init() {
	blockcore.RegisterDriver(&blockcore.Driver{Name: "blkverify", Protocol: true, OwnChildren: true, Filter: true,
		IsFilter: true, FileChild: "raw", Open: open})
}

type node struct {
	raw, test         blockio.Device
	rawNode, testNode *blockcore.Node
	log               *zap.Logger
}

func open(oc *blockcore.OpenContext) (blockcore.Impl, error) {
	t := oc.Children[0]
	return &node{raw: oc.File.Node.IO(), test: t.Node.IO(), rawNode: oc.File.Node, testNode: t.Node,
		log: oc.Graph.Logger()}, nil
}

// both runs f on the test image and the raw image at once and checks
// that they agree on the outcome (blkverify_co_prwv). f is told which
// image it runs on: both may be the same node.
func (n *node) both(op string, off, length int64, f func(dev blockio.Device, isRaw bool) error) error {
	var errTest, errRaw error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		errTest = f(n.test, false)
	}()
	errRaw = f(n.raw, true)
	wg.Wait()
	if (errTest == nil) != (errRaw == nil) || errTest != nil && errno(errTest) != errno(errRaw) {
		return n.mismatch(fmt.Sprintf("%s offset=%d bytes=%d return value mismatch %v != %v", op, off, length, errTest, errRaw))
	}
	return errTest
}

func errno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// mismatch is blkverify_err: logged, and the request fails.
func (n *node) mismatch(msg string) error {
	n.log.Error("blkverify: " + msg)
	return fmt.Errorf("blkverify: %s: %w", msg, syscall.EIO)
}

func (n *node) ReadAt(p []byte, off int64) error {
	raw := make([]byte, len(p))
	err := n.both("read", off, int64(len(p)), func(dev blockio.Device, isRaw bool) error {
		if isRaw {
			return dev.ReadAt(raw, off)
		}
		return dev.ReadAt(p, off)
	})
	if err != nil {
		return err
	}
	if !bytes.Equal(p, raw) {
		i := 0
		for i < len(p) && p[i] == raw[i] {
			i++
		}
		return n.mismatch(fmt.Sprintf("read offset=%d bytes=%d contents mismatch at offset %d", off, len(p), off+int64(i)))
	}
	return nil
}

func (n *node) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	return n.both("write", off, int64(len(p)), func(dev blockio.Device, _ bool) error { return dev.WriteAt(p, off, f) })
}

func (n *node) WriteZeroes(off, length int64, f blockio.WriteFlags) error {
	return n.both("write", off, length, func(dev blockio.Device, _ bool) error { return dev.WriteZeroes(off, length, f) })
}

// Discard: blkverify has no discard; a discard is only advice.
func (n *node) Discard(off, length int64) error { return nil }

// Flush: only the test image is flushed (blkverify_co_flush).
func (n *node) Flush() error { return n.test.Flush() }

func (n *node) BlockStatus(off, length int64) (blockio.Status, error) {
	return n.raw.BlockStatus(off, length)
}

// Backing: block status is raw's, so the chain goes on below raw.
func (n *node) Backing() blockio.Device { return blockio.BackingOf(n.raw) }

// Size is the test image's (blkverify_co_getlength).
func (n *node) Size() (int64, error)         { return n.test.Size() }
func (n *node) Truncate(int64) error         { return blockio.ErrNotSupported }
func (n *node) Close() error                 { return nil }
func (n *node) AllocatedSize() (int64, bool) { return 0, false }

// ExactFilename is blkverify_refresh_filename: "blkverify:RAW:TEST" when
// both images have a plain filename.
func (n *node) ExactFilename() string {
	r, t := blockcore.Filename(n.rawNode), blockcore.Filename(n.testNode)
	if strings.HasPrefix(r, "json:") || strings.HasPrefix(t, "json:") {
		return ""
	}
	return "blkverify:" + r + ":" + t
}
