package blockcore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"blockd/blockcore"
	"blockd/blockio"
	"blockd/events"
	"blockd/schema"
)

// A panic in a command handler, in the middle of a graph change with a
// node drained and a transaction open, is logged with its stack at error
// level and answered with a GenericError; the transaction is rolled back
// and the node resumed, so I/O goes on and the graph is as before.
func TestPanicInHandlerLeavesNoNodeDrained(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := schema.NewRegistry()
	g := blockcore.NewGraph(zap.NewNop(), events.NewBus())
	g.RegisterCommands(reg)
	// The injected fault: a filter whose permission callback panics while
	// InsertFilterAbove has drained the node and moved its parents.
	schema.Define(reg, "x-test-panic", func(context.Context, *schema.NoArgs) (schema.Empty, error) {
		_, err := g.InsertFilterAbove(g.Lookup("disk"), "test-filter", "flt", "backing",
			func(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) { panic("injected fault") })
		return schema.Empty{}, err
	})
	core, logs := observer.New(zapcore.ErrorLevel)
	o := blockcore.NewOwner(reg)
	o.SetLogger(zap.New(core))
	o.OnPanic(g.RecoverFromPanic)
	go o.Run()
	e := &env{g: g, o: o}
	t.Cleanup(func() {
		_ = o.Do(g.CloseAll)
		o.Stop()
	})
	e.mustExec(t, "blockdev-add", fmt.Sprintf(`{"driver": "file", "node-name": "f", "filename": %q}`, img))
	e.mustExec(t, "blockdev-add", `{"driver": "raw", "node-name": "disk", "file": "f"}`)
	disk := e.node(t, "disk")
	var dev *blockcore.Child
	if err := e.do(func() (err error) {
		dev, err = g.AttachUser(user("dev"), disk, "root", pR|pW, pR|pW|pWU|pRS)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	graphBefore := e.mustExec(t, "x-debug-query-block-graph", "")

	_, err := e.exec("x-test-panic", "")
	qe := schema.AsError(err)
	if qe == nil || qe.Class != schema.ClassGeneric || !strings.Contains(qe.Desc, "injected fault") {
		t.Fatalf("reply to the panicking command: %#v", err)
	}
	entries := logs.FilterMessage("panic on the owner goroutine").All()
	if len(entries) != 1 {
		t.Fatalf("panic not logged once at error level: %v", logs.All())
	}
	if stack := entries[0].ContextMap()["stack"]; !strings.Contains(fmt.Sprint(stack), "InsertFilterAbove") {
		t.Fatalf("logged stack does not show where it panicked: %v", stack)
	}

	// I/O through the node proceeds (a node left drained blocks here).
	done := make(chan error, 1)
	go func() {
		want := bytes.Repeat([]byte{0x5a}, 4096)
		if err := disk.IO().WriteAt(want, 8192, 0); err != nil {
			done <- err
			return
		}
		got := make([]byte, 4096)
		if err := disk.IO().ReadAt(got, 8192); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, want) {
			done <- errors.New("read back differs")
			return
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("I/O on the node is still held back after the panic: the node stayed drained")
	}

	// The half-made change is gone: same graph, the user's edge on disk.
	if got := e.mustExec(t, "x-debug-query-block-graph", ""); !bytes.Equal(got, graphBefore) {
		t.Fatalf("graph changed by the rolled-back command:\nbefore %s\nafter  %s", graphBefore, got)
	}
	_ = e.do(func() error {
		if g.Lookup("flt") != nil {
			t.Error("the filter of the rolled-back command is still registered")
		}
		if ps := disk.Parents(); len(ps) != 1 || ps[0] != dev {
			t.Errorf("disk's parents after rollback: %v", ps)
		}
		return nil
	})
	// And the owner keeps serving: the same change without the fault works.
	if err := e.do(func() error {
		f, err := g.InsertFilterAbove(disk, "test-filter", "flt2", "backing",
			func(perm, shared blockio.Perm) (blockio.Perm, blockio.Perm) { return perm, shared })
		if err != nil {
			return err
		}
		return g.RemoveFilter(f)
	}); err != nil {
		t.Fatal(err)
	}
}

// seqHandler checks that one source's reports arrive complete and in the
// order they were sent; the sequence number rides in Err.
type seqHandler struct {
	t        *testing.T
	next     int
	finished bool
}

type seq int

func (s seq) Error() string { return fmt.Sprint(int(s)) }

func (h *seqHandler) HandleReport(r blockcore.Report) {
	var n seq
	if !errors.As(r.Err, &n) {
		h.t.Errorf("report without sequence: %v", r)
		return
	}
	if h.finished {
		h.t.Errorf("report %d (%v) after completion", n, r.Kind)
	}
	if int(n) != h.next {
		h.t.Errorf("report %d arrived when %d was due", n, h.next)
	}
	h.next = int(n) + 1
	if r.Kind == blockcore.ReportCompleted {
		h.finished = true
	}
}

// Reports of thousands of jobs' workers, sent concurrently and
// interleaved with commands, reach the owner complete and, per worker, in
// the order they were sent (ready before errors before completion), with
// no goroutine per report.
func TestReportsArriveInOrder(t *testing.T) {
	const workers, perWorker = 2000, 40
	o := blockcore.NewOwner(schema.NewRegistry())
	go o.Run()
	defer o.Stop()
	handlers := make([]*seqHandler, workers)
	for i := range handlers {
		handlers[i] = &seqHandler{t: t}
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := handlers[i]
			for n := range perWorker {
				kind := blockcore.ReportProgress
				switch {
				case n == 1:
					kind = blockcore.ReportReady
				case n%7 == 0:
					kind = blockcore.ReportError
				case n == perWorker-1:
					kind = blockcore.ReportCompleted
				}
				o.Report(blockcore.Report{To: h, Kind: kind, Err: seq(n)})
			}
		}()
	}
	// Commands keep running on the owner meanwhile; they read handler
	// state, which only the owner writes (the race detector checks).
	stop := make(chan struct{})
	cmds := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				cmds <- n
				return
			default:
			}
			_ = o.Do(func() { _ = handlers[n%workers].next })
			n++
		}
	}()
	wg.Wait()
	// Everything sent before this Do is handled before it returns... or
	// soon after: wait until each handler saw its completion.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var pending int
		_ = o.Do(func() {
			o.DeliverReports()
			for _, h := range handlers {
				if !h.finished {
					pending++
				}
			}
		})
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers' reports still undelivered", pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if n := <-cmds; n == 0 {
		t.Fatal("no command ran while reports were flowing")
	}
	_ = o.Do(func() {
		for i, h := range handlers {
			if h.next != perWorker {
				t.Errorf("worker %d: %d of %d reports", i, h.next, perWorker)
			}
		}
	})
}

// Execute honours its context: a command whose context has ended before
// it runs is not run and gets an error.
func TestExecuteHonoursContext(t *testing.T) {
	reg := schema.NewRegistry()
	ran := 0
	schema.Define(reg, "x-count", func(context.Context, *schema.NoArgs) (schema.Empty, error) {
		ran++
		return schema.Empty{}, nil
	})
	o := blockcore.NewOwner(reg)
	go o.Run()
	defer o.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var got error
	delivered := false
	o.Execute(ctx, "x-count", nil, func(_ json.RawMessage, err error) { got, delivered = err, true })
	if !delivered || got == nil {
		t.Fatalf("cancelled context: delivered %v, err %v", delivered, got)
	}
	if _, err := o.Call(context.Background(), "x-count", nil); err != nil {
		t.Fatal(err)
	}
	_ = o.Do(func() {
		if ran != 1 {
			t.Errorf("command ran %d times, want once (not for the cancelled context)", ran)
		}
	})
}
