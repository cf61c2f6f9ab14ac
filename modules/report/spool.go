package report

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// maxColumns bounds the CSV header of one source: records whose keys keep
// changing would otherwise grow it without limit.
const maxColumns = 4096

// ctxCheckEvery is how many rows pass between context checks in hot loops.
const ctxCheckEvery = 1024

const (
	// bufLen is the size of the pooled buffers: a batch of records handed
	// from a source's reader to its encoders, an entry's pending content, a
	// spill's memory.
	bufLen = 64 << 10
	// batchCount batches per source are in flight at most: the reader waits
	// for one to come back rather than running ahead of its encoders.
	batchCount = 4
	// entryFlushLen is how much content an entry gathers before hashing and
	// compressing it in one call.
	entryFlushLen = 32 << 10
	// flateLevel: reports are mostly text; the fastest level still shrinks
	// them several times (docs/bench-report.md). klauspost/compress's
	// deflate writes the same format as compress/flate at twice its speed
	// (and slightly smaller) on report content: deflate was most of a large
	// report's CPU.
	flateLevel = flate.BestSpeed
)

const spoolID = "spool"

// pools are the compressors and buffers reused across entries and builds:
// a new flate writer allocates about 1.2 MB and a 64 KiB buffer must be
// zeroed, which made most of a small report's CPU (docs/benchmarks.md).
type pools struct {
	flates  sync.Pool // *flate.Writer
	bufs    sync.Pool // *[]byte, cap bufLen
	sealed  sync.Pool // *[]byte, cap bufLen+cryptTagLen: a sealed chunk
	readers sync.Pool // *bufio.Reader
}

func (p *pools) getBuf() []byte {
	if b, ok := p.bufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, bufLen)
}

func (p *pools) putBuf(b []byte) {
	// A buffer grown by an oversized record goes to the collector.
	if cap(b) != bufLen {
		return
	}
	b = b[:0]
	p.bufs.Put(&b)
}

// newSealer is newSealer with pooled chunk buffers when chunk is the
// pool's size; release returns them.
func (p *pools) newSealer(w io.Writer, master masterKey, id string, chunk int) (*sealer, error) {
	if chunk != bufLen {
		return newSealer(w, master, id, chunk)
	}
	var out []byte
	if b, ok := p.sealed.Get().(*[]byte); ok {
		out = *b
	} else {
		out = make([]byte, 0, bufLen+cryptTagLen)
	}
	s, err := newSealerBuffers(w, master, id, chunk, p.getBuf(), out)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// release returns a sealer's buffers; the sealer is unusable afterwards.
func (p *pools) release(s *sealer) {
	if s == nil || s.buf == nil {
		return
	}
	if cap(s.buf) == bufLen && cap(s.out) == bufLen+cryptTagLen {
		p.putBuf(s.buf)
		out := s.out[:0]
		p.sealed.Put(&out)
	}
	s.buf, s.out = nil, nil
	s.closed = true
}

func (p *pools) getFlate(w io.Writer) (*flate.Writer, error) {
	if fw, ok := p.flates.Get().(*flate.Writer); ok {
		fw.Reset(w)
		return fw, nil
	}
	return flate.NewWriter(w, flateLevel)
}

func (p *pools) putFlate(fw *flate.Writer) {
	// Reset drops the reference to this report's output before another
	// report may get the compressor.
	fw.Reset(io.Discard)
	p.flates.Put(fw)
}

func (p *pools) getReader(r io.Reader) *bufio.Reader {
	if br, ok := p.readers.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, bufLen)
}

func (p *pools) putReader(br *bufio.Reader) {
	br.Reset(nil)
	p.readers.Put(br)
}

// compressor implements zip.Compressor with a pooled flate writer.
func (p *pools) compressor(w io.Writer) (io.WriteCloser, error) {
	fw, err := p.getFlate(w)
	if err != nil {
		return nil, err
	}
	return &pooledFlate{fw: fw, pools: p}, nil
}

// pooledFlate returns its writer to the pool when the ZIP entry is closed.
type pooledFlate struct {
	fw    *flate.Writer
	pools *pools
}

func (f *pooledFlate) Write(p []byte) (int, error) { return f.fw.Write(p) }

func (f *pooledFlate) Close() error {
	err := f.fw.Close()
	f.pools.putFlate(f.fw)
	f.fw = nil
	return err
}

// spill holds bytes between two phases of a build: in memory up to one
// buffer, beyond that in a temporary file that is unlinked as soon as it
// is created (a crash leaves nothing behind) and encrypted with a key that
// exists only in this process's memory. A small report never touches the
// disk; a large one holds one chunk per spill in memory.
type spill struct {
	pools *pools
	dir   string
	key   masterKey
	mem   []byte
	f     *os.File
	seal  *sealer
	n     int64
}

func (s *spill) Write(p []byte) (int, error) {
	if s.f == nil {
		if s.mem == nil {
			s.mem = s.pools.getBuf()
		}
		if len(s.mem)+len(p) <= cap(s.mem) {
			s.mem = append(s.mem, p...)
			s.n += int64(len(p))
			return len(p), nil
		}
		if err := s.toFile(); err != nil {
			return 0, err
		}
	}
	n, err := s.seal.Write(p)
	s.n += int64(n)
	return n, err
}

func (s *spill) toFile() error {
	f, err := os.CreateTemp(s.dir, ".gdpr-spool-*")
	if err != nil {
		return fmt.Errorf("creating spool file: %w", err)
	}
	// Unlinked at once: the data lives only as long as the open descriptor.
	if err := os.Remove(f.Name()); err != nil { //nolint:gosec // G703: the name CreateTemp just made in spool_dir
		_ = f.Close()
		return fmt.Errorf("unlinking spool file: %w", err)
	}
	seal, err := s.pools.newSealer(f, s.key, spoolID, defaultChunkLen)
	if err != nil {
		_ = f.Close()
		return err
	}
	s.f, s.seal = f, seal
	if _, err := seal.Write(s.mem); err != nil {
		return err
	}
	s.pools.putBuf(s.mem)
	s.mem = nil
	return nil
}

// finish seals what was written; the spill is then read-only.
func (s *spill) finish() error {
	if s.seal == nil {
		return nil
	}
	return s.seal.Close()
}

// reader reads what was written, from the start.
func (s *spill) reader() (io.Reader, error) {
	if s.f == nil {
		return bytes.NewReader(s.mem), nil
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return newOpener(s.f, []masterKey{s.key}, spoolID)
}

func (s *spill) close() error {
	if s.mem != nil {
		s.pools.putBuf(s.mem)
		s.mem = nil
	}
	if s.f == nil {
		return nil
	}
	s.pools.release(s.seal)
	s.seal = nil
	err := s.f.Close()
	s.f = nil
	return err
}

// entry is one ZIP entry encoded ahead of the archive: its content is
// hashed (SHA-256 for the manifest, CRC-32 for the ZIP), counted and
// deflated into a spill, and the archive copies the deflated bytes as they
// are (zip.Writer.CreateRaw). So the entries of a report are compressed
// concurrently, each while its source is read.
type entry struct {
	pools *pools
	// buf is content not yet hashed and compressed.
	buf []byte
	sha hash.Hash
	crc uint32
	n   int64
	fw  *flate.Writer
	out *spill
}

func newEntry(p *pools, dir string, key masterKey) *entry {
	return &entry{pools: p, buf: p.getBuf(), sha: sha256.New(), out: &spill{pools: p, dir: dir, key: key}}
}

func (e *entry) maybeFlush() error {
	if len(e.buf) < entryFlushLen {
		return nil
	}
	return e.flush()
}

func (e *entry) flush() error {
	if e.fw == nil {
		fw, err := e.pools.getFlate(e.out)
		if err != nil {
			return err
		}
		e.fw = fw
	}
	if len(e.buf) == 0 {
		return nil
	}
	e.sha.Write(e.buf)
	e.crc = crc32.Update(e.crc, crc32.IEEETable, e.buf)
	e.n += int64(len(e.buf))
	_, err := e.fw.Write(e.buf)
	e.buf = e.buf[:0]
	return err
}

// finish compresses the rest and ends the deflate stream.
func (e *entry) finish() error {
	if err := e.flush(); err != nil {
		return err
	}
	err := e.fw.Close()
	e.pools.putFlate(e.fw)
	e.fw = nil
	if err != nil {
		return err
	}
	e.pools.putBuf(e.buf)
	e.buf = nil
	return e.out.finish()
}

func (e *entry) close() error {
	if e.fw != nil {
		e.pools.putFlate(e.fw)
		e.fw = nil
	}
	if e.buf != nil {
		e.pools.putBuf(e.buf)
		e.buf = nil
	}
	return e.out.close()
}

// batch is records (each a uvarint length and the JSON object) on their
// way from a source's reader to its encoders.
type batch struct {
	buf  []byte
	refs atomic.Int32
}

// consumer takes the records of a batch, in order.
type consumer interface{ consume(recs []byte) error }

// lane runs consumers on every batch, on its own goroutine.
type lane struct {
	consumers []consumer
	ch        chan *batch
	done      chan struct{}
}

// sourceSink receives one source's records (source.Sink) and encodes its
// JSON entry while the source is read; its CSV entry too when the columns
// are known up front (SQL), and otherwise from the records spilled aside,
// once the read is done. report.compress_concurrency goroutines beside the
// reader do the encoding, fed batches of records: what a source holds is
// batchCount batches, and per entry a flate writer and a spill's chunk.
type sourceSink struct {
	ctx     context.Context
	pools   *pools
	dir     string
	key     masterKey
	name    string
	workers int
	cols    []string
	colIdx  map[string]int
	fixed   bool
	rows    int64
	lenbuf  [binary.MaxVarintLen64]byte
	scanErr error

	started bool
	cur     *batch
	free    chan *batch
	lanes   []*lane
	// inline are the consumers the reader runs itself (workers == 0).
	inline  []consumer
	failed  atomic.Bool
	errMu   sync.Mutex
	laneErr error

	json    *entry
	csv     *entry
	records *spill
	jsonW   *jsonConsumer
}

func newSourceSink(ctx context.Context, p *pools, name, dir string, key masterKey, workers int) *sourceSink {
	return &sourceSink{ctx: ctx, pools: p, dir: dir, key: key, name: name, workers: workers, colIdx: map[string]int{}}
}

// Columns implements source.Sink.
func (s *sourceSink) Columns(cols []string) error {
	if s.rows == 0 && len(s.cols) == 0 {
		for _, c := range cols {
			s.addColumn(c)
		}
		s.fixed = true
	}
	return nil
}

func (s *sourceSink) addColumn(c string) {
	if _, ok := s.colIdx[c]; ok {
		return
	}
	if len(s.cols) >= maxColumns {
		s.scanErr = fmt.Errorf("more than %d distinct keys", maxColumns)
		return
	}
	s.colIdx[c] = len(s.cols)
	s.cols = append(s.cols, c)
}

// Row implements source.Sink.
func (s *sourceSink) Row(obj []byte) error {
	if s.rows%ctxCheckEvery == 0 {
		if err := s.ctx.Err(); err != nil {
			return err
		}
	}
	if !s.fixed {
		if err := source.RawFields(obj, func(rawKey, _ []byte) error {
			if bytes.IndexByte(rawKey, '\\') < 0 {
				if _, ok := s.colIdx[string(rawKey[1:len(rawKey)-1])]; ok {
					return nil
				}
			}
			key, err := source.DecodeString(rawKey)
			if err != nil {
				return err
			}
			s.addColumn(key)
			return s.scanErr
		}); err != nil {
			return &source.Error{Source: s.name, Class: source.ClassBadResponse, Detail: "record keys", Err: err}
		}
	}
	if !s.started {
		if err := s.start(); err != nil {
			return err
		}
	}
	if len(s.cur.buf) > 0 && len(s.cur.buf)+len(obj)+binary.MaxVarintLen64 > cap(s.cur.buf) {
		if err := s.dispatch(); err != nil {
			return err
		}
	}
	n := binary.PutUvarint(s.lenbuf[:], uint64(len(obj)))
	s.cur.buf = append(s.cur.buf, s.lenbuf[:n]...)
	s.cur.buf = append(s.cur.buf, obj...)
	s.rows++
	return nil
}

// start sets up the encoders once it is known whether the columns are fixed.
func (s *sourceSink) start() error {
	s.started = true
	s.json = newEntry(s.pools, s.dir, s.key)
	s.jsonW = &jsonConsumer{e: s.json}
	consumers := []consumer{s.jsonW}
	if s.fixed {
		s.csv = newEntry(s.pools, s.dir, s.key)
		enc := newCSVEncoder(s.cols, s.colIdx)
		if len(s.cols) > 0 {
			s.csv.buf = enc.appendHeader(s.csv.buf)
		}
		consumers = append(consumers, &csvConsumer{e: s.csv, enc: enc})
	} else {
		s.records = &spill{pools: s.pools, dir: s.dir, key: s.key}
		consumers = append(consumers, spillConsumer{s.records})
	}
	s.free = make(chan *batch, batchCount)
	for range batchCount {
		s.free <- &batch{buf: s.pools.getBuf()}
	}
	s.cur = <-s.free
	switch s.workers {
	case 0:
		s.inline = consumers
	case 1:
		s.lanes = []*lane{{consumers: consumers}}
	default:
		for _, c := range consumers {
			s.lanes = append(s.lanes, &lane{consumers: []consumer{c}})
		}
	}
	for _, l := range s.lanes {
		l.ch = make(chan *batch, batchCount)
		l.done = make(chan struct{})
		go s.run(l)
	}
	return nil
}

// run consumes batches until the lane is closed. After an error it keeps
// returning batches, so the reader never waits for one that cannot come.
func (s *sourceSink) run(l *lane) {
	defer close(l.done)
	failed := false
	for b := range l.ch {
		if !failed {
			for _, c := range l.consumers {
				if err := c.consume(b.buf); err != nil {
					s.setErr(err)
					failed = true
					break
				}
			}
		}
		s.release(b)
	}
}

func (s *sourceSink) release(b *batch) {
	if b.refs.Add(-1) == 0 {
		b.buf = b.buf[:0]
		s.free <- b
	}
}

func (s *sourceSink) setErr(err error) {
	s.errMu.Lock()
	if s.laneErr == nil {
		s.laneErr = err
	}
	s.errMu.Unlock()
	s.failed.Store(true)
}

func (s *sourceSink) err() error {
	if !s.failed.Load() {
		return nil
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.laneErr
}

// dispatch hands the current batch to the encoders and takes a free one.
func (s *sourceSink) dispatch() error {
	b := s.cur
	if len(b.buf) == 0 {
		return s.err()
	}
	if s.lanes == nil {
		for _, c := range s.inline {
			if err := c.consume(b.buf); err != nil {
				return err
			}
		}
		b.buf = b.buf[:0]
		return nil
	}
	b.refs.Store(int32(len(s.lanes))) //nolint:gosec // G115: at most 2 lanes
	for _, l := range s.lanes {
		l.ch <- b
	}
	s.cur = <-s.free
	return s.err()
}

// stop ends the lanes and waits for them.
func (s *sourceSink) stop() {
	for _, l := range s.lanes {
		close(l.ch)
		<-l.done
	}
	s.lanes = nil
}

// finish completes both entries once the source is read whole.
func (s *sourceSink) finish() error {
	if !s.started {
		if err := s.start(); err != nil {
			return err
		}
	}
	err := s.dispatch()
	s.stop()
	if err == nil {
		err = s.err()
	}
	if err != nil {
		return err
	}
	s.jsonW.end()
	if err := s.json.finish(); err != nil {
		return err
	}
	if s.csv == nil {
		if err := s.records.finish(); err != nil {
			return err
		}
		s.csv = newEntry(s.pools, s.dir, s.key)
		if len(s.cols) > 0 {
			if err := s.writeCSV(); err != nil {
				return err
			}
		}
		_ = s.records.close()
	}
	return s.csv.finish()
}

// writeCSV writes the CSV entry from the spilled records: a header of
// every key seen (in first-seen order), then one line per record.
func (s *sourceSink) writeCSV() error {
	enc := newCSVEncoder(s.cols, s.colIdx)
	s.csv.buf = enc.appendHeader(s.csv.buf)
	c := &csvConsumer{e: s.csv, enc: enc}
	if s.records.f == nil {
		// In memory: the records are one batch.
		return c.consume(s.records.mem)
	}
	r, err := s.records.reader()
	if err != nil {
		return err
	}
	br := s.pools.getReader(r)
	defer s.pools.putReader(br)
	var buf []byte
	for i := int64(0); ; i++ {
		if i%ctxCheckEvery == 0 {
			if err := s.ctx.Err(); err != nil {
				return err
			}
		}
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			if i != s.rows {
				return fmt.Errorf("spool holds %d records, expected %d", i, s.rows)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		if err := c.record(buf); err != nil {
			return err
		}
	}
}

// close releases everything the sink holds; it is safe after any failure.
func (s *sourceSink) close() {
	s.stop()
	if s.cur != nil {
		s.pools.putBuf(s.cur.buf)
		s.cur = nil
	}
	// The lanes are stopped: every other batch is back in free.
	for len(s.free) > 0 {
		s.pools.putBuf((<-s.free).buf)
	}
	for _, e := range []*entry{s.json, s.csv} {
		if e != nil {
			_ = e.close()
		}
	}
	if s.records != nil {
		_ = s.records.close()
	}
}

// eachRecord calls fn for every record of a batch.
func eachRecord(recs []byte, fn func(obj []byte) error) error {
	for len(recs) > 0 {
		u, k := binary.Uvarint(recs)
		if k <= 0 || u > uint64(len(recs)-k) { //nolint:gosec // G115: len-k is not negative here
			return errors.New("malformed record batch")
		}
		end := k + int(u) //nolint:gosec // G115: u <= len(recs), checked above
		if err := fn(recs[k:end]); err != nil {
			return err
		}
		recs = recs[end:]
	}
	return nil
}

// jsonConsumer writes the records as one JSON array, a record per line.
type jsonConsumer struct {
	e    *entry
	rows int64
}

func (c *jsonConsumer) consume(recs []byte) error {
	return eachRecord(recs, func(obj []byte) error {
		if c.rows == 0 {
			c.e.buf = append(c.e.buf, "[\n"...)
		} else {
			c.e.buf = append(c.e.buf, ",\n"...)
		}
		c.rows++
		c.e.buf = append(c.e.buf, obj...)
		return c.e.maybeFlush()
	})
}

func (c *jsonConsumer) end() {
	if c.rows == 0 {
		c.e.buf = append(c.e.buf, "[]\n"...)
		return
	}
	c.e.buf = append(c.e.buf, "\n]\n"...)
}

// csvConsumer writes the records as CSV lines: nested values are JSON text
// and null is empty.
type csvConsumer struct {
	e   *entry
	enc *csvEncoder
}

func (c *csvConsumer) consume(recs []byte) error { return eachRecord(recs, c.record) }

func (c *csvConsumer) record(obj []byte) error {
	var err error
	c.e.buf, err = c.enc.appendRecord(c.e.buf, obj)
	if err != nil {
		return err
	}
	return c.e.maybeFlush()
}

// spillConsumer keeps the records for the CSV written after the read.
type spillConsumer struct{ s *spill }

func (c spillConsumer) consume(recs []byte) error {
	_, err := c.s.Write(recs)
	return err
}
