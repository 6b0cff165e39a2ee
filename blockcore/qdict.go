package blockcore

import (
	"bytes"
	"encoding/json"

	"blockd/internal/qdict"
)

// encodeQdict writes a dictionary in QDict order with QEMU's ", " and
// ": " (the json: filename form). Not MarshalJSON: encoding/json would
// compact the result.
func encodeQdict(d qdict.Dict) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range d.Ordered() {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(e.Key)
		b.Write(k)
		b.WriteString(": ")
		if sub, ok := e.Val.(qdict.Dict); ok {
			b.Write(encodeQdict(sub))
			continue
		}
		if list, ok := e.Val.([]qdict.Dict); ok {
			b.WriteByte('[')
			for i, sub := range list {
				if i > 0 {
					b.WriteString(", ")
				}
				b.Write(encodeQdict(sub))
			}
			b.WriteByte(']')
			continue
		}
		v, _ := json.Marshal(e.Val)
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes()
}
