package jsonrpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// lineReader cuts the input into lines without letting a huge line grow
// memory: the rest of an oversized line is skipped and reported once.
type lineReader struct {
	r       *bufio.Reader
	maxLine int
}

func newLineReader(r io.Reader, maxLine int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), maxLine: maxLine}
}

// next returns the next line, or tooLong for a line that was skipped.
// A last line without a newline before EOF still counts.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(buf)+len(chunk) > l.maxLine {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = l.r.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, false, err
			}
			return nil, true, nil
		}
		buf = append(buf, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if err == io.EOF && len(bytes.TrimSpace(buf)) > 0 {
				return buf, false, nil
			}
			return nil, false, err
		}
		return buf, false, nil
	}
}
