// Package wiretest holds what the protocol fuzz targets of qmp and
// jsonrpc share: seeds taken from the recorded transcripts, a connected
// socket pair, and the check that every reply line is valid JSON.
package wiretest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TranscriptInputs returns every message sent in the transcripts under
// dir ("->" lines), in the order they are sent, one seed per transcript.
func TranscriptInputs(tb testing.TB, dir string) [][]byte {
	files, err := filepath.Glob(filepath.Join(dir, "*.qmp"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no transcripts in %s: %v", dir, err)
	}
	var seeds [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var in bytes.Buffer
		for _, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, "->|"):
				in.WriteString(strings.TrimPrefix(line[3:], " "))
			case strings.HasPrefix(line, "->"):
				in.WriteString(strings.TrimPrefix(line[2:], " ") + "\n")
			}
		}
		seeds = append(seeds, in.Bytes())
	}
	return seeds
}

// SocketPair returns two connected Unix stream sockets.
func SocketPair(tb testing.TB) (*net.UnixConn, *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			tb.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// Exchange writes in to the server's peer, half-closes, and returns the
// lines the server sent until it closed. A server that does not finish
// within the deadline fails the test (a hang).
func Exchange(tb testing.TB, peer *net.UnixConn, in []byte) []string {
	_ = peer.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = peer.Write(in)
		_ = peer.CloseWrite()
	}()
	var lines []string
	sc := bufio.NewScanner(peer)
	sc.Buffer(make([]byte, 1<<20), 1<<28)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("reading replies to %q: %v", in, err)
	}
	return lines
}

// CheckLines fails the test unless every line is one JSON object in
// valid UTF-8.
func CheckLines(tb testing.TB, in []byte, lines []string) {
	for _, l := range lines {
		var m map[string]any
		if !json.Valid([]byte(l)) || json.Unmarshal([]byte(l), &m) != nil || !strings.HasPrefix(l, "{") {
			tb.Fatalf("input %q: reply is not a JSON object: %q", in, l)
		}
		if !utf8Valid(l) {
			tb.Fatalf("input %q: reply is not valid UTF-8: %q", in, l)
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
