package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

type tVersionInfo struct {
	Major int64 `qapi:"major"`
}

func testRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	Define(r, "query-version", func(context.Context, *NoArgs) (tVersionInfo, error) {
		return tVersionInfo{Major: 7}, nil
	})
	Define(r, "block-commit", func(_ context.Context, a *tBlockCommitArgs) (Empty, error) {
		switch a.Device {
		case "missing":
			return Empty{}, ClassErrorf(ClassDeviceNotFound, "Device '%s' not found", a.Device)
		case "plain":
			return Empty{}, errors.New("plain failure")
		case "panic":
			panic("boom")
		}
		return Empty{}, nil
	}, Features("deprecated"))
	Define(r, "blockdev-add", func(_ context.Context, a *tBlockdevOptions) (Empty, error) {
		if a.Qcow2 == nil && a.Driver == "qcow2" {
			t.Error("variant not decoded")
		}
		return Empty{}, nil
	})
	Define(r, "ringbuf-read", func(_ context.Context, a *tBlockDirtyBitmap) (string, error) {
		return a.Node + a.Name, nil
	}, AllowOOB(), AllowPreconfig())
	Define(r, "nil-result", func(context.Context, *NoArgs) (*tVersionInfo, error) { return nil, nil })
	r.AddEvent("BLOCK_JOB_COMPLETED", reflect.TypeFor[tBlockDirtyBitmap]())
	r.AddEvent("RESUME", nil)
	r.AddIntrospection()
	return r
}

func TestRegistryCall(t *testing.T) {
	r := testRegistry(t)
	ctx := context.Background()
	cases := []struct {
		name, args, want string
		class, desc      string
	}{
		{name: "query-version", want: `{"major": 7}`},
		{name: "query-version", args: `{}`, want: `{"major": 7}`},
		{name: "block-commit", args: `{"device":"d"}`, want: `{}`},
		{name: "blockdev-add", args: `{"driver":"qcow2","file":"f"}`, want: `{}`},
		{name: "ringbuf-read", args: `{"node":"a","name":"b"}`, want: `"ab"`},
		// QSD: query-version {"x":1} and block-commit {"device":"d","speed":1.5}
		{name: "query-version", args: `{"x":1}`, class: ClassGeneric, desc: "Parameter 'x' is unexpected"},
		{name: "block-commit", args: `{"device":"d","speed":1.5}`, class: ClassGeneric,
			desc: "Invalid parameter type for 'speed', expected: integer"},
		// QSD: block-commit {"device":"d"} with no such device
		{name: "block-commit", args: `{"device":"missing"}`, class: ClassDeviceNotFound, desc: "Device 'missing' not found"},
		{name: "block-commit", args: `{"device":"plain"}`, class: ClassGeneric, desc: "plain failure"},
		{name: "nil-result", class: ClassGeneric, desc: "internal error: command nil-result returned no value"},
		// QSD: {"execute":"nonesuch"}
		{name: "nonesuch", class: ClassCommandNotFound, desc: "The command nonesuch has not been found"},
	}
	for _, c := range cases {
		res, err := r.Call(ctx, c.name, json.RawMessage(c.args))
		if c.class == "" {
			if err != nil || string(res) != c.want {
				t.Errorf("%s %s: got %s, %v; want %s", c.name, c.args, res, err, c.want)
			}
			continue
		}
		qe := AsError(err)
		if qe == nil || qe.Class != c.class || qe.Desc != c.desc {
			t.Errorf("%s %s: got %#v, want %s %q", c.name, c.args, err, c.class, c.desc)
		}
		// Argument errors are marked so JSON-RPC can report them as such.
		wantDecode := strings.HasPrefix(c.desc, "Parameter ") || strings.HasPrefix(c.desc, "Invalid parameter type")
		if IsDecodeError(err) != wantDecode {
			t.Errorf("%s %s: IsDecodeError = %v", c.name, c.args, IsDecodeError(err))
		}
	}
}

// A panicking handler's panic reaches the caller, the graph owner, which
// recovers it with the graph (blockcore.Owner.Guard).
func TestRegistryCallLeavesPanicsToTheCaller(t *testing.T) {
	r := testRegistry(t)
	defer func() {
		if p := recover(); p == nil || fmt.Sprint(p) != "boom" {
			t.Fatalf("recovered %v, want the handler's panic", p)
		}
	}()
	_, _ = r.Call(context.Background(), "block-commit", json.RawMessage(`{"device":"panic"}`))
	t.Fatal("Call returned after the handler panicked")
}

func TestRegistryDeclarations(t *testing.T) {
	r := testRegistry(t)
	want := []string{"block-commit", "blockdev-add", "nil-result", "query-commands",
		"query-qmp-schema", "query-version", "ringbuf-read"}
	if got := r.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v", got)
	}
	c, ok := r.Lookup("ringbuf-read")
	if !ok || !c.AllowOOB || !c.AllowPreconfig || c.Args != reflect.TypeFor[tBlockDirtyBitmap]() ||
		c.Ret != reflect.TypeFor[string]() {
		t.Fatalf("Lookup(ringbuf-read) = %+v", c)
	}
	if c, _ := r.Lookup("block-commit"); c.Ret != nil || !slices.Equal(c.Features, []string{"deprecated"}) {
		t.Fatalf("block-commit: Ret %v features %v", c.Ret, c.Features)
	}
	if c, _ := r.Lookup("query-version"); c.Args != nil {
		t.Fatalf("query-version: Args %v", c.Args)
	}
	if _, ok := r.Lookup("nonesuch"); ok {
		t.Fatal("found nonesuch")
	}
	res, err := r.Call(context.Background(), "query-commands", nil)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]string
	if err := json.Unmarshal(res, &raw); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range raw {
		names = append(names, m["name"])
	}
	if !slices.Equal(names, want) {
		t.Fatalf("query-commands = %s", res)
	}
}

func TestRegistryPanicsOnProgrammingErrors(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	r := testRegistry(t)
	h := func(context.Context, *NoArgs) (Empty, error) { return Empty{}, nil }
	mustPanic("duplicate", func() { Define(r, "query-version", h) })
	mustPanic("no handler", func() { r.Add(Command{Name: "x"}) })
	mustPanic("args not a struct", func() {
		r.Add(Command{Name: "y", Args: reflect.TypeFor[string](), Handler: func(context.Context, any) (any, error) { return nil, nil }})
	})
	type bad struct {
		X int `qapi:"x,optional"`
	}
	mustPanic("bad declaration", func() {
		Define(r, "z", func(context.Context, *bad) (Empty, error) { return Empty{}, nil })
	})
}

// Calls run concurrently once the registry is built; go test -race
// checks that decoding, the type cache and the introspection cache are
// safe for that.
func TestRegistryConcurrentCalls(t *testing.T) {
	r := testRegistry(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := r.Call(context.Background(), "query-qmp-schema", nil); err != nil {
					t.Error(err)
				}
				_, err := r.Call(context.Background(), "blockdev-add", json.RawMessage(`{"driver":"raw","file":{"driver":"file","filename":"x"}}`))
				if err != nil {
					t.Error(err)
				}
				if _, err := Marshal(tSizedArgs{I8: ptr(int8(i))}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}
