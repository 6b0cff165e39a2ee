package wire

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func nl(m []byte) []byte { return append(m, '\n') }

// A peer that shut its write side still receives everything queued,
// also what is pushed after Finish (a reply delivered late).
func TestFinishFlushesEverything(t *testing.T) {
	a, b := net.Pipe()
	q := NewQueue(a, nl, nil)
	for i := range 200 {
		q.Push(fmt.Appendf(nil, "reply %d", i))
	}
	q.Finish(5 * time.Second)
	q.Push([]byte("late"))
	got := make(chan []byte)
	go func() { data, _ := io.ReadAll(b); got <- data }()
	select {
	case <-q.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not finish")
	}
	_ = a.Close()
	data := <-got
	if n := bytes.Count(data, []byte("\n")); n != 200 && n != 201 {
		t.Fatalf("got %d messages, want 200 or 201 (late one)", n)
	}
	if !bytes.HasPrefix(data, []byte("reply 0\nreply 1\n")) || !bytes.Contains(data, []byte("reply 199\n")) {
		t.Fatalf("out of order or missing: %.80q", data)
	}
}

// WaitRoom holds the reader while PauseBytes are queued and lets it go
// once the writer has taken them.
func TestWaitRoomThrottles(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	q := NewQueue(a, nl, nil)
	q.pause = 64 << 10
	defer q.Close()
	big := bytes.Repeat([]byte("x"), 4<<10)
	// The writer takes the first message at once and blocks writing it
	// (nobody reads b yet); the rest stays queued.
	for range q.pause/len(big) + 2 {
		if !q.Push(big) {
			t.Fatal("push refused below DropBytes")
		}
	}
	released := make(chan bool)
	go func() { released <- q.WaitRoom() }()
	select {
	case <-released:
		t.Fatal("WaitRoom returned with the queue full")
	case <-time.After(50 * time.Millisecond):
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, b) }()
	if ok := <-released; !ok {
		t.Fatal("WaitRoom reported a closed queue")
	}
	q.Close()
	_ = a.Close()
	wg.Wait()
}

// Only a queue that grows past DropBytes is dropped, and then once.
func TestDropPastBound(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	drops := 0
	q := NewQueue(a, nl, func(int) { drops++ })
	big := bytes.Repeat([]byte("e"), 1<<20)
	pushed := 0
	for q.Push(big) {
		pushed++
		if pushed > 2*DropBytes/len(big) {
			t.Fatal("queue never dropped")
		}
	}
	if pushed < DropBytes/len(big)-1 {
		t.Fatalf("dropped after %d MiB, before the %d MiB bound", pushed, DropBytes>>20)
	}
	if q.Push(big) || drops != 1 {
		t.Fatalf("after drop: push accepted or %d drop calls", drops)
	}
	// The bound detects a writer that never returns. It is generous: with
	// 10 s the test failed once on a heavily loaded 2-core machine under
	// -race, where it normally takes 0.3 s; the cause is not known yet.
	select {
	case <-q.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("writer blocked on a peer that does not read survived the drop")
	}
	_ = a.Close()
}
