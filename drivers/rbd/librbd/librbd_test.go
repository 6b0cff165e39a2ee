package librbd

import (
	"errors"
	"strings"
	"testing"
)

// Without the libraries, the error names the missing file and the Debian
// package that ships it (and nothing is half-registered: load stops at
// the first failure).
func TestMissingLibraryNamesPackage(t *testing.T) {
	for _, tc := range []struct{ rados, rbd, want string }{
		{"librados-blockd-missing.so.2", rbdLib, "cannot load librados-blockd-missing.so.2 (install the Debian package librados2)"},
		{"libc.so.6", "librbd-blockd-missing.so.1", "cannot load librbd-blockd-missing.so.1 (install the Debian package librbd1)"},
	} {
		err := load(tc.rados, tc.rbd)
		if err == nil || !errors.Is(err, ErrNoLibrary) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("load(%s, %s) = %v, want an error containing %q", tc.rados, tc.rbd, err, tc.want)
		}
	}
}

// A library without the symbols blockd needs is refused with an error,
// not a panic.
func TestLibraryWithoutSymbols(t *testing.T) {
	err := load("libc.so.6", "libc.so.6")
	if err == nil || !errors.Is(err, ErrNoLibrary) || !strings.Contains(err.Error(), "rados_create") {
		t.Fatalf("load(libc, libc) = %v", err)
	}
}
