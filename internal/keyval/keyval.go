// Package keyval owns QEMU's option-string splitting, shared by blockd's
// command line (--blockdev, --chardev) and its tools (-o options).
package keyval

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Split cuts "a=1,b=x,,y" at single commas; ",," stands for a comma.
func Split(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	if cur.Len() > 0 || len(parts) > 0 {
		parts = append(parts, cur.String())
	}
	return parts
}

// Parse parses QEMU's key=value,key=value syntax (util/keyval.c):
// ",," escapes a comma, a first element without "=" is the value of
// implied, dotted keys build nested objects, and an object whose keys are
// 0..n-1 becomes a list. Values stay strings; the schema's keyval decoding
// converts them to the declared types.
func Parse(s, implied string) (map[string]any, error) {
	root := map[string]any{}
	parts := Split(s)
	for i, p := range parts {
		key, val, ok := strings.Cut(p, "=")
		if !ok {
			if i == 0 && implied != "" {
				key, val = implied, p
			} else {
				return nil, fmt.Errorf("Expected '=' after parameter '%s'", p)
			}
		}
		if key == "" {
			return nil, fmt.Errorf("Invalid parameter ''")
		}
		if err := setDotted(root, key, val); err != nil {
			return nil, err
		}
	}
	return listify(root).(map[string]any), nil
}

func setDotted(root map[string]any, key, val string) error {
	path := strings.Split(key, ".")
	m := root
	for i, k := range path[:len(path)-1] {
		switch next := m[k].(type) {
		case nil:
			child := map[string]any{}
			m[k] = child
			m = child
		case map[string]any:
			m = next
		default:
			return fmt.Errorf("Parameters '%s.*' conflict with parameter '%s'",
				strings.Join(path[:i+1], "."), strings.Join(path[:i+1], "."))
		}
	}
	last := path[len(path)-1]
	if _, isObj := m[last].(map[string]any); isObj {
		return fmt.Errorf("Parameter '%s' conflicts with parameters '%s.*'", key, key)
	}
	m[last] = val
	return nil
}

// listify turns objects keyed 0..n-1 into lists, recursively.
func listify(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for k, c := range m {
		m[k] = listify(c)
	}
	if len(m) == 0 {
		return m
	}
	idx := make([]int, 0, len(m))
	for k := range m {
		n, err := strconv.Atoi(k)
		if err != nil || n < 0 {
			return m
		}
		idx = append(idx, n)
	}
	sort.Ints(idx)
	for i, n := range idx {
		if i != n {
			return m
		}
	}
	list := make([]any, len(idx))
	for _, n := range idx {
		list[n] = m[strconv.Itoa(n)]
	}
	return list
}
