// Package report builds access reports: it reads every configured source for
// a data subject, writes a ZIP (one JSON and one CSV file per source and a
// manifest with row counts and SHA-256 sums) streamed through AES-256-GCM
// into report storage, and makes it visible all at once or not at all.
package report

import (
	"archive/zip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"syscall"
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
	// Sources are the manifest's sources, in archive order.
	Sources []ManifestSource
}

// Rows is the number of records per source name.
func (r Result) Rows() map[string]int64 {
	rows := make(map[string]int64, len(r.Sources))
	for _, ms := range r.Sources {
		rows[ms.Name] = ms.Rows
	}
	return rows
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
	// pools are the compressors and buffers reused across entries and
	// reports (spool.go).
	pools pools
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

	// What a build spills to disk lives in spool_dir; a small report never
	// does, so an unusable directory is found here rather than by the first
	// large report.
	if err := b.checkSpoolDir(); err != nil {
		return Result{}, &storageError{err}
	}
	spoolKey := make([]byte, 32)
	if _, err := rand.Read(spoolKey); err != nil {
		return Result{}, err
	}
	sinks, err := b.readSources(ctx, subject, newMasterKey(spoolKey))
	defer func() {
		for _, s := range sinks {
			if s != nil {
				s.close()
			}
		}
	}()
	if err != nil {
		return Result{}, err
	}

	res, err = b.store(ctx, requestID, subject, newMasterKey(spoolKey), sinks)
	if err != nil {
		return Result{}, err
	}
	b.generated.Inc()
	b.bytes.Add(float64(res.Bytes))
	b.logger.InfoContext(ctx, "report stored", "request_id", requestID, "report_id", res.ReportID,
		"bytes", res.Bytes, "sources", len(b.sources), "duration", time.Since(started))
	return res, nil
}

// checkSpoolDir fails unless spool_dir (or the system temp directory) is a directory.
func (b *Builder) checkSpoolDir() error {
	dir := b.cfg.SpoolDir
	if dir == "" {
		dir = os.TempDir()
	}
	fi, err := os.Stat(dir) //nolint:gosec // G703: the operator's spool_dir setting, not request input
	if err != nil {
		return fmt.Errorf("spool directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("spool directory: %w", syscall.ENOTDIR)
	}
	return nil
}

// readSources reads all sources concurrently, each into a sink that encodes
// its entries as the records arrive. A nil sink marks a skipped source. The
// first failure cancels the others.
func (b *Builder) readSources(ctx context.Context, subject event.Subject, key masterKey) ([]*sourceSink, error) {
	sinks := make([]*sourceSink, len(b.sources))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.SourceConcurrency)
	for i, src := range b.sources {
		if !src.Applies(subject) {
			continue
		}
		sk := newSourceSink(gctx, &b.pools, src.Name(), b.cfg.SpoolDir, key, b.cfg.CompressConcurrency)
		sinks[i] = sk
		g.Go(func() (err error) {
			started := time.Now()
			sctx, cancel := context.WithTimeout(gctx, b.timeouts[i])
			defer cancel()
			sctx, span := startSourceSpan(sctx, src)
			defer func() { endSourceSpan(span, sk.rows, err) }()
			if err := src.Read(sctx, subject, sk); err != nil {
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
			if err := sk.finish(); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return &storageError{fmt.Errorf("spooling source %s: %w", src.Name(), err)}
			}
			b.logger.DebugContext(ctx, "source read", "source", src.Name(), "rows", sk.rows, "duration", time.Since(started))
			return nil
		})
	}
	return sinks, g.Wait()
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
func (b *Builder) store(ctx context.Context, id string, subject event.Subject, key masterKey, sinks []*sourceSink) (Result, error) {
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
	seal, err := b.pools.newSealer(storageWriter{pending}, b.keys[0], id, b.chunk)
	if err != nil {
		return Result{}, err
	}
	defer b.pools.release(seal)
	whole := newHashCounter(seal)
	sources, err := b.writeArchive(whole, id, subject, key, sinks)
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
	return Result{ReportID: id, Bytes: whole.n, SHA256: whole.sum(), Sources: sources}, nil
}

// writeArchive writes the ZIP to w: each source's JSON and CSV files, then
// the manifest that lists them. The sources' entries are already deflated
// (spool.go) and are copied as they are. It returns the manifest's sources.
func (b *Builder) writeArchive(w io.Writer, id string, subject event.Subject, key masterKey, sinks []*sourceSink) ([]ManifestSource, error) {
	a := archive{zw: zip.NewWriter(w), modified: b.now().UTC().Truncate(time.Second), pools: &b.pools}
	a.zw.RegisterCompressor(zip.Deflate, b.pools.compressor)
	a.man = Manifest{FormatVersion: FormatVersion, RequestID: id, SubjectID: subject.ID, GeneratedAt: a.modified}
	for i, src := range b.sources {
		sk := sinks[i]
		ms := ManifestSource{Name: src.Name(), Kind: src.Kind()}
		jsonEntry, csvEntry := (*entry)(nil), (*entry)(nil)
		if sk == nil {
			ms.Skipped = "the subject lacks an identifier this source needs"
			// A skipped source has an empty array and an empty CSV.
			var err error
			if jsonEntry, err = a.small(key, "[]\n"); err != nil {
				return nil, err
			}
			defer func() { _ = jsonEntry.close() }()
			if csvEntry, err = a.small(key, ""); err != nil {
				return nil, err
			}
			defer func() { _ = csvEntry.close() }()
		} else {
			ms.Rows = sk.rows
			jsonEntry, csvEntry = sk.json, sk.csv
		}
		a.man.Sources = append(a.man.Sources, ms)
		if err := a.raw(src.Name()+".json", jsonEntry); err != nil {
			return nil, err
		}
		if err := a.raw(src.Name()+".csv", csvEntry); err != nil {
			return nil, err
		}
	}
	return a.man.Sources, a.close()
}

// archive is a report's ZIP while it is written: every entry carries the
// report's time, and the manifest records each entry's size and digest.
type archive struct {
	zw       *zip.Writer
	modified time.Time
	man      Manifest
	pools    *pools
}

// small encodes an entry of the given content.
func (a *archive) small(key masterKey, content string) (*entry, error) {
	e := newEntry(a.pools, "", key)
	e.buf = append(e.buf, content...)
	return e, e.finish()
}

// raw adds the deflated entry e as the file name and lists it in the
// manifest. The header is the one zip.Writer.CreateHeader writes for a
// deflated entry (data descriptor, extended timestamp), so the archive is
// the same as if the entry had been compressed in place
// (TestRawEntriesMatchCreateHeader).
func (a *archive) raw(name string, e *entry) error {
	fh := &zip.FileHeader{
		Name: name, Method: zip.Deflate, Flags: 0x8,
		CreatorVersion: zipVersion20, ReaderVersion: zipVersion20,
		CRC32: e.crc, CompressedSize64: uint64(e.out.n), UncompressedSize64: uint64(e.n), //nolint:gosec // G115: byte counts, never negative
	}
	// CreateRaw writes these fields as they are: only CreateHeader derives them from Modified.
	fh.ModifiedDate, fh.ModifiedTime = msDosTime(a.modified) //nolint:staticcheck // SA1019: see above
	var ext [9]byte
	binary.LittleEndian.PutUint16(ext[0:], extTimeExtraID)
	binary.LittleEndian.PutUint16(ext[2:], 5)
	ext[4] = 1                                                        // modification time only
	binary.LittleEndian.PutUint32(ext[5:], uint32(a.modified.Unix())) //nolint:gosec // G115: truncated as archive/zip truncates it
	fh.Extra = ext[:]
	if fh.CompressedSize64 >= math.MaxUint32 || fh.UncompressedSize64 >= math.MaxUint32 {
		fh.ReaderVersion = zipVersion45
	}
	w, err := a.zw.CreateRaw(fh)
	if err != nil {
		return err
	}
	r, err := e.out.reader()
	if err != nil {
		return err
	}
	buf := a.pools.getBuf()
	_, err = io.CopyBuffer(w, onlyReader{r}, buf[:cap(buf)])
	a.pools.putBuf(buf)
	if err != nil {
		return err
	}
	a.man.Files = append(a.man.Files, ManifestFile{Name: name, Bytes: e.n, SHA256: hex.EncodeToString(e.sha.Sum(nil))})
	return nil
}

// msDosTime is archive/zip's MS-DOS date and time of t (which it computes
// from FileHeader.Modified for entries it compresses itself).
func msDosTime(t time.Time) (date, clock uint16) {
	date = uint16(t.Day() + int(t.Month())<<5 + (t.Year()-1980)<<9) //nolint:gosec // G115: as archive/zip packs it
	clock = uint16(t.Second()/2 + t.Minute()<<5 + t.Hour()<<11)     //nolint:gosec // G115: as archive/zip packs it
	return date, clock
}

// Header values of archive/zip's, for raw entries.
const (
	zipVersion20   = 20     // deflate
	zipVersion45   = 45     // ZIP64
	extTimeExtraID = 0x5455 // extended timestamp
)

// onlyReader hides a reader's WriterTo, so io.CopyBuffer uses the pooled buffer.
type onlyReader struct{ io.Reader }

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
