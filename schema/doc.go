// Package schema owns blockd's command surface as data: every QMP command
// and event with its argument and return types, the strict decoding of
// arguments with QEMU's error texts, the encoding of return values, and
// the introspection (query-commands, query-qmp-schema) generated from the
// same declarations so that they cannot drift apart.
package schema

import "errors"

func asErr(err error, target any) bool { return errors.As(err, target) }
