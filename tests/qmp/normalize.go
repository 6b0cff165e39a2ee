package qmptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

var autoNodeName = regexp.MustCompile(`#block\d+`)

// normalize prepares a received message for comparison: event timestamps
// are validated and removed, temp paths and automatic node names made
// stable.
func normalize(msg map[string]any, tmp string) (map[string]any, error) {
	if _, isEvent := msg["event"]; isEvent {
		ts, ok := msg["timestamp"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("event without timestamp: %v", msg)
		}
		if _, ok := ts["seconds"].(float64); !ok {
			return nil, fmt.Errorf("event timestamp without seconds: %v", msg)
		}
		if _, ok := ts["microseconds"].(float64); !ok {
			return nil, fmt.Errorf("event timestamp without microseconds: %v", msg)
		}
		delete(msg, "timestamp")
	}
	return scrub(msg, tmp).(map[string]any), nil
}

func scrub(v any, tmp string) any {
	switch x := v.(type) {
	case string:
		x = strings.ReplaceAll(x, tmp, "$TMP")
		return autoNodeName.ReplaceAllString(x, "#block*")
	case []any:
		for i := range x {
			x[i] = scrub(x[i], tmp)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = scrub(e, tmp)
		}
	}
	return v
}

// matches compares an expectation with a normalized message; the string
// "$ANY" in the expectation matches any value.
func matches(want, got any) bool {
	if s, ok := want.(string); ok && s == "$ANY" {
		return true
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok || !matches(wv, gv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !matches(w[i], g[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, got)
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// firstDiff names the first place where got differs from want, to make a
// mismatch in a long reply readable.
func firstDiff(want, got any, path string) string {
	if matches(want, got) {
		return ""
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want object, got %s", path, compact(got))
		}
		for k, wv := range w {
			gv, present := g[k]
			if !present {
				return fmt.Sprintf("%s.%s: missing", path, k)
			}
			if d := firstDiff(wv, gv, path+"."+k); d != "" {
				return d
			}
		}
		for k, gv := range g {
			if _, expected := w[k]; !expected {
				return fmt.Sprintf("%s.%s: unexpected %s", path, k, compact(gv))
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: want %d elements, got %s", path, len(w), compact(got))
		}
		for i := range w {
			if d := firstDiff(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
	}
	return fmt.Sprintf("%s: want %s, got %s", path, compact(want), compact(got))
}

// sameMemberOrder checks that a message's top-level members come in the
// order of the recorded expectation, with an event's timestamp first (the
// recording drops it): the reference's text order, which clients that
// compare raw lines depend on.
func sameMemberOrder(want, got []byte) error {
	w, g := topKeys(want), topKeys(got)
	if len(g) > 0 && slices.Contains(g, "event") {
		if g[0] != "timestamp" {
			return fmt.Errorf("event members %v: timestamp must come first", g)
		}
		g = g[1:]
		w = slices.DeleteFunc(w, func(k string) bool { return k == "timestamp" })
	}
	if !slices.Equal(w, g) {
		return fmt.Errorf("member order %v, want %v", g, w)
	}
	return nil
}

// topKeys lists the member names of a JSON object in text order.
func topKeys(msg []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(msg))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		keys = append(keys, fmt.Sprint(t))
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return keys
		}
	}
	return keys
}
