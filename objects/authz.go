package objects

import (
	"encoding/json"
	"strings"

	"blockd/schema"
)

// authzInst is an authz-simple object: the one identity it lets in,
// changeable with qom-set (read under the registry's lock).
type authzInst struct{ identity *string }

func init() {
	RegisterClass(&Class{Name: "authz", Parent: "object", Abstract: true,
		Interfaces: []string{"user-creatable"}})
	RegisterClass(&Class{Name: "authz-simple", Parent: "authz",
		Props: []Property{strProp("identity", func(inst any) **string { return &inst.(*authzInst).identity })},
		Init: func(o *ObjectOptions) (any, error) {
			a := &authzInst{}
			if o.AuthzSimple != nil { // identity is required: decoding checked it
				id := o.AuthzSimple.Identity
				a.identity = &id
			}
			return a, nil
		},
	})
}

// authzListInst is an authz-list object: rules tried in order, the
// first that matches decides; otherwise the default policy.
type authzListInst struct {
	policy AuthZListPolicy
	rules  []AuthZListRule
}

// ruleList decodes a qom-set of "rules" with the schema's texts.
type ruleList struct {
	Rules []AuthZListRule `qapi:"rules"`
}

func init() {
	listOf := func(inst any) *authzListInst { return inst.(*authzListInst) }
	RegisterClass(&Class{Name: "authz-list", Parent: "authz",
		Props: []Property{
			{Name: "policy", Type: "QAuthZListPolicy",
				Get: func(inst any) any { return string(listOf(inst).policy) },
				Set: func(inst any, n string, v json.RawMessage) error {
					p, err := visitEnum(n, v, AuthZListPolicy("").EnumValues())
					if err == nil {
						listOf(inst).policy = AuthZListPolicy(p)
					}
					return err
				}},
			{Name: "rules", Type: "QAuthZListRule",
				Get: func(inst any) any {
					if r := listOf(inst).rules; r != nil {
						return r
					}
					return []AuthZListRule{}
				},
				Set: func(inst any, n string, v json.RawMessage) error {
					var l ruleList
					if err := schema.Decode(json.RawMessage(`{"rules":`+string(v)+`}`), &l); err != nil {
						return err
					}
					listOf(inst).rules = l.Rules
					return nil
				}},
		},
		Init: func(o *ObjectOptions) (any, error) {
			a := &authzListInst{policy: "deny"}
			if p := o.AuthzList; p != nil {
				if p.Policy != nil {
					a.policy = *p.Policy
				}
				a.rules = p.Rules
			}
			return a, nil
		},
	})
}

// allows is qauthz_list_is_allowed.
func (a *authzListInst) allows(identity string) bool {
	for _, r := range a.rules {
		matched := r.Match == identity
		if r.Format != nil && *r.Format == "glob" {
			matched = fnmatch(r.Match, identity)
		}
		if matched {
			return r.Policy == "allow"
		}
	}
	return a.policy == "allow"
}

// fnmatch is fnmatch(3) without flags: '*' and '?' match any characters
// ('/' included), '[...]' a class ('!' or '^' negates, ranges), '\'
// quotes the next character.
func fnmatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if fnmatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		case '[':
			// The class runs to the next ']' that is not its first
			// character; without one, '[' is an ordinary character.
			k := 1
			if k < len(pattern) && (pattern[k] == '!' || pattern[k] == '^') {
				k++
			}
			end := strings.IndexByte(pattern[min(k+1, len(pattern)):], ']')
			if end < 0 {
				if s == "" || s[0] != '[' {
					return false
				}
				pattern, s = pattern[1:], s[1:]
				continue
			}
			end += min(k+1, len(pattern))
			if s == "" {
				return false
			}
			class, neg := pattern[k:end], k == 2
			in := false
			for i := 0; i < len(class); i++ {
				if i+2 < len(class) && class[i+1] == '-' {
					in = in || class[i] <= s[0] && s[0] <= class[i+2]
					i += 2
				} else {
					in = in || class[i] == s[0]
				}
			}
			if in == neg {
				return false
			}
			pattern, s = pattern[end+1:], s[1:]
		case '\\':
			if len(pattern) > 1 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
			pattern, s = pattern[1:], s[1:]
		}
	}
	return s == ""
}
