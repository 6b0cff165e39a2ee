package tools

import (
	"fmt"
	"sync"

	"blockd/blockcore"
	"blockd/blockio"
)

// The copy engine of `img convert`, after qemu-img's convert_do_copy: the
// source (one image or several concatenated) is cut into chunks by block
// status; data chunks are read by several workers at once, scanned for
// zero sectors (-S) and written, zero chunks are skipped on a target that
// starts out zero or written as efficient zeroes, and ranges the target's
// backing file provides are left alone. Writes go out in source order
// unless -W, so the target's clusters are laid out as qemu-img lays them.

const (
	convertBuf     = 2 << 20 // qemu-img's IO_BUF_SIZE: the largest data chunk
	maxBufSectors  = 32768   // the largest -S (16 MiB)
	maxCoroutines  = 16      // the largest -m
	maxStatusQuery = 1 << 30 // the longest status query
)

type chunkStatus uint8

const (
	chunkData chunkStatus = iota
	chunkZero
	chunkBacking // left to the target's backing file
)

type chunk struct {
	off, n int64
	st     chunkStatus
}

type copySource struct {
	im          *image
	start, size int64 // position in the concatenation, guest size
}

type copyEngine struct {
	srcs  []copySource
	total int64 // sum of the sources' sizes, each rounded up to 512
	dst   blockio.Device

	hasBacking        bool  // the target has a backing file: copy the top layer only
	targetBackingSize int64 // -1 when unknown
	zeroInit          bool  // the target reads as zero where nothing is written
	minSparse         int64 // -S in bytes; 0 writes every byte
	inOrder           bool  // not -W
	workers           int   // -m
	bufSize           int64
	cluster           int64 // -c: the target's cluster size, 0 without -c
	prog              *progress

	chunks    []chunk
	allocated int64 // bytes of chunks that count for progress
}

func (e *copyEngine) addSource(im *image, size int64) {
	e.srcs = append(e.srcs, copySource{im: im, start: e.total, size: size})
	e.total += roundUp512(size)
}

// sourcesPageCached reports that every source reads through the page cache.
func (e *copyEngine) sourcesPageCached() bool {
	for _, s := range e.srcs {
		if !s.im.pageCached() {
			return false
		}
	}
	return true
}

func (e *copyEngine) closeSources() {
	for _, s := range e.srcs {
		s.im.close()
	}
	e.srcs = nil
}

func roundUp512(n int64) int64 { return (n + 511) &^ 511 }

// source returns the source holding byte off of the concatenation.
func (e *copyEngine) source(off int64) *copySource {
	for i := range e.srcs {
		s := &e.srcs[i]
		if off < s.start+roundUp512(s.size) {
			return s
		}
	}
	return &e.srcs[len(e.srcs)-1]
}

// status is convert_iteration_sectors' block status query: the status of
// the range at off (at most n bytes) and for how many bytes it holds,
// rounded up to whole sectors.
func (e *copyEngine) status(off, n int64, postBackingZero bool) (chunkStatus, int64, error) {
	s := e.source(off)
	local := off - s.start
	n = min(n, roundUp512(s.size)-local)
	if local >= s.size {
		// The zero padding of a source whose size is not a sector multiple.
		return chunkZero, n, nil
	}
	q := min(n, s.size-local)
	var data, zero bool
	var length int64
	if e.hasBacking {
		// The target's backing file supplies what the top layer does not.
		var err error
		if data, zero, length, err = topStatus(s.im.node, local, q); err != nil {
			return 0, 0, err
		}
	} else {
		me, err := chainStatus(s.im.node, local, q)
		if err != nil {
			return 0, 0, err
		}
		data, zero, length = me.data, me.zero, me.length
	}
	length = min(roundUp512(length), n)
	switch {
	case zero && postBackingZero:
		return chunkBacking, length, nil
	case zero:
		return chunkZero, length, nil
	case data:
		return chunkData, length, nil
	case e.hasBacking:
		return chunkBacking, length, nil
	}
	return chunkData, length, nil
}

// topStatus is bdrv_block_status of one layer: a range the layer does not
// allocate reads as zero when it has no backing file or lies past its end.
func topStatus(n *blockcore.Node, off, length int64) (data, zero bool, l int64, err error) {
	st, err := n.IO().BlockStatus(off, length)
	if err != nil {
		return false, false, 0, err
	}
	if st.Length <= 0 {
		return false, false, 0, fmt.Errorf("block status of %s at %d: empty range", n.Name(), off)
	}
	data = st.Flags&blockio.StatusData != 0
	zero = st.Flags&blockio.StatusZero != 0
	l = min(length, st.Length)
	if !data && !zero {
		b := n.Backing()
		if b == nil {
			zero = true
		} else if bsz, err := b.IO().Size(); err != nil {
			return false, false, 0, err
		} else if off >= bsz {
			zero = true
		}
	}
	return data, zero, l, nil
}

// plan cuts the source into chunks (convert_iteration_sectors, run once:
// qemu-img's first pass does the same queries to size the progress).
func (e *copyEngine) plan() error {
	var cur chunkStatus
	next := int64(0) // where the current status ends
	for off := int64(0); off < e.total; {
		n := min(e.total-off, maxStatusQuery)
		postBackingZero := false
		if e.targetBackingSize >= 0 {
			if off >= e.targetBackingSize {
				postBackingZero = true
			} else if off+n > e.targetBackingSize {
				n = e.targetBackingSize - off
			}
		}
		if next <= off {
			st, l, err := e.status(off, n, postBackingZero)
			if err != nil {
				return fmt.Errorf("error while reading block status at offset %d: %s", off, errText(err))
			}
			cur, next = st, off+l
		}
		n = min(n, next-off)
		if cur == chunkData || (e.minSparse == 0 && cur == chunkZero) {
			n = min(n, e.bufSize)
		}
		if e.cluster > 0 {
			// Compressed writes are whole clusters: a shorter run is
			// copied as data with the rest of its cluster.
			if n < e.cluster {
				n = min(e.cluster, e.total-off)
				cur = chunkData
			} else {
				n = n / e.cluster * e.cluster
			}
		}
		if cur == chunkData || (e.minSparse == 0 && cur == chunkZero) {
			e.allocated += n
		}
		e.chunks = append(e.chunks, chunk{off, n, cur})
		off += n
	}
	return nil
}

// run copies every chunk with e.workers requests in flight.
func (e *copyEngine) run() error {
	if err := e.plan(); err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		turn    = sync.NewCond(&mu)
		next    int   // the next chunk to claim
		written int   // chunks written so far, in order
		done    int64 // progress
		failed  error
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if failed == nil {
			failed = err
		}
		turn.Broadcast()
		mu.Unlock()
	}
	worker := func() {
		defer wg.Done()
		buf := make([]byte, e.bufSize)
		for {
			mu.Lock()
			if failed != nil || next >= len(e.chunks) {
				mu.Unlock()
				return
			}
			i := next
			next++
			c := e.chunks[i]
			if c.st == chunkData || (e.minSparse == 0 && c.st == chunkZero) {
				done += c.n
				e.prog.print(float32(100*float64(done)/float64(e.allocated)), 0)
			}
			mu.Unlock()
			var err error
			switch {
			case c.st == chunkData:
				if err = e.read(buf[:c.n], c.off); err != nil {
					err = fmt.Errorf("error while reading at byte %d: %s", c.off, errText(err))
				}
			case c.st == chunkZero && e.minSparse == 0:
				clear(buf[:c.n])
				c.st = chunkData
			}
			if e.inOrder {
				mu.Lock()
				for written != i && failed == nil {
					turn.Wait()
				}
				mu.Unlock()
			}
			if err == nil {
				if err = e.write(buf[:min(c.n, int64(len(buf)))], c); err != nil {
					err = fmt.Errorf("error while writing at byte %d: %s", c.off, errText(err))
				}
			}
			if err != nil {
				fail(err)
				return
			}
			if e.inOrder {
				mu.Lock()
				written = i + 1
				turn.Broadcast()
				mu.Unlock()
			}
		}
	}
	for w := 0; w < e.workers; w++ {
		wg.Add(1)
		go worker()
	}
	wg.Wait()
	return failed
}

// read fills p from the concatenated sources (convert_co_read); bytes past
// a source's end (its last partial sector) read as zero.
func (e *copyEngine) read(p []byte, off int64) error {
	for len(p) > 0 {
		s := e.source(off)
		local := off - s.start
		n := min(int64(len(p)), roundUp512(s.size)-local)
		data := min(n, max(s.size-local, 0))
		if data > 0 {
			if err := s.im.dev.ReadAt(p[:data], local); err != nil {
				return err
			}
		}
		clear(p[data:n])
		p, off = p[n:], off+n
	}
	return nil
}

// write stores one chunk (convert_co_write): data is scanned for runs of
// at least minSparse zero bytes, which become efficient zeroes (or nothing
// on a target that reads as zero already).
func (e *copyEngine) write(buf []byte, c chunk) error {
	switch c.st {
	case chunkBacking:
		return nil
	case chunkZero:
		return e.zero(c.off, c.n)
	}
	off := c.off
	if e.cluster > 0 {
		// A cluster is written compressed unless it is all zeroes and
		// zeroes may be left out.
		if e.minSparse != 0 && blockio.AllZero(buf) {
			return e.zero(off, int64(len(buf)))
		}
		return e.dst.WriteAt(buf, off, blockio.Compressed)
	}
	for len(buf) > 0 {
		n := int64(len(buf))
		if e.minSparse == 0 {
			return e.dst.WriteAt(buf, off, 0)
		}
		alloc, sectors := isAllocatedSectorsMin(buf, int((n+511)/512), int(e.minSparse/512), off/512, e.alignment())
		n = min(int64(sectors)*512, n)
		if alloc {
			if err := e.dst.WriteAt(buf[:n], off, 0); err != nil {
				return err
			}
		} else if err := e.zero(off, n); err != nil {
			return err
		}
		buf, off = buf[n:], off+n
	}
	return nil
}

func (e *copyEngine) zero(off, n int64) error {
	if e.zeroInit {
		return nil
	}
	return e.dst.WriteZeroes(off, n, blockio.MayUnmap)
}

// alignment is qemu-img's: the write boundaries -S zero detection rounds
// to, in sectors (pow2floor of -S; the file driver's request alignment is
// one byte).
func (e *copyEngine) alignment() int64 {
	a := int64(1)
	for a*2 <= e.minSparse/512 {
		a *= 2
	}
	return a
}

// isAllocatedSectors is qemu-img's is_allocated_sectors: whether the first
// sector of buf holds data, and how many sectors after it share that
// state, with the end rounded to alignment (a zero run shorter than the
// unaligned tail counts as data).
func isAllocatedSectors(buf []byte, n int, sectorNum, alignment int64) (bool, int) {
	if n <= 0 {
		return false, 0
	}
	sector := func(i int) []byte { return buf[i*512 : min((i+1)*512, len(buf))] }
	isZero := blockio.AllZero(sector(0))
	i := 1
	for ; i < n; i++ {
		if isZero != blockio.AllZero(sector(i)) {
			break
		}
	}
	tail := int((sectorNum + int64(i)) & (alignment - 1))
	if tail != 0 {
		if isZero && i <= tail {
			isZero = false
		}
		if !isZero {
			i = min(i+int(alignment)-tail, n)
		} else {
			i -= tail
		}
	}
	return !isZero, i
}

// isAllocatedSectorsMin is is_allocated_sectors_min: like
// isAllocatedSectors, but a data run swallows zero runs shorter than min
// sectors, so short holes do not split writes.
func isAllocatedSectorsMin(buf []byte, n, minZero int, sectorNum, alignment int64) (bool, int) {
	if n < minZero {
		minZero = n
	}
	alloc, pnum := isAllocatedSectors(buf, n, sectorNum, alignment)
	if !alloc {
		return false, pnum
	}
	used, checked := pnum, pnum
	buf = buf[min(pnum*512, len(buf)):]
	n -= pnum
	sectorNum += int64(pnum)
	for n > 0 {
		a, p := isAllocatedSectors(buf, n, sectorNum, alignment)
		buf = buf[min(p*512, len(buf)):]
		n -= p
		sectorNum += int64(p)
		checked += p
		if a {
			used = checked
		} else if p >= minZero {
			break
		}
	}
	return true, used
}
