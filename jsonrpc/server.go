// Package jsonrpc owns blockd's JSON-RPC 2.0 endpoint: the same commands
// as QMP (method = command name, params = arguments), run by the same
// dispatcher, with events sent as "event" notifications. Framing is one
// JSON message per line so that `socat - UNIX-CONNECT:PATH` works. Output
// goes through the same queue as QMP's (internal/wire), with the same
// flow control.
package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/accept"
	"blockd/internal/wire"
	"blockd/qmp"
	"blockd/schema"
)

// maxMessage is the largest accepted message (QEMU's QMP limit).
const maxMessage = 64 << 20

// Flush bounds: after a client half-closes, and at shutdown.
const (
	finishTimeout = 5 * time.Second
	closeTimeout  = 10 * time.Second
)

// Server serves JSON-RPC connections.
type Server struct {
	d   qmp.Dispatcher
	bus *events.Bus
	log *zap.Logger

	listeners accept.Listeners
	mu        sync.Mutex
	closing   bool
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// conn is one client connection.
type conn struct {
	c   net.Conn
	out *wire.Queue
	log *zap.Logger
}

// NewServer returns a server running commands through d.
func NewServer(d qmp.Dispatcher, bus *events.Bus, log *zap.Logger) *Server {
	return &Server{d: d, bus: bus, log: log, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	return s.listeners.Serve(l, s.serveConn, s.log)
}

func (s *Server) serveConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		_ = c.Close()
		return
	}
	cn := &conn{c: c, log: s.log.With(zap.String("conn", uuid.NewString()))}
	cn.out = wire.NewQueue(c, func(m []byte) []byte { return append(m, '\n') }, func(queued int) {
		cn.log.Warn("JSON-RPC client lets its events pile up without reading; disconnecting",
			zap.Int("queued", queued))
		_ = c.Close()
	})
	unsubscribe := s.bus.Subscribe(func(e events.Event) { cn.out.Push(notification(e)) })
	s.conns[cn] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		cn.log.Debug("JSON-RPC client connected")
		s.readLoop(cn)
		unsubscribe()
		cn.out.Finish(finishTimeout)
		<-cn.out.Done()
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, cn)
		s.mu.Unlock()
		cn.log.Debug("JSON-RPC client disconnected")
	}()
}

// readLoop handles requests one at a time, in order, as QMP does, and
// stops reading while the client's output queue is full.
func (s *Server) readLoop(cn *conn) {
	lr := newLineReader(cn.c, maxMessage)
	for cn.out.WaitRoom() {
		line, tooLong, err := lr.next()
		if err != nil {
			return
		}
		if tooLong {
			cn.out.Push(errorResponse(nil, codeInvalidRequest, "Invalid Request: message too long", nil))
			continue
		}
		s.handle(cn, line)
	}
}

// request is the part of a JSON-RPC request blockd reads.
type request struct {
	Method *string          `json:"method"`
	Params json.RawMessage  `json:"params"`
	ID     *json.RawMessage `json:"id"`
}

func (s *Server) handle(cn *conn, line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	if !json.Valid(line) {
		cn.out.Push(errorResponse(nil, codeParseError, "Parse error", nil))
		return
	}
	if text := wire.Check(line); text != "" {
		cn.out.Push(errorResponse(nil, codeParseError, "Parse error", schema.Errorf("%s", text)))
		return
	}
	if line[0] == '[' {
		cn.out.Push(errorResponse(nil, codeInvalidRequest, "Invalid Request: batch requests are not supported by blockd", nil))
		return
	}
	var req request
	if line[0] != '{' || json.Unmarshal(line, &req) != nil || req.Method == nil {
		cn.out.Push(errorResponse(nil, codeInvalidRequest, "Invalid Request: not a request object with a string method", nil))
		return
	}
	var id json.RawMessage
	if req.ID != nil {
		id = *req.ID
		if c := id[0]; c == '{' || c == '[' || c == 't' || c == 'f' {
			cn.out.Push(errorResponse(nil, codeInvalidRequest, "Invalid Request: id must be a string, a number or null", nil))
			return
		}
	}
	respond := func(ret json.RawMessage, code int, qe *schema.Error) {
		if req.ID == nil {
			return // a notification gets no response
		}
		if qe != nil {
			cn.out.Push(errorResponse(id, code, qe.Desc, qe))
			return
		}
		cn.out.Push(resultResponse(id, ret))
	}
	method := *req.Method
	if _, ok := s.d.Lookup(method); !ok {
		respond(nil, codeMethodNotFound, schema.ClassErrorf(schema.ClassCommandNotFound,
			"The command %s has not been found", method))
		return
	}
	var args json.RawMessage
	if p := bytes.TrimSpace(req.Params); len(p) > 0 && string(p) != "null" {
		if p[0] != '{' {
			respond(nil, codeInvalidParams, schema.Errorf("QMP input member 'arguments' must be an object"))
			return
		}
		args = p
	}
	// The response is queued on the owner goroutine, as on QMP, so that it
	// precedes notifications of anything the owner does afterwards.
	s.d.Execute(context.Background(), method, args, func(ret json.RawMessage, err error) {
		if err != nil {
			code := codeServerError
			if schema.IsDecodeError(err) {
				code = codeInvalidParams
			}
			respond(nil, code, schema.AsError(err))
			return
		}
		respond(ret, 0, nil)
	})
}

// JSON-RPC 2.0 error codes.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeServerError    = -32000
)

func resultResponse(id, result json.RawMessage) []byte {
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result"`
		JSONRPC string          `json:"jsonrpc"`
	}{rawID(id), result, "2.0"})
	return b
}

// errorResponse carries the QMP error, when there is one, in data exactly
// as QMP would send it.
func errorResponse(id json.RawMessage, code int, msg string, qe *schema.Error) []byte {
	type qmpError struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	}
	type rpcError struct {
		Code    int       `json:"code"`
		Message string    `json:"message"`
		Data    *qmpError `json:"data,omitempty"`
	}
	var data *qmpError
	if qe != nil {
		data = &qmpError{qe.Class, qe.Desc}
	}
	b, _ := json.Marshal(struct {
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
		JSONRPC string          `json:"jsonrpc"`
	}{rawID(id), rpcError{code, msg, data}, "2.0"})
	return b
}

func rawID(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	return id
}

func notification(e events.Event) []byte {
	b, _ := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  any    `json:"params"`
	}{"2.0", "event", struct {
		Event     string           `json:"event"`
		Data      json.RawMessage  `json:"data"`
		Timestamp events.Timestamp `json:"timestamp"`
	}{e.Name, e.Data, e.Stamp()}})
	return b
}

// Close stops accepting, lets every client receive what is queued for
// it, and disconnects it.
func (s *Server) Close() {
	s.listeners.Close()
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for cn := range s.conns {
		conns = append(conns, cn)
		if cr, ok := cn.c.(interface{ CloseRead() error }); ok {
			_ = cr.CloseRead()
		} else {
			cn.out.Finish(closeTimeout)
		}
	}
	s.mu.Unlock()
	deadline := time.After(closeTimeout)
	for _, cn := range conns {
		select {
		case <-cn.out.Done():
		case <-deadline:
			s.log.Warn("a JSON-RPC client did not take its last replies in time")
		}
		cn.out.Close()
		_ = cn.c.Close()
	}
	s.wg.Wait()
}
