// Package corr carries the ids that correlate log lines across packages:
// the uuid of the QMP or JSON-RPC connection a command came from travels
// in the command's context, so that what the command creates (a job) can
// name that connection in its own log lines.
package corr

import "context"

type connKey struct{}

// WithConn returns ctx carrying the uuid of the client connection.
func WithConn(ctx context.Context, uuid string) context.Context {
	return context.WithValue(ctx, connKey{}, uuid)
}

// Conn returns the connection uuid ctx carries, or "" (a command given on
// the command line, or work that no client asked for).
func Conn(ctx context.Context) string {
	s, _ := ctx.Value(connKey{}).(string)
	return s
}
