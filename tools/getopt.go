package tools

import (
	"fmt"
	"strings"
)

// optSpec describes the options of one command line, like getopt_long's
// optstring and option table: short maps an option letter to whether it
// takes an argument; long maps a long name to the letter (or the
// pseudo-letter) it stands for.
type optSpec struct {
	short string // getopt syntax: "f:b:q" (a colon after a letter: takes an argument)
	long  map[string]longOpt
	// permute: options may follow operands (GNU getopt's default, which
	// qemu-img and qemu-io use for their global options). Without it,
	// parsing stops at the first operand (qemu-io's commands).
	permute bool
}

type longOpt struct {
	key    rune
	hasArg bool
}

// opt is one parsed option.
type opt struct {
	key rune
	arg string
}

func (s optSpec) takesArg(c rune) (known, hasArg bool) {
	i := strings.IndexRune(s.short, c)
	if i < 0 || c == ':' {
		return false, false
	}
	return true, i+1 < len(s.short) && s.short[i+1] == ':'
}

// getopt parses args. Errors use getopt's texts ("invalid option -- 'x'",
// "option requires an argument -- 'x'", "unrecognized option '--x'").
func getopt(args []string, s optSpec) (opts []opt, operands []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return opts, append(operands, args[i+1:]...), nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			lo, ok := s.long[name]
			if !ok {
				return nil, nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			switch {
			case lo.hasArg && !hasVal:
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			case !lo.hasArg && hasVal:
				return nil, nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			opts = append(opts, opt{lo.key, val})
		case len(a) > 1 && a[0] == '-':
			for j, c := range a[1:] {
				known, hasArg := s.takesArg(c)
				if !known {
					return nil, nil, fmt.Errorf("invalid option -- '%c'", c)
				}
				if !hasArg {
					opts = append(opts, opt{c, ""})
					continue
				}
				val := a[2+j:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, nil, fmt.Errorf("option requires an argument -- '%c'", c)
					}
					i++
					val = args[i]
				}
				opts = append(opts, opt{c, val})
				break
			}
		default:
			if !s.permute {
				return opts, append(operands, args[i:]...), nil
			}
			operands = append(operands, a)
		}
	}
	return opts, operands, nil
}
