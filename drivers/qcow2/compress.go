package qcow2

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
	"syscall"

	kflate "github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Compressed clusters: zlib clusters are raw deflate streams limited to a
// 4 KiB window (what inflateInit2 with window bits -12 accepts) and zstd
// clusters one zstd frame. On reading, both may be followed by unrelated
// bytes up to the end of the last 512-byte sector, so decoding stops as
// soon as a full cluster has been produced instead of expecting the
// stream to end there. Writing (writeCompressed) packs streams byte by
// byte into shared host clusters; a write to a compressed cluster copies
// it to a normal cluster.

type zlibState struct {
	src bytes.Reader
	r   io.ReadCloser
}

type zstdState struct {
	src bytes.Reader
	d   *zstd.Decoder
}

var (
	zlibPool = sync.Pool{New: func() any {
		st := &zlibState{}
		st.r = flate.NewReader(&st.src)
		return st
	}}
	zstdPool = sync.Pool{New: func() any {
		st := &zstdState{}
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil
		}
		st.d = d
		return st
	}}
)

// compCache keeps the last decompressed cluster, so that sequential small
// reads of a compressed image decompress each cluster once.
type compCache struct {
	mu    sync.Mutex
	entry uint64 // L2 entry of the cached cluster; 0 = empty
	gen   uint64
	buf   []byte
}

func (c *compCache) get(entry uint64, p []byte, inCl int64) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entry == entry && entry != 0 {
		copy(p, c.buf[inCl:])
		return c.gen, true
	}
	return c.gen, false
}

func (c *compCache) put(entry uint64, gen uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.buf == nil {
		c.buf = make([]byte, len(data))
	}
	copy(c.buf, data)
	c.entry = entry
}

// invalidate forgets the cached cluster (host clusters were freed).
func (c *compCache) invalidate() {
	c.mu.Lock()
	c.entry = 0
	c.gen++
	c.mu.Unlock()
}

// readCompressed copies guest bytes of a compressed cluster, starting
// inCl bytes into the cluster, into p.
func (img *Image) readCompressed(p []byte, entry uint64, inCl int64) error {
	gen, ok := img.comp.get(entry, p, inCl)
	if ok {
		return nil
	}
	b := img.getBuf()
	defer img.putBuf(b)
	if err := img.decompressCluster(*b, entry); err != nil {
		return err
	}
	copy(p, (*b)[inCl:])
	img.comp.put(entry, gen, *b)
	return nil
}

// decompressCluster fills out (one cluster) from the compressed cluster
// described by entry.
func (img *Image) decompressCluster(out []byte, entry uint64) error {
	off, size := img.g.compressedRange(entry)
	in := make([]byte, size)
	if err := img.readFileClamped(in, off); err != nil {
		return err
	}
	var err error
	switch img.compression.Load() {
	case compressionZlib:
		st := zlibPool.Get().(*zlibState)
		st.src.Reset(in)
		if err = st.r.(flate.Resetter).Reset(&st.src, nil); err == nil {
			_, err = io.ReadFull(st.r, out)
		}
		zlibPool.Put(st)
	case compressionZstd:
		st, _ := zstdPool.Get().(*zstdState)
		if st == nil {
			return fmt.Errorf("qcow2: cannot create zstd decoder")
		}
		st.src.Reset(in)
		if err = st.d.Reset(&st.src); err == nil {
			_, err = io.ReadFull(st.d, out)
		}
		st.src.Reset(nil)
		zstdPool.Put(st)
	}
	if err != nil {
		return &decompressError{off: off, err: err}
	}
	return nil
}

// decompressError keeps QEMU's wording and is an EIO to errors.Is, as
// QEMU's read fails with -EIO.
type decompressError struct {
	off int64
	err error
}

func (e *decompressError) Error() string {
	return fmt.Sprintf("qcow2: could not decompress cluster at host offset %#x: %v (Input/output error)", e.off, e.err)
}

func (e *decompressError) Unwrap() []error { return []error{e.err, syscall.EIO} }

// zlibWindow is the deflate window QEMU's inflate is set up for.
const zlibWindow = 4096

type zlibWriter struct {
	dst limitedBuf
	w   *kflate.Writer
}

var (
	zlibWriterPool = sync.Pool{New: func() any {
		st := &zlibWriter{}
		w, err := kflate.NewWriterWindow(&st.dst, zlibWindow)
		if err != nil {
			return nil
		}
		st.w = w
		return st
	}}
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		// No checksum: the frame is as small as QEMU writes it.
		return zstd.NewWriter(nil, zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
	})
)

// limitedBuf is an io.Writer into a fixed buffer that fails once full:
// a stream that does not fit is not worth compressing.
type limitedBuf struct {
	b []byte
	n int
}

var errNoFit = fmt.Errorf("compressed data does not fit")

func (l *limitedBuf) Write(p []byte) (int, error) {
	if len(p) > len(l.b)-l.n {
		return 0, errNoFit
	}
	l.n += copy(l.b[l.n:], p)
	return len(p), nil
}

// compressCluster compresses src into dst and returns the stream length,
// or 0 when the stream would not be shorter than len(dst) bytes.
func (img *Image) compressCluster(dst, src []byte) (int, error) {
	switch img.compression.Load() {
	case compressionZlib:
		st, _ := zlibWriterPool.Get().(*zlibWriter)
		if st == nil {
			return 0, fmt.Errorf("qcow2: cannot create deflate encoder")
		}
		defer func() { st.dst = limitedBuf{}; zlibWriterPool.Put(st) }()
		st.dst = limitedBuf{b: dst}
		st.w.Reset(&st.dst)
		if _, err := st.w.Write(src); err != nil {
			return 0, nil
		}
		if err := st.w.Close(); err != nil {
			return 0, nil
		}
		return st.dst.n, nil
	case compressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return 0, fmt.Errorf("qcow2: cannot create zstd encoder: %w", err)
		}
		out := enc.EncodeAll(src, dst[:0])
		if len(out) > len(dst) || &out[0] != &dst[0] {
			return 0, nil
		}
		return len(out), nil
	}
	return 0, fmt.Errorf("qcow2: unknown compression type %d", img.compression.Load())
}
