package file

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLocked matches (errors.Is) every error caused by an image lock that
// another process, or another File on the same image, holds.
var ErrLocked = errors.New("image is locked by another user")

// qemuError carries QEMU's exact error text (what qemu-storage-daemon puts
// in a QMP error's desc) while still unwrapping to its cause, so callers
// can test errno values or blockio sentinels with errors.Is.
type qemuError struct {
	msg   string
	cause error
}

func (e *qemuError) Error() string { return e.msg }
func (e *qemuError) Unwrap() error { return e.cause }

// Is makes lock conflicts match ErrLocked. QEMU recognises them by the
// errno of the failed lock call: EAGAIN or EACCES.
func (e *qemuError) Is(target error) bool {
	if target != ErrLocked {
		return false
	}
	errno, ok := e.cause.(unix.Errno)
	return ok && (errno == unix.EAGAIN || errno == unix.EACCES)
}

// errorf builds an error with QEMU's text and no errno suffix.
func errorf(cause error, format string, args ...any) error {
	return &qemuError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// errnoErrorf mirrors QEMU's error_setg_errno: the text, ": ", strerror.
func errnoErrorf(errno unix.Errno, format string, args ...any) error {
	return &qemuError{
		msg:   fmt.Sprintf(format, args...) + ": " + strerror(errno),
		cause: errno,
	}
}

// lockErrorf mirrors raw_lock_error_setg_errno: EAGAIN and EACCES mean
// "someone else holds the byte", which is common enough that QEMU leaves
// the errno text out.
func lockErrorf(errno unix.Errno, format string, args ...any) error {
	if errno == unix.EAGAIN || errno == unix.EACCES {
		return errorf(errno, format, args...)
	}
	return errnoErrorf(errno, format, args...)
}

// strerror returns glibc's message for errno, which is what QEMU prints.
// Go's table carries the same strings with a lower-case first letter.
func strerror(errno unix.Errno) string {
	s := errno.Error()
	if strings.HasPrefix(s, "errno ") {
		return "Unknown error " + strconv.Itoa(int(errno))
	}
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// asErrno extracts the errno from a syscall error, EIO when there is none.
func asErrno(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EIO
}
