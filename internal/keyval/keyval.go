// Package keyval owns QEMU's option-string splitting, shared by blockd's
// command line (--blockdev, --chardev) and its tools (-o options).
package keyval

import "strings"

// Split cuts "a=1,b=x,,y" at single commas; ",," stands for a comma.
func Split(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	if cur.Len() > 0 || len(parts) > 0 {
		parts = append(parts, cur.String())
	}
	return parts
}
