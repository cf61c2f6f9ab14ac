package report

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// maxColumns bounds the CSV header of one source: records whose keys keep
// changing would otherwise grow it without limit.
const maxColumns = 4096

// ctxCheckEvery is how many rows pass between context checks in hot loops.
const ctxCheckEvery = 1024

// spool holds one source's records between reading the source and writing the
// ZIP, so the JSON and CSV files can both be written without keeping rows in
// memory. It is an unlinked temporary file (a crash leaves nothing behind)
// encrypted with a key that exists only in this process's memory.
type spool struct {
	ctx     context.Context
	name    string
	f       *os.File
	inner   *bufio.Writer
	seal    *sealer
	bw      *bufio.Writer
	key     masterKey
	cols    []string
	colIdx  map[string]int
	fixed   bool
	rows    int64
	lenbuf  [binary.MaxVarintLen64]byte
	scanErr error
}

const spoolID = "spool"

func newSpool(ctx context.Context, name, dir string, key masterKey) (*spool, error) {
	f, err := os.CreateTemp(dir, ".gdpr-spool-*")
	if err != nil {
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	// Unlinked at once: the data lives only as long as the open descriptor.
	if err := os.Remove(f.Name()); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("unlinking spool file: %w", err)
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	seal, err := newSealer(bw, key, spoolID, defaultChunkLen)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &spool{ctx: ctx, name: name, f: f, inner: bw, seal: seal, bw: bufio.NewWriterSize(seal, 64<<10), key: key, colIdx: map[string]int{}}, nil
}

// Columns implements source.Sink.
func (s *spool) Columns(cols []string) error {
	if s.rows == 0 && len(s.cols) == 0 {
		for _, c := range cols {
			s.addColumn(c)
		}
		s.fixed = true
	}
	return nil
}

func (s *spool) addColumn(c string) {
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
func (s *spool) Row(obj []byte) error {
	if s.rows%ctxCheckEvery == 0 {
		if err := s.ctx.Err(); err != nil {
			return err
		}
	}
	if !s.fixed {
		if err := source.Fields(obj, func(key string, _ []byte) error {
			s.addColumn(key)
			return s.scanErr
		}); err != nil {
			return &source.Error{Source: s.name, Class: source.ClassBadResponse, Detail: "record keys", Err: err}
		}
	}
	n := binary.PutUvarint(s.lenbuf[:], uint64(len(obj)))
	if _, err := s.bw.Write(s.lenbuf[:n]); err != nil {
		return err
	}
	if _, err := s.bw.Write(obj); err != nil {
		return err
	}
	s.rows++
	return nil
}

// finish flushes everything written so far; the spool is then read-only.
func (s *spool) finish() error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	if err := s.seal.Close(); err != nil {
		return err
	}
	return s.inner.Flush()
}

// each calls fn for every record, in order.
func (s *spool) each(ctx context.Context, fn func(obj []byte) error) error {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	op, err := newOpener(bufio.NewReaderSize(s.f, 64<<10), []masterKey{s.key}, spoolID)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(op, 64<<10)
	var buf []byte
	for i := int64(0); ; i++ {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n, err := binary.ReadUvarint(r)
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
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
}

func (s *spool) close() error { return s.f.Close() }
