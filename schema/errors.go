package schema

import "fmt"

// Error classes as QEMU's QMP sends them (qapi/error.json ErrorClass).
const (
	ClassGeneric         = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)

// Error is a QMP error: its class and desc are sent to the client as they
// are, so Desc must carry qemu-storage-daemon's exact text where one exists.
type Error struct {
	Class string
	Desc  string
}

func (e *Error) Error() string { return e.Desc }

// Errorf returns a GenericError with a formatted description.
func Errorf(format string, args ...any) *Error {
	return &Error{Class: ClassGeneric, Desc: fmt.Sprintf(format, args...)}
}

// ClassErrorf returns an error of the given class.
func ClassErrorf(class, format string, args ...any) *Error {
	return &Error{Class: class, Desc: fmt.Sprintf(format, args...)}
}

// AsError converts any error into a QMP error; errors that are not *Error
// become GenericError with their message.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	if qe, ok := err.(*Error); ok {
		return qe
	}
	var qe *Error
	if asErr(err, &qe) {
		return qe
	}
	return &Error{Class: ClassGeneric, Desc: err.Error()}
}

// argumentError marks a failure to decode a command's arguments, which
// JSON-RPC reports with its own code; everywhere else it is its *Error.
type argumentError struct{ err *Error }

func (e *argumentError) Error() string { return e.err.Desc }
func (e *argumentError) Unwrap() error { return e.err }

// IsDecodeError reports whether err came from decoding the arguments
// rather than from running the command.
func IsDecodeError(err error) bool {
	var ae *argumentError
	return asErr(err, &ae)
}
