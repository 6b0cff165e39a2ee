// Package qmptest owns blockd's replayed QMP transcripts: the transcript
// format, its normalization, and a runner that plays one against a fresh
// blockd process over a real Unix socket.
//
// Format, one directive per line:
//
//	# comment
//	!args ARGS...        extra daemon arguments (before the first exchange)
//	!sh CMD              run a shell command (setup); $TMP is the test dir
//	-> TEXT              send TEXT and a newline, verbatim (need not be JSON)
//	->| TEXT             send TEXT without a newline
//	!repeat N TEXT       send TEXT N times, without a newline
//	<- JSON              expect the next message from blockd to equal JSON
//	!eof                 close our side and expect blockd to close too
//
// The first "<-" before any "->" is the greeting. In expectations "$TMP"
// is the test directory and the string "$ANY" matches any value; event
// timestamps are checked for shape and then ignored, and automatic node
// names (#blockNNN) compare equal to "#block*".
package qmptest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Step is one transcript directive.
type Step struct {
	Line int
	Kind string // "send", "sendraw", "repeat", "expect", "sh", "eof"
	Text string
	N    int
}

// Transcript is a parsed transcript file.
type Transcript struct {
	Name  string
	Args  []string
	Steps []Step
}

// Parse reads a transcript file.
func Parse(path string) (*Transcript, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &Transcript{Name: path}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		step, err := parseLine(line, n)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if step.Kind == "args" {
			t.Args = append(t.Args, strings.Fields(step.Text)...)
			continue
		}
		t.Steps = append(t.Steps, step)
	}
	return t, sc.Err()
}

func parseLine(line string, n int) (Step, error) {
	cut := func(prefix string) (string, bool) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimPrefix(line[len(prefix):], " "), true
		}
		return "", false
	}
	if rest, ok := cut("->|"); ok {
		return Step{Line: n, Kind: "sendraw", Text: rest}, nil
	}
	if rest, ok := cut("->"); ok {
		return Step{Line: n, Kind: "send", Text: rest}, nil
	}
	if rest, ok := cut("<-"); ok {
		return Step{Line: n, Kind: "expect", Text: rest}, nil
	}
	if rest, ok := cut("!args"); ok {
		return Step{Line: n, Kind: "args", Text: rest}, nil
	}
	if rest, ok := cut("!sh"); ok {
		return Step{Line: n, Kind: "sh", Text: rest}, nil
	}
	if rest, ok := cut("!repeat"); ok {
		count, text, _ := strings.Cut(rest, " ")
		c, err := strconv.Atoi(count)
		if err != nil || c < 0 {
			return Step{}, fmt.Errorf("bad repeat count %q", count)
		}
		return Step{Line: n, Kind: "repeat", Text: text, N: c}, nil
	}
	if strings.TrimSpace(line) == "!eof" {
		return Step{Line: n, Kind: "eof"}, nil
	}
	return Step{}, fmt.Errorf("unknown directive %q", line)
}
