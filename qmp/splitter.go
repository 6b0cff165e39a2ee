package qmp

import (
	"bufio"
	"io"
)

// Limits QEMU's JSON streamer enforces (qobject/json-streamer.c); blockd
// keeps the same numbers so that what one daemon accepts the other does.
const (
	DefaultMaxMessage = 64 << 20
	MaxNesting        = 1024
)

// splitter cuts a byte stream into JSON messages the way QEMU's streamer
// does: a message ends when its braces and brackets balance, so several
// messages may share a line and one message may span many lines. It also
// rewrites QEMU's single-quoted strings into standard JSON strings.
//
// Invariant: buffered bytes never exceed maxSize; a message that grows
// past it is reported once and the rest of it is skipped (state is still
// tracked so the stream resynchronizes at the message's real end).
type splitter struct {
	r       *bufio.Reader
	maxSize int

	buf      []byte
	braces   int
	brackets int
	inString byte // 0, '"' or '\''
	escaped  bool
	scalar   bool // inside a top-level bare token (number, literal)
	skipping bool // discarding the rest of an oversized or too deep message
}

func newSplitter(r io.Reader, maxSize int) *splitter {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessage
	}
	return &splitter{r: bufio.NewReaderSize(r, 64<<10), maxSize: maxSize}
}

// next returns the next complete message, or a non-nil limitErr text for a
// message that was refused. io errors end the stream.
func (s *splitter) next() (msg []byte, limitErr string, err error) {
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return nil, "", err
		}
		if s.scalar && isDelimiter(c) {
			// A bare top-level token (number, literal) ends at the first
			// delimiter, which belongs to whatever comes next.
			_ = s.r.UnreadByte()
			return s.take(), "", nil
		}
		if m, lerr, done := s.feed(c); done {
			return m, lerr, nil
		}
	}
}

func (s *splitter) feed(c byte) (msg []byte, limitErr string, done bool) {
	if s.inString != 0 {
		if s.stringByte(c) && s.braces == 0 && s.brackets == 0 {
			// A top-level string is a complete (non-object) message.
			return s.take(), "", true
		}
		return s.checkSize()
	}
	if s.scalar {
		s.add(c)
		return s.checkSize()
	}
	switch c {
	case '"', '\'':
		s.inString = c
		s.add('"')
	case '{':
		s.braces++
		s.add(c)
	case '}':
		s.braces--
		s.add(c)
	case '[':
		s.brackets++
		s.add(c)
	case ']':
		s.brackets--
		s.add(c)
	case ' ', '\t', '\r', '\n':
		if s.braces == 0 && s.brackets == 0 {
			return nil, "", false
		}
		s.add(c)
		return s.checkSize()
	default:
		s.add(c)
		if s.braces == 0 && s.brackets == 0 {
			s.scalar = true
		}
		return s.checkSize()
	}
	if s.braces+s.brackets > MaxNesting && !s.skipping {
		s.skipping = true
		s.buf = s.buf[:0]
		return nil, "JSON nesting depth limit exceeded", true
	}
	if s.braces < 0 || s.brackets < 0 {
		// A closer without opener: the message is malformed; end it here so
		// the parser reports it and the stream starts afresh.
		m := s.take()
		return m, "", true
	}
	if s.braces == 0 && s.brackets == 0 && s.inString == 0 {
		if s.skipping {
			s.reset()
			return nil, "", false
		}
		return s.take(), "", true
	}
	return s.checkSize()
}

// stringByte handles one byte inside a string, converting single-quoted
// strings: an unescaped '"' must be escaped and "\'" becomes "'". It
// reports whether the byte closed the string.
func (s *splitter) stringByte(c byte) (closed bool) {
	switch {
	case s.escaped:
		s.escaped = false
		if c == '\'' && s.inString == '\'' {
			s.add('\'')
			return false
		}
		s.add('\\')
		s.add(c)
	case c == '\\':
		s.escaped = true
	case c == s.inString:
		s.inString = 0
		s.add('"')
		return true
	case c == '"':
		s.add('\\')
		s.add('"')
	default:
		s.add(c)
	}
	return false
}

func (s *splitter) checkSize() ([]byte, string, bool) {
	if !s.skipping && len(s.buf) > s.maxSize {
		s.skipping = true
		s.buf = s.buf[:0]
		if s.braces == 0 && s.brackets == 0 && s.inString == 0 {
			// Nothing left to resynchronize on: a huge bare token ends here.
			s.reset()
		}
		return nil, "JSON token size limit exceeded", true
	}
	return nil, "", false
}

func (s *splitter) add(c byte) {
	if !s.skipping {
		s.buf = append(s.buf, c)
	}
}

func (s *splitter) take() []byte {
	if s.skipping {
		s.reset()
		return nil
	}
	m := make([]byte, len(s.buf))
	copy(m, s.buf)
	s.reset()
	return m
}

func (s *splitter) reset() {
	s.buf = s.buf[:0]
	s.braces, s.brackets = 0, 0
	s.inString, s.escaped, s.scalar, s.skipping = 0, false, false, false
	if cap(s.buf) > 1<<20 {
		s.buf = nil // don't keep a huge buffer alive after one big message
	}
}

func isDelimiter(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '{', '}', '[', ']', ',', ':', '"', '\'':
		return true
	}
	return false
}
