// Package errtext owns the translation between Go errors and the C errno
// world QEMU's messages and FUSE/NBD replies live in: glibc's strerror
// texts and the errno carried by a wrapped syscall error.
package errtext

import (
	"errors"
	"strconv"
	"strings"
	"syscall"
)

// Strerror returns glibc's message for e, which is what QEMU prints.
// Go's table carries the same strings with a lower-case first letter.
func Strerror(e syscall.Errno) string {
	s := e.Error()
	if strings.HasPrefix(s, "errno ") {
		return "Unknown error " + strconv.Itoa(int(e))
	}
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Errno extracts the errno from a syscall error, EIO when there is none.
func Errno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
