package qemu

import (
	"encoding/base64"
	"errors"
	"strings"
)

// Base64Decode is the reference's qbase64_decode: only base64 alphabet
// characters (and newlines) are allowed; decoding then works in whole
// groups of four and drops a trailing partial group, as GLib does.
func Base64Decode(s string) ([]byte, error) {
	const valid = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(valid, s[i]) < 0 {
			if s[i] == 0 {
				return nil, errors.New("Base64 data contains embedded NUL characters")
			}
			return nil, errors.New("Base64 data contains invalid characters")
		}
	}
	s = strings.ReplaceAll(s, "\n", "")
	s = s[:len(s)/4*4]
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("Base64 data contains invalid characters")
	}
	return out, nil
}
