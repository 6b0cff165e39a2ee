// Package jsonrpc owns blockd's JSON-RPC 2.0 endpoint: the same commands
// as QMP (method = command name, params = arguments), run by the same
// dispatcher, with events sent as "event" notifications. Framing is one
// JSON message per line so that `socat - UNIX-CONNECT:PATH` works.
package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
	"go.uber.org/zap"

	"blockd/events"
	"blockd/internal/accept"
	"blockd/qmp"
	"blockd/schema"
)

// Limits per connection: the largest message, and how many outgoing
// messages may wait for a slow client before it is disconnected.
const (
	maxMessage = 64 << 20
	queueLen   = 1024
)

// Server serves JSON-RPC connections.
type Server struct {
	d   qmp.Dispatcher
	bus *events.Bus
	log *zap.Logger

	listeners accept.Listeners
	mu        sync.Mutex
	closing   bool
	conns     map[*jsonrpc2.Conn]struct{}
	wg        sync.WaitGroup
}

// NewServer returns a server running commands through d.
func NewServer(d qmp.Dispatcher, bus *events.Bus, log *zap.Logger) *Server {
	return &Server{d: d, bus: bus, log: log, conns: map[*jsonrpc2.Conn]struct{}{}}
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error { return s.listeners.Serve(l, s.serveConn) }

func (s *Server) serveConn(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		_ = c.Close()
		return
	}
	stream := newLineStream(c, maxMessage, queueLen, func() {
		s.log.Warn("JSON-RPC client is not reading its replies and events; disconnecting")
	})
	// Handlers run one at a time per connection, in order, as on QMP.
	conn := jsonrpc2.NewConn(context.Background(), stream, handlerFunc(s.handle),
		jsonrpc2.SetLogger(zapPrintf{s.log}))
	unsubscribe := s.bus.Subscribe(func(e events.Event) {
		_ = stream.enqueue(notification(e))
	})
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-conn.DisconnectNotify()
		unsubscribe()
		_ = stream.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
}

// handle maps a request onto the QMP command of the same name. The
// response is queued on the owner goroutine, as on QMP, so that it
// precedes notifications of anything the owner does afterwards.
func (s *Server) handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	respond := func(ret json.RawMessage, rerr *jsonrpc2.Error) {
		if req.Notif {
			return
		}
		var err error
		if rerr != nil {
			err = conn.ReplyWithError(ctx, req.ID, rerr)
		} else {
			err = conn.Reply(ctx, req.ID, ret)
		}
		if err != nil && !errors.Is(err, jsonrpc2.ErrClosed) {
			s.log.Debug("JSON-RPC reply not sent", zap.Error(err))
		}
	}
	if _, ok := s.d.Lookup(req.Method); !ok {
		respond(nil, rpcError(codeMethodNotFound, schema.ClassErrorf(schema.ClassCommandNotFound,
			"The command %s has not been found", req.Method)))
		return
	}
	var args json.RawMessage
	if req.Params != nil && string(*req.Params) != "null" {
		if p := *req.Params; len(p) == 0 || p[0] != '{' {
			respond(nil, rpcError(codeInvalidParams, schema.Errorf("QMP input member 'arguments' must be an object")))
			return
		}
		args = *req.Params
	}
	s.d.Execute(ctx, req.Method, args, func(ret json.RawMessage, err error) {
		if err != nil {
			code := codeServerError
			if schema.IsDecodeError(err) {
				code = codeInvalidParams
			}
			respond(nil, rpcError(code, schema.AsError(err)))
			return
		}
		respond(ret, nil)
	})
}

// rpcError carries the QMP error in data exactly as QMP would send it.
func rpcError(code int, qe *schema.Error) *jsonrpc2.Error {
	data, _ := json.Marshal(map[string]string{"class": qe.Class, "desc": qe.Desc})
	raw := json.RawMessage(data)
	return &jsonrpc2.Error{Code: int64(code), Message: qe.Desc, Data: &raw}
}

func notification(e events.Event) []byte {
	b, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"method":  "event",
		"params": map[string]any{
			"event":     e.Name,
			"data":      e.Data,
			"timestamp": e.Stamp(),
		},
	})
	return b
}

// Close stops accepting and disconnects every client.
func (s *Server) Close() {
	s.listeners.Close()
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// zapPrintf routes the library's log lines to zap at debug level.
type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(format string, v ...any) { z.log.Sugar().Debugf(format, v...) }

// handlerFunc adapts a function to jsonrpc2.Handler. The library calls it
// for one request at a time per connection, in order, as QMP does.
type handlerFunc func(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request)

func (f handlerFunc) Handle(ctx context.Context, c *jsonrpc2.Conn, r *jsonrpc2.Request) { f(ctx, c, r) }
