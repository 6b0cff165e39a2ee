package blkdebug

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"blockd/internal/errtext"
	"blockd/schema"
)

// readConfig parses a blkdebug config file, QEMU's qemu_config_parse
// format: "[inject-error]" and "[set-state]" groups of `key = "value"`
// lines, '#' comments, with the reference's texts for what it refuses.
func readConfig(path string) (inject []schema.BlkdebugInjectErrorOptions, set []schema.BlkdebugSetStateOptions, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("Could not read blkdebug config file: %s", errtext.Strerror(errtext.Errno(err)))
	}
	defer f.Close()
	type group struct {
		name string
		opts map[string]string
	}
	var groups []*group
	var cur *group
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(strings.TrimRight(line, " \t"), "]") {
			name := strings.Fields(strings.Trim(strings.TrimSpace(line), "[]"))
			if len(name) == 0 {
				return nil, nil, errors.New("parse error")
			}
			if name[0] != "inject-error" && name[0] != "set-state" {
				return nil, nil, fmt.Errorf("There is no option group '%s'", name[0])
			}
			cur = &group{name: name[0], opts: map[string]string{}}
			groups = append(groups, cur)
			continue
		}
		// ` key = "value"`; as with sscanf, a lone word is a key whose
		// value is empty.
		fields := strings.Fields(line)
		if len(fields) == 0 {
			return nil, nil, errors.New("parse error")
		}
		key, value := fields[0], ""
		if i := strings.Index(line, "= \""); i >= 0 {
			value, _, _ = strings.Cut(line[i+3:], "\"")
		}
		if cur == nil {
			return nil, nil, errors.New("no group defined")
		}
		cur.opts[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("Could not read blkdebug config file: %v", err)
	}
	for _, g := range groups {
		ev, ok := g.opts["event"]
		if !ok {
			return nil, nil, errors.New("Missing event name for rule")
		}
		if !validEvent(ev) {
			return nil, nil, fmt.Errorf("invalid parameter value: %s", ev)
		}
		num := func(key string) (*int64, error) {
			v, ok := g.opts[key]
			if !ok {
				return nil, nil
			}
			var x int64
			if _, err := fmt.Sscan(v, &x); err != nil {
				return nil, fmt.Errorf("Parameter '%s' expects a number", key)
			}
			return &x, nil
		}
		boolean := func(key string) (*bool, error) {
			v, ok := g.opts[key]
			if !ok {
				return nil, nil
			}
			switch v {
			case "on", "yes", "true", "y":
				b := true
				return &b, nil
			case "off", "no", "false", "n":
				b := false
				return &b, nil
			}
			return nil, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
		}
		var errs []error
		get := func(key string) *int64 { v, err := num(key); errs = append(errs, err); return v }
		getb := func(key string) *bool { v, err := boolean(key); errs = append(errs, err); return v }
		switch g.name {
		case "inject-error":
			r := schema.BlkdebugInjectErrorOptions{Event: schema.BlkdebugEvent(ev), State: get("state"),
				Errno: get("errno"), Sector: get("sector"), Once: getb("once"), Immediately: getb("immediately")}
			if t, ok := g.opts["iotype"]; ok {
				it := schema.BlkdebugIOType(t)
				r.Iotype = &it
			}
			inject = append(inject, r)
		case "set-state":
			r := schema.BlkdebugSetStateOptions{Event: schema.BlkdebugEvent(ev), State: get("state")}
			if ns := get("new_state"); ns != nil {
				r.NewState = *ns
			}
			set = append(set, r)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, nil, err
		}
	}
	return inject, set, nil
}

func validEvent(ev string) bool {
	for _, v := range schema.BlkdebugEvent("").EnumValues() {
		if v == ev {
			return true
		}
	}
	return false
}
