package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockd/blockio"
	"blockd/nbd"
)

// memDev is an in-memory device whose all-zero 4 KiB blocks are holes.
// With gate set, reads wait until that many are inside at once.
type memDev struct {
	mu   sync.Mutex
	buf  []byte
	gate *barrier
}

func newMem(size int) *memDev { return &memDev{buf: make([]byte, size)} }

func (m *memDev) ReadAt(p []byte, off int64) error {
	if m.gate != nil {
		m.gate.wait()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := blockio.CheckRange(off, int64(len(p)), int64(len(m.buf))); err != nil {
		return err
	}
	copy(p, m.buf[off:])
	return nil
}

func (m *memDev) WriteAt(p []byte, off int64, _ blockio.WriteFlags) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := blockio.CheckRange(off, int64(len(p)), int64(len(m.buf))); err != nil {
		return err
	}
	copy(m.buf[off:], p)
	return nil
}

func (m *memDev) WriteZeroes(off, n int64, f blockio.WriteFlags) error {
	return m.WriteAt(make([]byte, n), off, f)
}
func (m *memDev) Discard(off, n int64) error { return m.WriteZeroes(off, n, 0) }
func (m *memDev) Flush() error               { return nil }
func (m *memDev) Size() (int64, error)       { return int64(len(m.buf)), nil }
func (m *memDev) Truncate(int64) error       { return blockio.ErrNotSupported }

func (m *memDev) BlockStatus(off, n int64) (blockio.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	zero := func(o int64) bool {
		e := min((o|4095)+1, int64(len(m.buf)))
		return !bytes.ContainsFunc(m.buf[o:e], func(r rune) bool { return r != 0 })
	}
	z := zero(off)
	o := off
	for o < off+n && zero(o) == z {
		o = min((o|4095)+1, off+n)
	}
	f := blockio.StatusData | blockio.StatusAllocated
	if z {
		f = blockio.StatusZero | blockio.StatusAllocated
	}
	return blockio.Status{Flags: f, Length: o - off}, nil
}

// barrier releases its waiters once n are waiting together.
type barrier struct {
	mu      sync.Mutex
	n, in   int
	release chan struct{}
}

func (b *barrier) wait() {
	b.mu.Lock()
	b.in++
	ch := b.release
	if b.in == b.n {
		close(ch)
	}
	b.mu.Unlock()
	<-ch
}

// serve runs blockd's NBD server for dev on a Unix socket at path.
func serve(t *testing.T, path string, dev *memDev) *nbd.Server {
	t.Helper()
	s := nbd.NewServer(nbd.Options{})
	if err := s.AddExport(&nbd.Export{Name: "exp", Dev: dev, Size: int64(len(dev.buf))}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	return s
}

func connect(t *testing.T, path string, delay time.Duration) *Client {
	t.Helper()
	cl, err := Connect(Config{Addr: Address{Unix: path}, Export: "exp", Context: nbd.ContextBaseAllocation,
		ReconnectDelay: delay, HandshakeTimeout: 10 * time.Second}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// leakCheck fails t when goroutines started during the test outlive it.
func leakCheck(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		for i := 0; i < 200; i++ {
			if runtime.NumGoroutine() <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}

func TestReadWriteConcurrent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(8 << 20)
	srv := serve(t, sock, dev)
	defer srv.Close()
	cl := connect(t, sock, 0)
	if !cl.Info.Structured {
		t.Fatal("structured replies not negotiated")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			base := int64(g) << 20
			for i := 0; i < 50; i++ {
				off := base + r.Int64N(1<<20-70000)
				p := make([]byte, 1+r.IntN(65536))
				for j := range p {
					p[j] = byte(r.Uint32())
				}
				if err := cl.WriteAt(p, off, 0); err != nil {
					errs <- err
					return
				}
				q := make([]byte, len(p))
				if err := cl.ReadAt(q, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, q) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// What the client wrote is what the server's device holds.
	whole := make([]byte, len(dev.buf))
	if err := cl.ReadAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(whole, dev.buf) {
		t.Fatal("device and client disagree")
	}
}

// Four reads are inside the server's device at once over one connection:
// the client does not wait for one reply before sending the next request.
func TestRequestsInFlight(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(1 << 20)
	srv := serve(t, sock, dev)
	defer srv.Close()
	cl := connect(t, sock, 0)
	dev.gate = &barrier{n: 4, release: make(chan struct{})}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 4096)
			if err := cl.ReadAt(p, int64(i)*4096); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestBlockStatusAndHoles(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(1 << 20)
	for i := 64 << 10; i < 128<<10; i++ {
		dev.buf[i] = 0xa5
	}
	srv := serve(t, sock, dev)
	defer srv.Close()
	cl := connect(t, sock, 0)
	st, err := cl.BlockStatus(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Flags&blockio.StatusZero == 0 || st.Flags&blockio.StatusData != 0 || st.Length != 64<<10 {
		t.Fatalf("hole: %+v", st)
	}
	st, err = cl.BlockStatus(64<<10, 1<<20-64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if st.Flags&blockio.StatusData == 0 || st.Length != 64<<10 {
		t.Fatalf("data: %+v", st)
	}
	// A read across hole and data (hole chunks, then a data chunk).
	p := bytes.Repeat([]byte{1}, 256<<10)
	if err := cl.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, dev.buf[:256<<10]) {
		t.Fatal("read across holes differs")
	}
	// An unaligned read at the end of the export.
	q := make([]byte, 3)
	if err := cl.ReadAt(q, 1<<20-3); err != nil {
		t.Fatal(err)
	}
	if err := cl.ReadAt(q, 1<<20-2); !errors.Is(err, blockio.ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
}

// The server goes away and comes back within reconnect-delay: a read
// issued while it is away waits and succeeds. Gone for longer than the
// delay, requests fail with EIO, and succeed again once it is back.
func TestReconnect(t *testing.T) {
	defer leakCheck(t)()
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(1 << 20)
	copy(dev.buf[4096:], "hello")
	srv := serve(t, sock, dev)
	cl := connect(t, sock, 3*time.Second)
	p := make([]byte, 5)
	if err := cl.ReadAt(p, 4096); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	done := make(chan error, 1)
	go func() { done <- cl.ReadAt(p, 4096) }()
	srv = serve(t, sock, dev)
	if err := <-done; err != nil || string(p) != "hello" {
		t.Fatalf("read across a restart: %v %q", err, p)
	}
	if err := cl.WriteAt([]byte("again"), 8192, blockio.FUA); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	// Nobody listens now: after the delay the read fails cleanly.
	err := cl.ReadAt(p, 4096)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with the server gone: %v", err)
	}
	if err := cl.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with the server gone: %v", err)
	}
	// The reconnect loop goes on: the server's return heals the node.
	srv = serve(t, sock, dev)
	defer srv.Close()
	for i := 0; ; i++ {
		err := cl.ReadAt(p, 8192)
		if err == nil && string(p) == "again" {
			break
		}
		if i == 500 {
			t.Fatalf("no reconnect: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl.Close()
	srv.Close()
}

// fakeServer negotiates like a real server (structured replies,
// base:allocation as context 7) and then runs misbehave on the
// transmission phase.
func fakeServer(t *testing.T, misbehave func(nc net.Conn, r io.Reader)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "f")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				if negotiateFake(nc) == nil {
					misbehave(nc, nc)
				}
			}()
		}
	}()
	return sock
}

func negotiateFake(nc net.Conn) error {
	var b []byte
	b = binary.BigEndian.AppendUint64(b, nbd.MagicInit)
	b = binary.BigEndian.AppendUint64(b, nbd.MagicOpt)
	b = binary.BigEndian.AppendUint16(b, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
	if _, err := nc.Write(b); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(nc, cf[:]); err != nil {
		return err
	}
	for {
		opt, n, err := nbd.ReadOptionHeader(nc)
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(nc, make([]byte, n)); err != nil {
			return err
		}
		var out []byte
		switch opt {
		case nbd.OptStructuredRepl:
			out = nbd.AppendOptionReply(out, opt, nbd.RepAck, nil)
		case nbd.OptSetMetaCtx:
			p := binary.BigEndian.AppendUint32(nil, 7)
			out = nbd.AppendOptionReply(out, opt, nbd.RepMetaCtx, append(p, nbd.ContextBaseAllocation...))
			out = nbd.AppendOptionReply(out, opt, nbd.RepAck, nil)
		case nbd.OptGo:
			p := binary.BigEndian.AppendUint16(nil, nbd.InfoExport)
			p = binary.BigEndian.AppendUint64(p, 1<<20)
			p = binary.BigEndian.AppendUint16(p, nbd.FlagHasFlags|nbd.FlagSendFlush)
			out = nbd.AppendOptionReply(out, opt, nbd.RepInfo, p)
			out = nbd.AppendOptionReply(out, opt, nbd.RepAck, nil)
			_, err := nc.Write(out)
			return err
		default:
			out = nbd.AppendOptionReply(out, opt, nbd.RepErrUnsup, nil)
		}
		if _, err := nc.Write(out); err != nil {
			return err
		}
	}
}

// readReq reads one request header from the client.
func readReq(r io.Reader) (nbd.Request, error) {
	var h [nbd.RequestSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nbd.Request{}, err
	}
	return nbd.ParseRequest(h[:])
}

func TestHostileServers(t *testing.T) {
	chunk := func(flags, typ uint16, cookie uint64, payload []byte) []byte {
		return append(nbd.AppendChunkHeader(nil, flags, typ, cookie, uint32(len(payload))), payload...)
	}
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	cases := []struct {
		name  string
		reply func(req nbd.Request) []byte
		// hold keeps the connection open after the reply (a server that
		// has said something wrong and then nothing).
		hold bool
	}{
		{"garbage", func(nbd.Request) []byte { return []byte("HTTP/1.1 400 Bad Request\r\n\r\n") }, true},
		{"wrong handle", func(r nbd.Request) []byte { return nbd.AppendSimpleReply(nil, 0, r.Cookie+1) }, true},
		{"simple reply to structured read", func(r nbd.Request) []byte {
			return append(nbd.AppendSimpleReply(nil, 0, r.Cookie), make([]byte, r.Length)...)
		}, true},
		{"short read", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, nbd.ChunkOffsetData, r.Cookie, append(u64(r.Offset), make([]byte, r.Length)...))[:100]
		}, false},
		{"data outside the request", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, nbd.ChunkOffsetData, r.Cookie, append(u64(r.Offset+1), make([]byte, r.Length)...))
		}, true},
		{"partial data", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, nbd.ChunkOffsetData, r.Cookie, append(u64(r.Offset), make([]byte, r.Length/2)...))
		}, true},
		{"hole of wrong size", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, nbd.ChunkOffsetHole, r.Cookie, u64(r.Offset))
		}, true},
		{"unknown chunk type", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, 77, r.Cookie, nil)
		}, true},
		{"error chunk with errno 0", func(r nbd.Request) []byte {
			return chunk(nbd.ReplyFlagDone, nbd.ChunkError, r.Cookie, []byte{0, 0, 0, 0, 0, 0})
		}, true},
		{"huge error chunk", func(r nbd.Request) []byte {
			return nbd.AppendChunkHeader(nil, nbd.ReplyFlagDone, nbd.ChunkError, r.Cookie, 1<<31)
		}, true},
		{"hang up", func(nbd.Request) []byte { return nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(leakCheck(t)) // runs last, after the server's cleanup
			sock := fakeServer(t, func(nc net.Conn, r io.Reader) {
				req, err := readReq(r)
				if err != nil || req.Type == nbd.CmdDisc {
					return
				}
				_, _ = nc.Write(tc.reply(req))
				if tc.hold {
					_, _ = io.Copy(io.Discard, r)
				}
			})
			cl := connect(t, sock, 0)
			err := cl.ReadAt(make([]byte, 4096), 0)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read: %v, want EIO", err)
			}
			// The node stays failed, cleanly.
			if err := cl.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("second read: %v", err)
			}
			cl.Close()
		})
	}
}

// A server error reaches the caller as its errno, and the connection
// stays usable.
func TestServerErrorChunk(t *testing.T) {
	sock := fakeServer(t, func(nc net.Conn, r io.Reader) {
		for {
			req, err := readReq(r)
			if err != nil {
				return
			}
			msg := "no space"
			p := binary.BigEndian.AppendUint32(nil, nbd.ENOSPC)
			p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
			p = append(p, msg...)
			b := nbd.AppendChunkHeader(nil, nbd.ReplyFlagDone, nbd.ChunkError, req.Cookie, uint32(len(p)))
			if _, err := nc.Write(append(b, p...)); err != nil {
				return
			}
		}
	})
	cl := connect(t, sock, 0)
	for i := 0; i < 2; i++ {
		if err := cl.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("read %d: %v, want ENOSPC", i, err)
		}
	}
}

func TestHandshakeFailures(t *testing.T) {
	defer leakCheck(t)()
	dir := t.TempDir()
	// A server that closes during negotiation.
	sock := filepath.Join(dir, "close")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = nc.Write([]byte("NBDMAG"))
			nc.Close()
		}
	}()
	if _, err := Connect(Config{Addr: Address{Unix: sock}, HandshakeTimeout: time.Second}, 0); err == nil {
		t.Fatal("connected to a server that hung up")
	}
	// A server that accepts and says nothing: negotiation is bounded.
	sock3 := filepath.Join(dir, "silent")
	l3, err := net.Listen("unix", sock3)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		var held []net.Conn
		for {
			nc, err := l3.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, nc)
		}
	}()
	if _, err := Connect(Config{Addr: Address{Unix: sock3}, HandshakeTimeout: 200 * time.Millisecond}, 0); err == nil {
		t.Fatal("connected to a silent server")
	}
	l3.Close()
	<-accepted
	// Unknown export on blockd's server: QEMU's text.
	sock2 := filepath.Join(dir, "s")
	srv := serve(t, sock2, newMem(4096))
	defer srv.Close()
	_, err = Connect(Config{Addr: Address{Unix: sock2}, Export: "nosuch"}, 0)
	if err == nil || err.Error() != "Requested export not available" {
		t.Fatalf("unknown export: %v", err)
	}
	// Nobody listening: open-timeout retries, then the connect error.
	_, err = Connect(Config{Addr: Address{Unix: filepath.Join(dir, "none")}}, 300*time.Millisecond)
	if err == nil || err.Error() != "Failed to connect to '"+filepath.Join(dir, "none")+"': No such file or directory" {
		t.Fatalf("no server: %v", err)
	}
}

// x-dirty-bitmap: block status reports the bitmap's context instead of
// allocation; dirty ranges are holes (no data), as QEMU shows them.
func TestDirtyBitmapContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(1 << 20)
	s := nbd.NewServer(nbd.Options{})
	bm := nbd.Bitmap{Name: "b0", Status: func(off, length int64) (bool, int64, error) {
		if off < 64<<10 {
			return true, min(length, 64<<10-off), nil
		}
		return false, length, nil
	}}
	if err := s.AddExport(&nbd.Export{Name: "exp", Dev: dev, Size: int64(len(dev.buf)), Bitmaps: []nbd.Bitmap{bm}}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	defer s.Close()
	cl, err := Connect(Config{Addr: Address{Unix: sock}, Export: "exp", Context: "qemu:dirty-bitmap:b0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, ok := cl.Info.Contexts["qemu:dirty-bitmap:b0"]; !ok {
		t.Fatalf("context not negotiated: %v", cl.Info.Contexts)
	}
	st, err := cl.BlockStatus(0, 1<<20)
	if err != nil || st.Flags&blockio.StatusData != 0 || st.Length != 64<<10 {
		t.Fatalf("dirty range: %+v %v", st, err)
	}
	st, err = cl.BlockStatus(64<<10, 1<<20-64<<10)
	if err != nil || st.Flags&blockio.StatusData == 0 || st.Length != 1<<20-64<<10 {
		t.Fatalf("clean range: %+v %v", st, err)
	}
	// An unknown context is simply not selected.
	cl2, err := Connect(Config{Addr: Address{Unix: sock}, Export: "exp", Context: "qemu:dirty-bitmap:nosuch"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if len(cl2.Info.Contexts) != 0 {
		t.Fatalf("unknown context selected: %v", cl2.Info.Contexts)
	}
}

// A drained section does not wait for a reconnect: a request waiting for
// one fails with EIO when the node is drained (blockdev-del, graph
// changes), however long reconnect-delay is.
func TestDrainEndsReconnectWait(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	dev := newMem(1 << 20)
	srv := serve(t, sock, dev)
	cl := connect(t, sock, time.Hour)
	srv.Close()
	done := make(chan error, 1)
	go func() { done <- cl.ReadAt(make([]byte, 512), 0) }()
	cl.DrainBegin()
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatalf("read during a drain: %v", err)
	}
	cl.DrainEnd()
}
