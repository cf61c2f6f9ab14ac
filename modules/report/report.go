// Package report builds access reports: it reads every configured source for
// a data subject, writes a ZIP (one JSON and one CSV file per source and a
// manifest with row counts and SHA-256 sums) streamed through AES-256-GCM
// into report storage, and makes it visible all at once or not at all.
package report

import (
	"archive/zip"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// FormatVersion is the manifest's format_version; it changes when the
// layout of the ZIP or the manifest changes incompatibly.
const FormatVersion = 1

// ManifestName is the manifest's file name in the ZIP.
const ManifestName = "manifest.json"

// ErrInvalidID means a request or report id cannot name a stored report.
var ErrInvalidID = errors.New("invalid report id")

// Result describes a stored report.
type Result struct {
	// ReportID names the stored report (the request id).
	ReportID string
	// Bytes is the size of the ZIP as downloaded (before encryption).
	Bytes int64
	// SHA256 is the hex SHA-256 of the ZIP as downloaded.
	SHA256 string
	// Rows is the number of records per source name.
	Rows map[string]int64
}

// Manifest is manifest.json.
type Manifest struct {
	FormatVersion int              `json:"format_version"`
	RequestID     string           `json:"request_id"`
	SubjectID     string           `json:"subject_id,omitempty"`
	GeneratedAt   time.Time        `json:"generated_at"`
	Sources       []ManifestSource `json:"sources"`
	Files         []ManifestFile   `json:"files"`
}

// ManifestSource is one source's entry in the manifest.
type ManifestSource struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Rows int64  `json:"rows"`
	// Skipped explains why a source was not read (the subject lacks an
	// identifier it needs); its files are then empty.
	Skipped string `json:"skipped,omitempty"`
}

// ManifestFile is one file's entry in the manifest.
type ManifestFile struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Option adjusts a Builder.
type Option func(*Builder)

// WithStorage replaces the local-directory storage (e.g. with object storage).
func WithStorage(s Storage) Option { return func(b *Builder) { b.storage = s } }

// WithHTTPClient sets the client http and elasticsearch sources use.
func WithHTTPClient(c *http.Client) Option { return func(b *Builder) { b.httpClient = c } }

// WithClock sets the clock stamped into manifests and ZIP entries.
func WithClock(now func() time.Time) Option { return func(b *Builder) { b.now = now } }

// WithChunkSize sets the encryption chunk size of stored reports.
func WithChunkSize(n int) Option { return func(b *Builder) { b.chunk = n } }

// WarnDevelopmentKey logs a warning when cfg encrypts reports with the
// public development key. New does not warn, because a process may build
// several builders (`gdpr all` has the worker's and serve's): the process
// calls this once.
func WarnDevelopmentKey(cfg Config, logger *slog.Logger) {
	if cfg.EncryptionKey == DevEncryptionKey {
		logger.Warn("reports are encrypted with the public development key; set report.encryption_key")
	}
}

// Builder builds, opens and deletes access reports. It is safe for
// concurrent use.
type Builder struct {
	cfg    Config
	logger *slog.Logger
	// keys are the configured encryption keys, the active one first: new
	// reports are sealed with it, stored ones open with whichever they name.
	keys       []masterKey
	storage    Storage
	sources    []source.Source
	timeouts   []time.Duration
	httpClient *http.Client
	now        func() time.Time
	chunk      int
	generated  prometheus.Counter
	bytes      prometheus.Counter
	// flates are the ZIP entries' compressors, reused across entries and
	// reports: a new flate writer allocates about 1.2 MB, and allocating one
	// per entry was most of a small report's CPU (docs/benchmarks.md).
	flates flatePool
}

// flatePool hands out flate writers at the level reports use.
type flatePool struct{ pool sync.Pool }

// compressor implements zip.Compressor with a pooled flate writer.
func (p *flatePool) compressor(w io.Writer) (io.WriteCloser, error) {
	if fw, ok := p.pool.Get().(*flate.Writer); ok {
		fw.Reset(w)
		return &pooledFlate{fw: fw, pool: p}, nil
	}
	// Reports are mostly text; the fastest level still shrinks them several
	// times and keeps the build I/O-bound rather than CPU-bound.
	fw, err := flate.NewWriter(w, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	return &pooledFlate{fw: fw, pool: p}, nil
}

// pooledFlate returns its writer to the pool when the ZIP entry is closed.
type pooledFlate struct {
	fw   *flate.Writer
	pool *flatePool
}

func (f *pooledFlate) Write(p []byte) (int, error) { return f.fw.Write(p) }

func (f *pooledFlate) Close() error {
	err := f.fw.Close()
	// Reset drops the reference to this report's writer before the next
	// report may get the compressor.
	f.fw.Reset(io.Discard)
	f.pool.pool.Put(f.fw)
	f.fw = nil
	return err
}

// New builds a Builder from cfg. Metrics are registered on reg when it is not nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Builder, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	raw, err := cfg.Keys()
	if err != nil {
		return nil, err
	}
	keys := make([]masterKey, len(raw))
	for i, k := range raw {
		keys[i] = newMasterKey(k)
	}
	b := &Builder{
		cfg: cfg, logger: logger, keys: keys, now: time.Now, chunk: defaultChunkLen,
		generated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_reports_generated_total",
			Help: "Access reports stored whole.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gdpr_report_bytes_total",
			Help: "Bytes of access reports stored (ZIP size before encryption).",
		}),
	}
	for _, o := range opts {
		o(b)
	}
	if b.cfg.SourceConcurrency < 1 {
		b.cfg.SourceConcurrency = 1
	}
	if b.cfg.SourceTimeout <= 0 {
		b.cfg.SourceTimeout = 2 * time.Minute
	}
	if b.storage == nil {
		local, err := NewLocal(cfg.StorageDir)
		if err != nil {
			return nil, err
		}
		b.storage = local
	}
	for _, sc := range cfg.Sources {
		s, err := source.New(sc, source.Options{
			HTTPClient: b.httpClient,
			Limits:     source.Limits{MaxResponseBytes: cfg.MaxResponseBytes, MaxValueBytes: cfg.MaxValueBytes},
		})
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		b.sources = append(b.sources, s)
		t := sc.Timeout
		if t == 0 {
			t = b.cfg.SourceTimeout
		}
		b.timeouts = append(b.timeouts, t)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{b.generated, b.bytes} {
			if err := reg.Register(c); err != nil {
				_ = b.Close()
				return nil, fmt.Errorf("registering report metrics: %w", err)
			}
		}
	}
	return b, nil
}

// Close releases the sources' connections.
func (b *Builder) Close() error {
	var errs []error
	for _, s := range b.sources {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Storage is where the builder keeps reports.
func (b *Builder) Storage() Storage { return b.storage }

// storageError marks failures of report storage for ErrorClass.
type storageError struct{ err error }

func (e *storageError) Error() string { return "report storage: " + e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// Error classes returned by ErrorClass besides the source classes.
const (
	ClassCancelled = "cancelled"
	ClassStorage   = "report_storage"
	ClassInternal  = "report_internal"
)

// ErrorClass maps a Build error to a short class free of personal data, for
// request history and metrics labels: one of the source.Class* values,
// "cancelled", "report_storage" or "report_internal".
func ErrorClass(err error) string {
	if err == nil {
		return ""
	}
	if c := source.Class(err); c != "" && c != source.ClassSink {
		return c
	}
	var se *storageError
	switch {
	case errors.Is(err, context.Canceled):
		return ClassCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return source.ClassTimeout
	case errors.As(err, &se), source.Class(err) == source.ClassSink:
		// Sink failures are the local spool's disk failing.
		return ClassStorage
	}
	return ClassInternal
}

// Build reads every source for subject and stores the report under the
// request id. It is all or nothing: on any error (a source failing, ctx
// cancelled, a disk error) no report is left under the id, and on success
// the whole report replaces any previous one atomically, so a retry after a
// crash overwrites rather than duplicates.
func (b *Builder) Build(ctx context.Context, requestID string, subject event.Subject) (res Result, err error) {
	if !validID(requestID) {
		return Result{}, fmt.Errorf("building report: %w", ErrInvalidID)
	}
	ctx, span := b.startBuildSpan(ctx, requestID)
	defer func() { endBuildSpan(span, res, err) }()
	started := time.Now()
	defer func() {
		if err == nil {
			return
		}
		// A previous attempt may have stored a whole report and crashed before
		// recording it; a failed build leaves nothing under the id either way.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := b.storage.Delete(dctx, requestID); derr != nil {
			b.logger.ErrorContext(ctx, "deleting failed report", "request_id", requestID, "error", derr)
		}
		err = fmt.Errorf("building report %s: %w", requestID, err)
	}()

	spoolKey := make([]byte, 32)
	if _, err := rand.Read(spoolKey); err != nil {
		return Result{}, err
	}
	spools, err := b.readSources(ctx, subject, newMasterKey(spoolKey))
	defer func() {
		for _, s := range spools {
			if s != nil {
				_ = s.close()
			}
		}
	}()
	if err != nil {
		return Result{}, err
	}

	res, err = b.store(ctx, requestID, subject, spools)
	if err != nil {
		return Result{}, err
	}
	b.generated.Inc()
	b.bytes.Add(float64(res.Bytes))
	b.logger.InfoContext(ctx, "report stored", "request_id", requestID, "report_id", res.ReportID,
		"bytes", res.Bytes, "sources", len(b.sources), "duration", time.Since(started))
	return res, nil
}

// readSources reads all sources concurrently into spools. A nil spool marks
// a skipped source. The first failure cancels the others.
func (b *Builder) readSources(ctx context.Context, subject event.Subject, key masterKey) ([]*spool, error) {
	spools := make([]*spool, len(b.sources))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.SourceConcurrency)
	for i, src := range b.sources {
		if !src.Applies(subject) {
			continue
		}
		sp, err := newSpool(gctx, src.Name(), b.cfg.SpoolDir, key)
		if err != nil {
			_ = g.Wait()
			return spools, &storageError{err}
		}
		spools[i] = sp
		g.Go(func() (err error) {
			started := time.Now()
			sctx, cancel := context.WithTimeout(gctx, b.timeouts[i])
			defer cancel()
			sctx, span := startSourceSpan(sctx, src)
			defer func() { endSourceSpan(span, sp, err) }()
			if err := src.Read(sctx, subject, sp); err != nil {
				// The parent's cancellation is not this source's fault.
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if gctx.Err() != nil {
					return err // another source failed first and cancelled this one
				}
				b.logger.WarnContext(ctx, "source failed", "source", src.Name(), "error_class", ErrorClass(err), "duration", time.Since(started))
				return err
			}
			if err := sp.finish(); err != nil {
				return &storageError{fmt.Errorf("spooling source %s: %w", src.Name(), err)}
			}
			b.logger.DebugContext(ctx, "source read", "source", src.Name(), "rows", sp.rows, "duration", time.Since(started))
			return nil
		})
	}
	return spools, g.Wait()
}

// hashCounter hashes and counts what is written through it.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newHashCounter(w io.Writer) *hashCounter { return &hashCounter{w: w, h: sha256.New()} }

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func (c *hashCounter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// storageWriter marks write errors from storage so they classify as storage errors.
type storageWriter struct{ w io.Writer }

func (s storageWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = &storageError{err}
	}
	return n, err
}

// store writes the report into storage, sealed, and commits it only when the
// whole archive is written: a failure or a cancelled ctx leaves nothing.
func (b *Builder) store(ctx context.Context, id string, subject event.Subject, spools []*spool) (Result, error) {
	pending, err := b.storage.Create(ctx, id)
	if err != nil {
		return Result{}, &storageError{err}
	}
	committed := false
	defer func() {
		if !committed {
			_ = pending.Abort()
		}
	}()
	seal, err := newSealer(storageWriter{pending}, b.keys[0], id, b.chunk)
	if err != nil {
		return Result{}, err
	}
	whole := newHashCounter(seal)
	rows, err := b.writeArchive(ctx, whole, id, subject, spools)
	if err != nil {
		return Result{}, err
	}
	if err := seal.Close(); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := pending.Commit(ctx); err != nil {
		return Result{}, &storageError{err}
	}
	committed = true
	return Result{ReportID: id, Bytes: whole.n, SHA256: whole.sum(), Rows: rows}, nil
}

// writeArchive writes the ZIP to w: each source's JSON and CSV files, then
// the manifest that lists them. It returns the rows read per source.
func (b *Builder) writeArchive(ctx context.Context, w io.Writer, id string, subject event.Subject, spools []*spool) (map[string]int64, error) {
	a := archive{zw: zip.NewWriter(w), modified: b.now().UTC().Truncate(time.Second)}
	a.zw.RegisterCompressor(zip.Deflate, b.flates.compressor)
	a.man = Manifest{FormatVersion: FormatVersion, RequestID: id, SubjectID: subject.ID, GeneratedAt: a.modified}
	rows := map[string]int64{}
	for i, src := range b.sources {
		sp := spools[i]
		ms := ManifestSource{Name: src.Name(), Kind: src.Kind()}
		if sp == nil {
			ms.Skipped = "the subject lacks an identifier this source needs"
		} else {
			ms.Rows = sp.rows
		}
		a.man.Sources = append(a.man.Sources, ms)
		rows[src.Name()] = ms.Rows
		if err := a.entry(src.Name()+".json", func(w io.Writer) error { return writeJSON(ctx, w, sp) }); err != nil {
			return nil, err
		}
		if err := a.entry(src.Name()+".csv", func(w io.Writer) error { return writeCSV(ctx, w, sp) }); err != nil {
			return nil, err
		}
	}
	return rows, a.close()
}

// archive is a report's ZIP while it is written: every entry carries the
// report's time, and the manifest records each entry's size and digest.
type archive struct {
	zw       *zip.Writer
	modified time.Time
	man      Manifest
}

// entry adds the file name, written by write, and lists it in the manifest.
func (a *archive) entry(name string, write func(w io.Writer) error) error {
	w, err := a.zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: a.modified})
	if err != nil {
		return err
	}
	hc := newHashCounter(w)
	if err := write(hc); err != nil {
		return err
	}
	a.man.Files = append(a.man.Files, ManifestFile{Name: name, Bytes: hc.n, SHA256: hc.sum()})
	return nil
}

// close writes the manifest last (it lists every other entry) and ends the ZIP.
func (a *archive) close() error {
	manJSON, err := json.MarshalIndent(a.man, "", "  ")
	if err != nil {
		return err
	}
	mw, err := a.zw.CreateHeader(&zip.FileHeader{Name: ManifestName, Method: zip.Deflate, Modified: a.modified})
	if err != nil {
		return err
	}
	if _, err := mw.Write(append(manJSON, '\n')); err != nil {
		return err
	}
	return a.zw.Close()
}

// writeJSON writes the spooled records as one JSON array, a record per line.
func writeJSON(ctx context.Context, w io.Writer, sp *spool) error {
	if sp == nil || sp.rows == 0 {
		_, err := io.WriteString(w, "[]\n")
		return err
	}
	sep := []byte("[\n")
	err := sp.each(ctx, func(obj []byte) error {
		if _, err := w.Write(sep); err != nil {
			return err
		}
		sep = []byte(",\n")
		_, err := w.Write(obj)
		return err
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n]\n")
	return err
}

// writeCSV writes the spooled records as CSV: a header of every key seen (in
// first-seen order), then one line per record; nested values are JSON text
// and null is empty.
func writeCSV(ctx context.Context, w io.Writer, sp *spool) error {
	if sp == nil || len(sp.cols) == 0 {
		return nil
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(sp.cols); err != nil {
		return err
	}
	rec := make([]string, len(sp.cols))
	err := sp.each(ctx, func(obj []byte) error {
		clear(rec)
		if err := source.Fields(obj, func(key string, raw []byte) error {
			i, ok := sp.colIdx[key]
			if !ok {
				return nil
			}
			v, err := source.DecodeString(raw)
			rec[i] = v
			return err
		}); err != nil {
			return err
		}
		return cw.Write(rec)
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

// Open returns the decrypted ZIP of a stored report and its size, or
// ErrNotFound. Each chunk is authenticated as it is read: a tampered or
// truncated file makes Read fail with ErrCorrupt (possibly after earlier,
// authentic chunks were returned).
func (b *Builder) Open(ctx context.Context, reportID string) (io.ReadCloser, int64, error) {
	rc, size, err := b.storage.Open(ctx, reportID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, 0, ErrNotFound
		}
		return nil, 0, fmt.Errorf("opening report %s: %w", reportID, err)
	}
	op, err := newOpener(rc, b.keys, reportID)
	if err != nil {
		_ = rc.Close()
		return nil, 0, fmt.Errorf("opening report %s: %w", reportID, err)
	}
	plain := op.plainSize(size)
	if plain < 0 {
		_ = rc.Close()
		return nil, 0, fmt.Errorf("opening report %s: %w", reportID, ErrCorrupt)
	}
	return readCloser{Reader: op, Closer: rc}, plain, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Delete removes a stored report; deleting a missing one is not an error.
func (b *Builder) Delete(ctx context.Context, reportID string) error {
	if err := b.storage.Delete(ctx, reportID); err != nil {
		return fmt.Errorf("deleting report %s: %w", reportID, err)
	}
	return nil
}

// Sweep removes temporary report files left by crashed builds that are older
// than olderThan, and returns how many it removed. (Spool files need no
// sweeping: they are unlinked while open.)
func (b *Builder) Sweep(ctx context.Context, olderThan time.Duration) (int, error) {
	n, err := b.storage.Sweep(ctx, olderThan)
	if n > 0 {
		b.logger.InfoContext(ctx, "abandoned report files removed", "count", n)
	}
	if err != nil {
		return n, fmt.Errorf("sweeping report storage: %w", err)
	}
	return n, nil
}
