package jsonrpc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// lineStream is newline-delimited JSON framing for jsonrpc2 (so socat
// works by hand) with two properties the library's streams lack: input the
// library would treat as fatal (malformed JSON, batches) is answered here
// and the connection goes on, and every outgoing message (replies and
// event notifications) goes through one bounded queue drained by one
// writer, so a client that stops reading never blocks the sender and
// notifications keep their order relative to replies.
type lineStream struct {
	conn    io.ReadWriteCloser
	r       *bufio.Reader
	maxLine int

	out      chan []byte
	done     chan struct{}
	closeOne sync.Once
	closed   atomic.Bool
	onDrop   func()
}

func newLineStream(conn io.ReadWriteCloser, maxLine, queueLen int, onDrop func()) *lineStream {
	s := &lineStream{
		conn: conn, r: bufio.NewReaderSize(conn, 64<<10), maxLine: maxLine,
		out: make(chan []byte, queueLen), done: make(chan struct{}), onDrop: onDrop,
	}
	go s.writeLoop()
	return s
}

func (s *lineStream) writeLoop() {
	for {
		select {
		case b := <-s.out:
			if _, err := s.conn.Write(b); err != nil {
				_ = s.Close()
				return
			}
		case <-s.done:
			return
		}
	}
}

// enqueue never blocks: a full queue means the client is too far behind.
func (s *lineStream) enqueue(b []byte) error {
	if s.closed.Load() {
		return io.ErrClosedPipe
	}
	select {
	case s.out <- append(b, '\n'):
		return nil
	default:
		if s.onDrop != nil {
			s.onDrop()
		}
		_ = s.Close()
		return io.ErrClosedPipe
	}
}

// WriteObject implements jsonrpc2.ObjectStream.
func (s *lineStream) WriteObject(obj any) error {
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return s.enqueue(b)
}

// ReadObject implements jsonrpc2.ObjectStream: it returns the next message
// the library can handle, answering the others itself.
func (s *lineStream) ReadObject(v any) error {
	for {
		line, err := s.readLine()
		if err != nil {
			return err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		switch {
		case line[0] == '[':
			if json.Valid(line) {
				_ = s.enqueue(errorResponse(codeInvalidRequest, "Invalid Request: batch requests are not supported by blockd"))
				continue
			}
		case json.Valid(line):
			if err := json.Unmarshal(line, v); err != nil {
				_ = s.enqueue(errorResponse(codeInvalidRequest, "Invalid Request: "+err.Error()))
				continue
			}
			return nil
		}
		_ = s.enqueue(errorResponse(codeParseError, "Parse error"))
	}
}

var errLineTooLong = errors.New("message too long")

// readLine reads one line without letting a huge line grow memory: the
// rest of an oversized line is skipped and answered as an invalid request.
func (s *lineStream) readLine() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		if len(buf)+len(chunk) > s.maxLine {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = s.r.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return nil, err
			}
			_ = s.enqueue(errorResponse(codeInvalidRequest, "Invalid Request: "+errLineTooLong.Error()))
			buf = buf[:0]
			continue
		}
		buf = append(buf, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if len(bytes.TrimSpace(buf)) > 0 && err == io.EOF {
				return buf, nil
			}
			return nil, err
		}
		return buf, nil
	}
}

// Close implements jsonrpc2.ObjectStream.
func (s *lineStream) Close() error {
	var err error
	s.closeOne.Do(func() {
		s.closed.Store(true)
		close(s.done)
		err = s.conn.Close()
	})
	return err
}

// JSON-RPC 2.0 error codes.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeServerError    = -32000
)

func errorResponse(code int, msg string) []byte {
	b, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": code, "message": msg},
	})
	return b
}
