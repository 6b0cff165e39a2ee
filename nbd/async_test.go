package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockd/blockio"
)

// asyncMem is a memDev that ends reads and writes on its own, as the rbd
// driver does: every connection's requests queue for one completion
// goroutine, which waits for release before the first. Its own ReadAt
// and WriteAt count the requests that took the synchronous way. Writes
// at failOff fail with EIO; FUA writes are declined.
type asyncMem struct {
	*memDev
	queue        chan func()
	release      chan struct{}
	started      atomic.Int64
	syncR, syncW atomic.Int64
	failOff      int64
	notNow       bool // EndsRequests says no
}

func newAsyncMem(t *testing.T, size int) *asyncMem {
	a := &asyncMem{memDev: newMem(size), queue: make(chan func(), 1024), release: make(chan struct{}), failOff: -1}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-a.release:
		case <-done:
		}
		for f := range a.queue {
			f()
		}
	}()
	t.Cleanup(func() { close(a.queue); <-done })
	return a
}

func (a *asyncMem) ReadAt(p []byte, off int64) error {
	a.syncR.Add(1)
	return a.memDev.ReadAt(p, off)
}

func (a *asyncMem) WriteAt(p []byte, off int64, f blockio.WriteFlags) error {
	a.syncW.Add(1)
	return a.memDev.WriteAt(p, off, f)
}

func (a *asyncMem) EndsRequests() bool { return !a.notNow }

func (a *asyncMem) StartReadAt(p []byte, off int64, done func(error)) bool {
	a.started.Add(1)
	a.queue <- func() { done(a.memDev.ReadAt(p, off)) }
	return true
}

func (a *asyncMem) StartWriteAt(p []byte, off int64, f blockio.WriteFlags, done func(error)) bool {
	if f&blockio.FUA != 0 {
		return false
	}
	a.started.Add(1)
	a.queue <- func() {
		if off == a.failOff {
			done(syscall.EIO)
			return
		}
		done(a.memDev.WriteAt(p, off, f))
	}
	return true
}

// structuredConn is a raw connection with structured replies on.
func structuredConn(t *testing.T, sock, name string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := ClientHandshake(nc, HandshakeConfig{Export: name, Structured: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	return tc
}

type chunk struct {
	flags, typ uint16
	cookie     uint64
	payload    []byte
}

func readChunk(t *testing.T, nc net.Conn) chunk {
	t.Helper()
	var h [20]byte
	if _, err := io.ReadFull(nc, h[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(h[:]) != MagicStructured {
		t.Fatalf("reply magic %x", h[:4])
	}
	c := chunk{flags: binary.BigEndian.Uint16(h[4:]), typ: binary.BigEndian.Uint16(h[6:]),
		cookie: binary.BigEndian.Uint64(h[8:]), payload: make([]byte, binary.BigEndian.Uint32(h[16:]))}
	if _, err := io.ReadFull(nc, c.payload); err != nil {
		t.Fatal(err)
	}
	return c
}

// Reads and writes on a device that ends them itself are started by the
// connection and answered when the device ends them: simple and
// structured replies carry the same bytes as the synchronous way, holes
// still come as OFFSET_HOLE chunks, a failed write is an error reply,
// and what the device declines (FUA, requests out of range) is served
// the synchronous way.
func TestAsyncDeviceRequests(t *testing.T) {
	a := newAsyncMem(t, 1<<20)
	close(a.release)
	a.failOff = 65536
	_, sock := serve(t, Options{}, &Export{Name: "a", Dev: a, Size: 1 << 20})

	c := connect(t, sock, "a")
	data := bytes.Repeat([]byte("blockd"), 1000)
	if err := c.WriteAt(data, 4096, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := c.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if e := errnoOf(c.WriteAt(data, 65536, 0)); e != EIO {
		t.Fatalf("a write the device fails: errno %d, want EIO", e)
	}
	if a.started.Load() != 3 || a.syncR.Load() != 0 || a.syncW.Load() != 0 {
		t.Fatalf("started %d, synchronous reads %d, writes %d: want 3 started, none synchronous",
			a.started.Load(), a.syncR.Load(), a.syncW.Load())
	}
	if err := c.WriteAt(data, 200000, CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	if e := errnoOf(c.ReadAt(make([]byte, 2), 1<<20-1)); e != EINVAL {
		t.Fatalf("read past the end: errno %d", e)
	}
	if a.started.Load() != 3 || a.syncW.Load() != 1 {
		t.Fatalf("a FUA write: started %d, synchronous writes %d: want it synchronous", a.started.Load(), a.syncW.Load())
	}

	// Structured: data, a hole (never written), data again.
	s := structuredConn(t, sock, "a")
	const base = 512 << 10
	req := Request{Type: CmdRead, Cookie: 7, Offset: base, Length: 3 * 4096}
	for _, off := range []int64{base, base + 2*4096} {
		if err := a.memDev.WriteAt(bytes.Repeat([]byte{9}, 4096), off, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Write(AppendRequest(nil, req)); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for {
		ch := readChunk(t, s)
		if ch.cookie != 7 {
			t.Fatalf("cookie %d", ch.cookie)
		}
		off := binary.BigEndian.Uint64(ch.payload)
		switch ch.typ {
		case ChunkOffsetData:
			want := make([]byte, len(ch.payload)-8)
			_ = a.memDev.ReadAt(want, int64(off))
			if !bytes.Equal(ch.payload[8:], want) {
				t.Fatalf("data chunk at %d: wrong bytes", off)
			}
			kinds = append(kinds, fmt.Sprintf("data@%d+%d", off, len(want)))
		case ChunkOffsetHole:
			kinds = append(kinds, fmt.Sprintf("hole@%d+%d", off, binary.BigEndian.Uint32(ch.payload[8:])))
		default:
			t.Fatalf("chunk type %d", ch.typ)
		}
		if ch.flags&ReplyFlagDone != 0 {
			break
		}
	}
	if got, want := fmt.Sprint(kinds), "[data@524288+4096 hole@528384+4096 data@532480+4096]"; got != want {
		t.Fatalf("structured read: %s, want %s", got, want)
	}
	if a.syncR.Load() != 0 {
		t.Fatalf("%d reads took the synchronous way", a.syncR.Load())
	}
}

// A device that says it ends no requests now is never asked to start
// one: its reads and writes run on workers.
func TestAsyncDeviceThatSaysNo(t *testing.T) {
	a := newAsyncMem(t, 1<<20)
	close(a.release)
	a.notNow = true
	_, sock := serve(t, Options{}, &Export{Name: "a", Dev: a, Size: 1 << 20})
	c := connect(t, sock, "a")
	if err := c.WriteAt([]byte("blockd"), 0, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if err := c.ReadAt(got, 0); err != nil || string(got) != "blockd" {
		t.Fatalf("read back: %v %q", err, got)
	}
	if a.started.Load() != 0 || a.syncR.Load() != 1 || a.syncW.Load() != 1 {
		t.Fatalf("started %d, synchronous reads %d, writes %d: want none started, one of each synchronous",
			a.started.Load(), a.syncR.Load(), a.syncW.Load())
	}
}

// At most MaxInFlight requests are started at once, asynchronous or not
// (DefaultMaxInFlight when Options leave it unset), and a connection
// that closes with requests in flight waits for them: the server closes
// only once each has ended.
func TestAsyncInFlightBound(t *testing.T) {
	for _, tc := range []struct {
		opts  Options
		bound int64
	}{{Options{MaxInFlight: 4}, 4}, {Options{}, DefaultMaxInFlight}} {
		t.Run(fmt.Sprint(tc.bound), func(t *testing.T) { testAsyncInFlightBound(t, tc.opts, tc.bound) })
	}
}

func testAsyncInFlightBound(t *testing.T, opts Options, bound int64) {
	a := newAsyncMem(t, 1<<20)
	s, sock := serve(t, opts, &Export{Name: "a", Dev: a, Size: 1 << 20})
	c := connect(t, sock, "a")
	n := int(bound) + 8
	go func() { _, _ = c.nc.Write(pipelinedWrites(n)) }()
	deadline := time.Now().Add(10 * time.Second)
	for a.started.Load() < bound && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for one more, which must not come
	if got := a.started.Load(); got != bound {
		close(a.release) // or the server's close waits for them
		t.Fatalf("%d requests started while %d were in flight, want the bound", got, bound)
	}
	close(a.release)
	for range n {
		var h [16]byte
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(h[4:]) != 0 {
			t.Fatalf("reply %x: an error", h)
		}
	}
	for i := 1; i <= n; i++ {
		p := make([]byte, 1)
		if err := a.memDev.ReadAt(p, int64(i)<<12); err != nil || p[0] != byte(i) {
			t.Fatalf("write %d missing", i)
		}
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not close")
	}
}

// A client that sends reads and never reads the replies stalls only
// itself: the device's completions, shared by every client, go on, and
// another client of the same export is served. The replies of the stuck
// client are bounded by its requests in flight.
func TestAsyncStuckClientDoesNotStallOthers(t *testing.T) {
	a := newAsyncMem(t, 8<<20)
	close(a.release)
	_, sock := serve(t, Options{MaxInFlight: 4}, &Export{Name: "a", Dev: a, Size: 8 << 20})
	stuck := connect(t, sock, "a")
	var b []byte
	for i := range 64 {
		b = AppendRequest(b, Request{Type: CmdRead, Cookie: uint64(i), Offset: uint64(i%8) << 20, Length: 1 << 20})
	}
	go func() { _, _ = stuck.nc.Write(b) }()
	// Wait until the stuck client's replies fill its socket: no request
	// of it starts any more.
	deadline := time.Now().Add(10 * time.Second)
	for prev := int64(-1); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cur := a.started.Load()
		if cur == prev && cur > 0 {
			break
		}
		prev = cur
	}
	if got := a.started.Load(); got >= 64 {
		t.Fatalf("all %d reads of a client that reads no reply were served", got)
	}
	other := connect(t, sock, "a")
	done := make(chan error, 1)
	go func() {
		for i := range 16 {
			if err := other.WriteAt([]byte{byte(i)}, int64(i), 0); err != nil {
				done <- err
				return
			}
			p := make([]byte, 1)
			if err := other.ReadAt(p, int64(i)); err != nil || p[0] != byte(i) {
				done <- fmt.Errorf("read %d: %v %v", i, err, p)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a client stalled behind another that reads no replies")
	}
}

// The server asks for a send buffer larger than one 256 KiB read reply
// on Unix sockets, so that the reply goes out in one write.
func TestUnixSendBuffer(t *testing.T) {
	s, sock := serve(t, Options{}, newMem(4096).export("x"))
	_ = connect(t, sock, "x")
	s.mu.Lock()
	var nc net.Conn
	for c := range s.conns {
		nc = c.nc
	}
	s.mu.Unlock()
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var size int
	var serr error
	if err := rc.Control(func(fd uintptr) { size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	if size <= 256<<10+32 {
		t.Fatalf("send buffer %d bytes, want more than a 256 KiB read reply", size)
	}
}
