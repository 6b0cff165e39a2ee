package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"blockd/internal/qdict"
	"blockd/internal/wire"
	"blockd/schema"
)

// request is one validated QMP command message.
type request struct {
	name string
	args json.RawMessage // nil when absent
	id   json.RawMessage // nil when absent
	oob  bool            // sent as exec-oob
}

// parseRequest checks a message as QEMU's qmp_dispatch_check_obj does.
// The returned id is set whenever the input was an object with an "id",
// so that even refusals echo it.
func parseRequest(msg []byte, oobEnabled bool) (request, *schema.Error) {
	var req request
	trimmed := bytes.TrimLeft(msg, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if !json.Valid(msg) {
			return req, parseError(msg)
		}
		if text := wire.Check(msg); text != "" {
			return req, schema.Errorf("%s", text)
		}
		return req, schema.Errorf("QMP input must be a JSON object")
	}
	members, err := objectMembers(msg)
	if err != nil {
		return req, parseError(msg)
	}
	if text := wire.Check(msg); text != "" {
		return req, schema.Errorf("%s", text)
	}
	var execute, execOOB *string
	for _, m := range members {
		if m.key == "id" {
			req.id = qemuJSON(m.value)
		}
	}
	for _, m := range members {
		switch m.key {
		case "execute":
			s, ok := jsonString(m.value)
			if !ok {
				return req, schema.Errorf("QMP input member 'execute' must be a string")
			}
			execute = &s
		case "exec-oob":
			if !oobEnabled {
				return req, schema.Errorf("QMP input member 'exec-oob' is unexpected")
			}
			s, ok := jsonString(m.value)
			if !ok {
				return req, schema.Errorf("QMP input member 'exec-oob' must be a string")
			}
			execOOB = &s
		case "arguments":
			if v := bytes.TrimSpace(m.value); len(v) == 0 || v[0] != '{' {
				return req, schema.Errorf("QMP input member 'arguments' must be an object")
			}
			req.args = m.value
		case "id":
		default:
			return req, schema.Errorf("QMP input member '%s' is unexpected", m.key)
		}
	}
	switch {
	case execute != nil && execOOB != nil:
		return req, schema.Errorf("QMP input member 'execute' clashes with 'exec-oob'")
	case execute != nil:
		req.name = *execute
	case execOOB != nil:
		req.name, req.oob = *execOOB, true
	default:
		return req, schema.Errorf("QMP input lacks member 'execute'")
	}
	return req, nil
}

type member struct {
	key   string
	value json.RawMessage
}

// objectMembers decodes the top level of a JSON object keeping member
// order, which decides which error QEMU-compatible validation reports.
func objectMembers(msg []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var out []member
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := t.(string)
		if !ok {
			return nil, errors.New("key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("trailing data")
	}
	return out, nil
}

func jsonString(v json.RawMessage) (string, bool) {
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// parseError is QEMU's JSON parser's refusal of msg.
func parseError(msg []byte) *schema.Error {
	return schema.Errorf("%s", wire.SyntaxError(msg))
}

// reply builds a response in QEMU's member order: {"return": R, "id": I}
// on success and {"id": I, "error": {...}} on failure.
func reply(ret json.RawMessage, qerr *schema.Error, id json.RawMessage) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	if qerr != nil {
		if id != nil {
			fmt.Fprintf(&b, `"id":%s,`, id)
		}
		cls, _ := json.Marshal(qerr.Class)
		desc, _ := json.Marshal(qerr.Desc)
		fmt.Fprintf(&b, `"error":{"class":%s,"desc":%s}`, cls, desc)
	} else {
		if ret == nil {
			ret = json.RawMessage("{}")
		}
		fmt.Fprintf(&b, `"return":%s`, ret)
		if id != nil {
			fmt.Fprintf(&b, `,"id":%s`, id)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// qemuSpacing re-spaces compact JSON with ", " and ": " separators as
// QEMU's monitor writes them, for scripts that match reply text literally.
func qemuSpacing(compact []byte) []byte {
	var cb bytes.Buffer
	if json.Compact(&cb, compact) != nil {
		return compact
	}
	src := cb.Bytes()
	out := make([]byte, 0, len(src)+len(src)/8)
	inStr, esc := false, false
	for _, c := range src {
		out = append(out, c)
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ',' || c == ':'):
			out = append(out, ' ')
		}
	}
	return out
}

// qemuJSON re-encodes a checked JSON value (the id a reply echoes) the way
// the reference writes back what it parsed: objects in QDict order,
// non-ASCII as \u escapes, integers beyond 64 bits and all non-integers
// as doubles ("%.17g").
func qemuJSON(raw json.RawMessage) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	out, err := appendQemuJSON(nil, dec)
	if err != nil {
		return raw
	}
	return out
}

func appendQemuJSON(buf []byte, dec *json.Decoder) ([]byte, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := t.(type) {
	case json.Delim:
		if v == '[' {
			buf = append(buf, '[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf = append(buf, ',')
				}
				if buf, err = appendQemuJSON(buf, dec); err != nil {
					return nil, err
				}
			}
			_, err = dec.Token()
			return append(buf, ']'), err
		}
		var d qdict.Dict
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			val, err := appendQemuJSON(nil, dec)
			if err != nil {
				return nil, err
			}
			d = d.Set(k.(string), val)
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		buf = append(buf, '{')
		for i, e := range d.Ordered() {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = schema.AppendJSONString(buf, e.Key)
			buf = append(buf, ':')
			buf = append(buf, e.Val.([]byte)...)
		}
		return append(buf, '}'), nil
	case string:
		return schema.AppendJSONString(buf, v), nil
	case json.Number:
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return strconv.AppendInt(buf, i, 10), nil
			}
			if u, err := strconv.ParseUint(s, 10, 64); err == nil {
				return strconv.AppendUint(buf, u, 10), nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		return strconv.AppendFloat(buf, f, 'g', 17, 64), nil
	case bool:
		return strconv.AppendBool(buf, v), nil
	case nil:
		return append(buf, "null"...), nil
	}
	return nil, fmt.Errorf("unexpected token %v", t)
}
