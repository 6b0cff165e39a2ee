package nbd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"blockd/blockio"
)

// memDev is an in-memory device; holes are the all-zero 4 KiB blocks.
type memDev struct {
	mu  sync.Mutex
	buf []byte
}

func (m *memDev) ReadAt(p []byte, off int64) error {
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
	if f&blockio.NoFallback != 0 {
		return blockio.ErrNotSupported
	}
	return m.WriteAt(make([]byte, n), off, f)
}
func (m *memDev) Discard(off, n int64) error { return m.WriteZeroes(off, n, 0) }
func (m *memDev) Flush() error               { return nil }
func (m *memDev) BlockStatus(off, n int64) (blockio.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	zero := func(o int64) bool {
		e := min(o+4096&^4095, int64(len(m.buf)))
		if o&4095 != 0 {
			e = min((o|4095)+1, int64(len(m.buf)))
		}
		return bytes.Count(m.buf[o:e], []byte{0}) == int(e-o)
	}
	z := zero(off)
	l := int64(0)
	for o := off; o < off+n; {
		if zero(o) != z {
			break
		}
		next := min((o|4095)+1, off+n)
		l += next - o
		o = next
	}
	f := blockio.StatusData | blockio.StatusAllocated
	if z {
		f = blockio.StatusZero | blockio.StatusAllocated
	}
	return blockio.Status{Flags: f, Length: l}, nil
}
func (m *memDev) Size() (int64, error)     { return int64(len(m.buf)), nil }
func (m *memDev) Truncate(int64) error     { return blockio.ErrNotSupported }
func newMem(size int) *memDev              { return &memDev{buf: make([]byte, size)} }
func (m *memDev) export(n string) *Export  { return &Export{Name: n, Dev: m, Size: int64(len(m.buf))} }
func roExport(m *memDev, n string) *Export { e := m.export(n); e.ReadOnly = true; return e }

// serve starts a server on a Unix socket in a test directory.
func serve(t *testing.T, o Options, exps ...*Export) (*Server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(o)
	for _, e := range exps {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Close)
	return s, sock
}

func connect(t *testing.T, sock, name string) *Client {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Connect(nc, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func errnoOf(err error) uint32 {
	var e *ErrorReply
	if errors.As(err, &e) {
		return e.Errno
	}
	return 0
}

func TestReadWriteAndErrors(t *testing.T) {
	m := newMem(1 << 20)
	_, sock := serve(t, Options{}, m.export("rw"), roExport(newMem(4096), "ro"))
	c := connect(t, sock, "rw")
	if c.Size != 1<<20 {
		t.Fatalf("size %d", c.Size)
	}
	want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache | FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	if c.Flags != want {
		t.Fatalf("flags 0x%x, want 0x%x", c.Flags, want)
	}
	data := bytes.Repeat([]byte{0xab}, 3000)
	if err := c.WriteAt(data, 1001, CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3000)
	if err := c.ReadAt(got, 1001); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if !bytes.Equal(m.buf[1001:4001], data) {
		t.Fatal("write did not reach the device")
	}
	// Out of range: EINVAL (as QEMU answers); the connection goes on.
	if e := errnoOf(c.ReadAt(make([]byte, 2), 1<<20-1)); e != EINVAL {
		t.Fatalf("read past end: errno %d", e)
	}
	if e := errnoOf(c.WriteAt([]byte{1, 2}, 1<<20-1, 0)); e != EINVAL {
		t.Fatalf("write past end: errno %d", e)
	}
	if e := errnoOf(c.Do(Request{Type: 99}, nil, nil)); e != EINVAL {
		t.Fatalf("unknown command: errno %d", e)
	}
	if e := errnoOf(c.Do(Request{Type: CmdRead, Flags: CmdFlagDF, Length: 1}, nil, make([]byte, 1))); e != EINVAL {
		t.Fatalf("DF without structured replies: errno %d", e)
	}
	if e := errnoOf(c.Do(Request{Type: CmdBlockStatus, Length: 512}, nil, nil)); e != EINVAL {
		t.Fatalf("block status without contexts: errno %d", e)
	}
	if e := errnoOf(c.Do(Request{Type: CmdWriteZeroes, Flags: CmdFlagFastZero, Length: 4096}, nil, nil)); e != ENOTSUP {
		t.Fatalf("fast zero without a fast path: errno %d", e)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	r := connect(t, sock, "ro")
	if r.Flags&FlagReadOnly == 0 || r.Flags&FlagCanMultiConn == 0 || r.Flags&FlagSendTrim != 0 {
		t.Fatalf("read-only flags 0x%x", r.Flags)
	}
	if e := errnoOf(r.WriteAt([]byte{1}, 0, 0)); e != EPERM {
		t.Fatalf("write to read-only export: errno %d", e)
	}
	nc, _ := net.Dial("unix", sock)
	var oe *OptionError
	if _, err := Connect(nc, "nosuch"); !errors.As(err, &oe) || oe.Type != RepErrUnknown || oe.Msg != "export 'nosuch' not present" {
		t.Fatalf("unknown export: %v", err)
	}
	nc.Close()
}

// TestConcurrentRequestsOutOfOrder sends many requests before reading
// any reply: all are answered, each cookie once.
func TestConcurrentRequestsOutOfOrder(t *testing.T) {
	m := newMem(8 << 20)
	_, sock := serve(t, Options{MaxInFlight: 4}, m.export("x"))
	c := connect(t, sock, "x")
	const n = 64
	var b []byte
	for i := 0; i < n; i++ {
		b = AppendRequest(b, Request{Type: CmdWrite, Cookie: uint64(1000 + i), Offset: uint64(i) << 16, Length: 4096})
		b = append(b, bytes.Repeat([]byte{byte(i)}, 4096)...)
	}
	go func() { _, _ = c.nc.Write(b) }()
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		var h [16]byte
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			t.Fatal(err)
		}
		ck := binary.BigEndian.Uint64(h[8:])
		if binary.BigEndian.Uint32(h[4:]) != 0 || seen[ck] || ck < 1000 || ck >= 1000+n {
			t.Fatalf("bad reply %x", h)
		}
		seen[ck] = true
	}
	for i := 0; i < n; i++ {
		if m.buf[i<<16] != byte(i) {
			t.Fatalf("write %d missing", i)
		}
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestBadClients: garbage during negotiation, a disconnect in the middle
// of a write payload, many idle connections and a client that never
// reads its replies; another client keeps its service throughout, and
// when the bad ones are gone no goroutine or descriptor is left.
func TestBadClients(t *testing.T) {
	m := newMem(4 << 20)
	s, sock := serve(t, Options{HandshakeTimeout: 2 * time.Second}, m.export("x"))
	// The baseline is taken before the good client connects: its
	// connection keeps as many request workers as it needed at once.
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	good := connect(t, sock, "x")
	check := func(what string) {
		t.Helper()
		p := bytes.Repeat([]byte(what[:1]), 512)
		if err := good.WriteAt(p, 0, 0); err != nil {
			t.Fatalf("%s: good client write: %v", what, err)
		}
		q := make([]byte, 512)
		if err := good.ReadAt(q, 0); err != nil || !bytes.Equal(p, q) {
			t.Fatalf("%s: good client read: %v", what, err)
		}
	}
	dial := func() net.Conn {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	closed := func(nc net.Conn) bool {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, nc)
		return err == nil // EOF: the server closed it
	}

	// Garbage instead of client flags and options.
	nc := dial()
	junk := make([]byte, 4096)
	_, _ = rand.Read(junk)
	_, _ = nc.Write(junk)
	if !closed(nc) {
		t.Fatal("garbage during negotiation did not close the connection")
	}
	nc.Close()
	check("garbage")

	// A bad request magic in transmission closes that connection only.
	bad := connect(t, sock, "x")
	_, _ = bad.nc.Write(make([]byte, RequestSize))
	if !closed(bad.nc) {
		t.Fatal("bad request magic did not close the connection")
	}
	bad.nc.Close()
	check("magic")

	// Half a write payload, then gone.
	half := connect(t, sock, "x")
	b := AppendRequest(nil, Request{Type: CmdWrite, Offset: 1 << 20, Length: 1 << 20})
	_, _ = half.nc.Write(append(b, make([]byte, 1000)...))
	half.nc.Close()
	check("half")

	// A client that never reads: requests pile up until its socket is
	// full; it must not stall the good client.
	deaf := connect(t, sock, "x")
	go func() {
		r := AppendRequest(nil, Request{Type: CmdRead, Length: 1 << 20})
		for i := 0; i < 256; i++ {
			if _, err := deaf.nc.Write(r); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	check("deaf")

	// Many connections that never negotiate.
	var idle []net.Conn
	for i := 0; i < 1000; i++ {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			break // the test's own descriptor limit
		}
		idle = append(idle, nc)
	}
	if len(idle) < 200 {
		t.Fatalf("only %d connections opened", len(idle))
	}
	check("many")
	for _, c := range idle {
		c.Close()
	}

	deaf.nc.Close()
	for deadline := time.Now().Add(30 * time.Second); s.Lookup("x").Connections() != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the export still counts %d connections with only the good client left", s.Lookup("x").Connections())
		}
	}
	check("after")
	good.nc.Close()

	// Everything the clients held is released.
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > g0 || openFDs(t) > f0 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("leak: goroutines %d (was %d), fds %d (was %d)\n%s",
				runtime.NumGoroutine(), g0, openFDs(t), f0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.Lookup("x").Connections(); n != 0 {
		t.Fatalf("export still counts %d connections", n)
	}
}

// TestRemoveExport: safe removal waits for the client, hard removal
// disconnects it; gone runs once either way.
func TestRemoveExport(t *testing.T) {
	m := newMem(1 << 20)
	e := m.export("x")
	s, sock := serve(t, Options{}, e)
	c := connect(t, sock, "x")
	gone := make(chan struct{})
	s.RemoveExport(e, false, func() { close(gone) })
	select {
	case <-gone:
		t.Fatal("safe removal did not wait for the client")
	case <-time.After(100 * time.Millisecond):
	}
	if err := c.WriteAt([]byte{1}, 0, 0); err != nil {
		t.Fatalf("client lost its export on safe removal: %v", err)
	}
	nc, _ := net.Dial("unix", sock)
	if _, err := Connect(nc, "x"); err == nil {
		t.Fatal("a removed export accepted a new client")
	}
	nc.Close()
	c.Close()
	<-gone

	e2 := m.export("y")
	_ = s.AddExport(e2)
	c2 := connect(t, sock, "y")
	gone2 := make(chan struct{})
	s.RemoveExport(e2, true, func() { close(gone2) })
	<-gone2
	if err := c2.Flush(); err == nil {
		t.Fatal("hard removal left the client connected")
	}
}

// TestMaxConnections: a second client waits (is not accepted) while the
// one allowed connection is in use, and gets in once it leaves.
func TestMaxConnections(t *testing.T) {
	_, sock := serve(t, Options{MaxConnections: 1}, newMem(1<<20).export("x"))
	a := connect(t, sock, "x")
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var hs [18]byte
	if _, err := io.ReadFull(nc, hs[:]); err == nil {
		t.Fatal("a second client was served beyond max-connections")
	}
	a.Close()
	_ = nc.SetReadDeadline(time.Time{})
	b, err := Connect(nc, "x")
	if err != nil {
		t.Fatalf("second client after the first left: %v", err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
}

// heldDev holds every write until release is closed, counting how many
// are inside at once; a write at offset 0 panics.
type heldDev struct {
	*memDev
	release      chan struct{}
	mu           sync.Mutex
	inside, most int
	entered      chan struct{}
}

func (d *heldDev) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	if off == 0 {
		panic("heldDev: write at 0")
	}
	d.mu.Lock()
	d.inside++
	d.most = max(d.most, d.inside)
	d.mu.Unlock()
	d.entered <- struct{}{}
	<-d.release
	d.mu.Lock()
	d.inside--
	d.mu.Unlock()
	return d.memDev.WriteAt(p, off, f)
}

// pipelinedWrites is n WRITE requests sent at once: write i (from 1)
// puts 512 bytes of value i at i * 4096.
func pipelinedWrites(n int) []byte {
	var b []byte
	for i := 1; i <= n; i++ {
		b = AppendRequest(b, Request{Type: CmdWrite, Cookie: uint64(i), Offset: uint64(i) << 12, Length: 512})
		b = append(b, bytes.Repeat([]byte{byte(i)}, 512)...)
	}
	return b
}

// Requests run on at most MaxInFlight workers at once, every request is
// answered, and a request that panics gets EIO while the connection and
// its workers go on serving.
func TestWorkersBoundAndSurvivePanics(t *testing.T) {
	d := &heldDev{memDev: newMem(1 << 20), release: make(chan struct{}), entered: make(chan struct{}, 64)}
	_, sock := serve(t, Options{MaxInFlight: 4}, &Export{Name: "x", Dev: d, Size: 1 << 20})
	c := connect(t, sock, "x")
	if err := c.WriteAt(make([]byte, 512), 0, 0); errnoOf(err) != EIO {
		t.Fatalf("a write that panics: %v, want EIO", err)
	}
	const n = 12
	go func() { _, _ = c.nc.Write(pipelinedWrites(n)) }()
	for range 4 {
		<-d.entered
	}
	close(d.release)
	for i := 0; i < n; i++ {
		var h [16]byte
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(h[4:]) != 0 {
			t.Fatalf("reply %x: an error", h)
		}
	}
	d.mu.Lock()
	most := d.most
	d.mu.Unlock()
	if most != 4 {
		t.Fatalf("%d writes ran at once, want MaxInFlight (4)", most)
	}
	for i := 1; i <= n; i++ {
		if d.buf[i<<12] != byte(i) {
			t.Fatalf("write %d missing", i)
		}
	}
}

// A client that hung up (DISC sent, socket closed) is leaving, not
// using the export: ConnectionsStaying waits for it to finish what it
// sent, while a client still connected counts at once, and a hung-up
// client stuck in a request past the limit still counts.
func TestConnectionsStayingIgnoresClientsThatHungUp(t *testing.T) {
	d := &heldDev{memDev: newMem(1 << 20), release: make(chan struct{}), entered: make(chan struct{}, 64)}
	e := &Export{Name: "x", Dev: d, Size: 1 << 20}
	_, sock := serve(t, Options{}, e)

	leaving := connect(t, sock, "x")
	req := AppendRequest(nil, Request{Type: CmdWrite, Cookie: 1, Offset: 4096, Length: 512})
	if _, err := leaving.nc.Write(append(req, make([]byte, 512)...)); err != nil {
		t.Fatal(err)
	}
	<-d.entered // the write is being served
	if err := leaving.Close(); err != nil {
		t.Fatal(err)
	}
	if n := e.ConnectionsStaying(50 * time.Millisecond); n != 1 {
		t.Fatalf("a hung-up client stuck in a request past the limit: %d staying, want 1", n)
	}

	staying := make(chan int)
	go func() { staying <- e.ConnectionsStaying(time.Minute) }()
	select {
	case n := <-staying:
		t.Fatalf("ConnectionsStaying returned %d before the leaving client's write finished", n)
	case <-time.After(50 * time.Millisecond):
	}
	close(d.release)
	if n := <-staying; n != 0 || e.Connections() != 0 {
		t.Fatalf("after the leaving client finished: %d staying, %d connections; want 0, 0", n, e.Connections())
	}

	c := connect(t, sock, "x")
	if n := e.ConnectionsStaying(time.Minute); n != 1 {
		t.Fatalf("a connected client: %d staying, want 1", n)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("the connected client lost its connection: %v", err)
	}
}
