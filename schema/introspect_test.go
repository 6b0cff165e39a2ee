package schema

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The expected shapes are those of QSD 7.2's query-qmp-schema (run with
// {"execute":"query-qmp-schema"} on a stdio monitor): commands and
// events first, then types; masked numeric names; "0" the empty object;
// builtins str/any/bool/int/null/number only; optional members with
// "default": null; unions with tag and a variant for every enum value,
// value-less ones on "0"; alternates as {"members":[{"type"}]}.

type tBlockdevReopenRet struct {
	Nodes []string                `qapi:"nodes"`
	Perms []tBlockPermission      `qapi:"perms,optional"`
	Nums  []uint16                `qapi:"nums,optional"`
	Sizes []Size                  `qapi:"sizes,optional"`
	Objs  []tObjectOptions        `qapi:"objs,optional"`
	Num   float64                 `qapi:"num"`
	Any   Any                     `qapi:"any,optional"`
	Map   map[string]any          `qapi:"map,optional"`
	Alt   *tBlockDirtyBitmapOrStr `qapi:"alt,optional"`
}

func schemaEntities(t *testing.T, r *Registry) []map[string]any {
	t.Helper()
	res, err := r.Call(context.Background(), "query-qmp-schema", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	if err := json.Unmarshal(res, &out); err != nil {
		t.Fatalf("%v in %s", err, res)
	}
	return out
}

func introspectionRegistry(t *testing.T) *Registry {
	r := testRegistry(t)
	Define(r, "blockdev-reopen", func(context.Context, *tBlockdevReopenArgs) (tBlockdevReopenRet, error) {
		return tBlockdevReopenRet{}, nil
	})
	Define(r, "nbd-server-start", func(context.Context, *tNbdServerStartArgs) (Empty, error) { return Empty{}, nil })
	Define(r, "x-blockdev-set-iothread", func(context.Context, *tXBlockdevSetIothreadArgs) (Empty, error) {
		return Empty{}, nil
	}, Features("unstable"))
	return r
}

func TestIntrospectionShapes(t *testing.T) {
	r := introspectionRegistry(t)
	ents := schemaEntities(t, r)
	byName := map[string]map[string]any{}
	for _, e := range ents {
		n := e["name"].(string)
		if byName[n] != nil {
			t.Fatalf("%s listed twice", n)
		}
		byName[n] = e
	}

	// Commands and events come first, in declaration order.
	var order []string
	for _, e := range ents {
		if mt := e["meta-type"]; mt == "command" || mt == "event" {
			order = append(order, e["name"].(string))
		} else {
			break
		}
	}
	wantOrder := []string{"query-version", "block-commit", "blockdev-add", "ringbuf-read", "nil-result",
		"BLOCK_JOB_COMPLETED", "RESUME", "query-commands", "query-qmp-schema",
		"blockdev-reopen", "nbd-server-start", "x-blockdev-set-iothread"}
	if !slices.Equal(order, wantOrder) {
		t.Fatalf("entity order %v", order)
	}

	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	if got := js(byName["0"]); got != `{"members":[],"meta-type":"object","name":"0"}` {
		t.Errorf("empty object: %s", got)
	}
	// No arguments and no return are "0"; allow-oob only when set.
	if got := js(byName["block-commit"]); !strings.Contains(got, `"features":["deprecated"]`) ||
		!strings.Contains(got, `"ret-type":"0"`) || strings.Contains(got, "allow-oob") {
		t.Errorf("block-commit: %s", got)
	}
	if e := byName["query-version"]; e["arg-type"] != "0" || e["ret-type"] == "0" {
		t.Errorf("query-version: %s", js(e))
	}
	if e := byName["ringbuf-read"]; e["allow-oob"] != true || e["ret-type"] != "str" {
		t.Errorf("ringbuf-read: %s", js(e))
	}
	if e := byName["RESUME"]; js(e) != `{"arg-type":"0","meta-type":"event","name":"RESUME"}` {
		t.Errorf("RESUME: %s", js(e))
	}

	// Builtins: only QSD's six, integers of every width shown as int.
	var builtins []string
	for _, e := range ents {
		if e["meta-type"] == "builtin" {
			builtins = append(builtins, e["name"].(string)+"="+e["json-type"].(string))
		}
	}
	slices.Sort(builtins)
	if want := []string{"any=value", "bool=boolean", "int=int", "null=null", "number=number", "str=string"}; !slices.Equal(builtins, want) {
		t.Errorf("builtins %v", builtins)
	}
	ret := byName[byName["blockdev-reopen"]["ret-type"].(string)]
	for _, m := range ret["members"].([]any) {
		m := m.(map[string]any)
		switch m["name"] {
		case "nums", "sizes":
			if m["type"] != "[int]" {
				t.Errorf("%s: %s", m["name"], js(m))
			}
		case "num", "any", "map":
			if want := map[string]string{"num": "number", "any": "any", "map": "any"}[m["name"].(string)]; m["type"] != want {
				t.Errorf("%s: %s", m["name"], js(m))
			}
		}
		_, hasDefault := m["default"]
		if opt := m["name"] != "nodes" && m["name"] != "num"; opt != hasDefault || (hasDefault && m["default"] != nil) {
			t.Errorf("member %s: default %v", m["name"], m["default"])
		}
	}

	// blockdev-add's argument is the union.
	u := byName[byName["blockdev-add"]["arg-type"].(string)]
	if u["meta-type"] != "object" || u["tag"] != "driver" {
		t.Fatalf("blockdev-add arg: %s", js(u))
	}
	variants := map[string]string{}
	for _, v := range u["variants"].([]any) {
		v := v.(map[string]any)
		variants[v["case"].(string)] = v["type"].(string)
	}
	if variants["vvfat"] != "0" || variants["file"] != variants["host_device"] || variants["file"] == "0" {
		t.Errorf("variants %v", variants)
	}
	file := byName[variants["file"]]
	if got := js(file["features"]); got != `["dynamic-auto-read-only"]` {
		t.Errorf("type features: %s", js(file))
	}
	if !strings.Contains(js(file["members"]), `{"default":null,"features":["unstable"],"name":"x-check-cache-dropped","type":"bool"}`) {
		t.Errorf("member features: %s", js(file))
	}
	// An alternate lists its branches in declaration order.
	qcow2 := byName[variants["qcow2"]]
	for _, m := range qcow2["members"].([]any) {
		m := m.(map[string]any)
		if m["name"] == "file" {
			alt := byName[m["type"].(string)]
			if got := js(alt); got != `{"members":[{"type":"`+byName["blockdev-add"]["arg-type"].(string)+`"},{"type":"str"}],"meta-type":"alternate","name":"`+m["type"].(string)+`"}` {
				t.Errorf("BlockdevRef: %s", got)
			}
		}
	}
	// Enums carry values and members.
	enum := byName[u["members"].([]any)[0].(map[string]any)["type"].(string)]
	if got := js(enum); !strings.Contains(got, `"members":[{"name":"blkdebug"},{"name":"file"}`) ||
		!strings.Contains(got, `"values":["blkdebug","file","host_device","qcow2","raw","vvfat","null-co"]`) {
		t.Errorf("enum: %s", got)
	}
	checkSchemaClosed(t, ents, byName)
}

// checkSchemaClosed checks that every type an entity refers to is listed,
// that masked names are numbers, and that unions cover their tag's enum.
func checkSchemaClosed(t *testing.T, ents []map[string]any, byName map[string]map[string]any) {
	t.Helper()
	ref := func(from, name string) {
		if byName[name] == nil {
			t.Errorf("%s refers to missing type %q", from, name)
		}
	}
	for _, e := range ents {
		name := e["name"].(string)
		switch e["meta-type"] {
		case "command":
			ref(name, e["arg-type"].(string))
			ref(name, e["ret-type"].(string))
		case "event":
			ref(name, e["arg-type"].(string))
		case "array":
			elem := e["element-type"].(string)
			ref(name, elem)
			if name != "["+elem+"]" {
				t.Errorf("array %s of %s", name, elem)
			}
		case "alternate":
			for _, m := range e["members"].([]any) {
				ref(name, m.(map[string]any)["type"].(string))
			}
		case "object":
			if _, err := strconv.Atoi(name); err != nil {
				t.Errorf("object name %q is not masked", name)
			}
			for _, m := range e["members"].([]any) {
				ref(name, m.(map[string]any)["type"].(string))
			}
			if e["tag"] == nil {
				continue
			}
			var tagType string
			for _, m := range e["members"].([]any) {
				if m := m.(map[string]any); m["name"] == e["tag"] {
					tagType = m["type"].(string)
				}
			}
			var cases []string
			for _, v := range e["variants"].([]any) {
				v := v.(map[string]any)
				ref(name, v["type"].(string))
				cases = append(cases, v["case"].(string))
			}
			var values []string
			for _, v := range byName[tagType]["values"].([]any) {
				values = append(values, v.(string))
			}
			slices.Sort(cases)
			slices.Sort(values)
			if !slices.Equal(cases, values) {
				t.Errorf("union %s: variants %v, enum values %v", name, cases, values)
			}
		}
	}
}

func TestIntrospectionDescribesItself(t *testing.T) {
	r := introspectionRegistry(t)
	ents := schemaEntities(t, r)
	byName := map[string]map[string]any{}
	for _, e := range ents {
		byName[e["name"].(string)] = e
	}
	ret := byName["query-qmp-schema"]["ret-type"].(string)
	info := byName[strings.Trim(ret, "[]")]
	if info["tag"] != "meta-type" || len(info["variants"].([]any)) != 7 {
		t.Fatalf("SchemaInfo: %v", info)
	}
	if got := byName["query-commands"]["ret-type"].(string); byName[strings.Trim(got, "[]")]["meta-type"] != "object" {
		t.Fatalf("query-commands ret %s", got)
	}
}

func TestIntrospectionCached(t *testing.T) {
	r := introspectionRegistry(t)
	a, b := r.SchemaJSON(), r.SchemaJSON()
	if &a[0] != &b[0] {
		t.Fatal("introspection recomputed")
	}
	res, _ := r.Call(context.Background(), "query-qmp-schema", nil)
	if string(res) != string(a) {
		t.Fatal("query-qmp-schema differs from SchemaJSON")
	}
	// Deterministic: a second registry built the same way says the same.
	if c := introspectionRegistry(t).SchemaJSON(); string(c) != string(a) {
		t.Fatal("introspection is not deterministic")
	}
	// Adding a command afterwards invalidates the cache.
	Define(r, "late", func(context.Context, *NoArgs) (Empty, error) { return Empty{}, nil })
	if c := r.SchemaJSON(); reflect.DeepEqual(c, a) || !strings.Contains(string(c), `"late"`) {
		t.Fatal("cache not invalidated")
	}
}
