package blockio

import "testing"

// AllZero sees a non-zero byte wherever it is: in the first word, past
// it, past the first 4 KiB block, in a tail shorter than a word.
func TestAllZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 511, 512, 4095, 4096, 4097, 3*4096 + 5} {
		p := make([]byte, n)
		if !AllZero(p) {
			t.Fatalf("%d zero bytes: not all zero", n)
		}
		for i := 0; i < n; i++ {
			p[i] = 1
			if AllZero(p) {
				t.Fatalf("%d bytes with byte %d set: all zero", n, i)
			}
			p[i] = 0
		}
	}
}

func BenchmarkAllZero64K(b *testing.B) {
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if !AllZero(p) {
			b.Fatal("not zero")
		}
	}
}
