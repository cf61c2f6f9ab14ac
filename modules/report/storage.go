package report

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNotFound means no report is stored under the id.
var ErrNotFound = errors.New("report not found")

// Storage keeps encrypted report files. A report becomes visible only when
// its Pending is committed, whole; implementations for object stores can
// map Commit to a completed multipart upload.
type Storage interface {
	// Create starts writing the object id. Until Commit, readers do not see
	// it and a previous object with the same id stays as it was.
	Create(ctx context.Context, id string) (Pending, error)
	// Open returns the stored object and its size, or ErrNotFound.
	Open(ctx context.Context, id string) (io.ReadCloser, int64, error)
	// Delete removes the object; deleting a missing one is not an error.
	Delete(ctx context.Context, id string) error
	// Sweep removes uncommitted objects left by crashed writers that are
	// older than olderThan, and returns how many it removed.
	Sweep(ctx context.Context, olderThan time.Duration) (int, error)
}

// Pending is an object being written.
type Pending interface {
	io.Writer
	// Commit makes the object durable and visible atomically, replacing any
	// previous object with the same id.
	Commit(ctx context.Context) error
	// Abort discards the object; it is safe after Commit (then a no-op).
	Abort() error
}

// Local stores reports as files in one directory: <id>.zip.enc, written as
// .tmp-<id>-<random> and renamed into place after fsync.
type Local struct {
	dir string
}

const (
	localSuffix    = ".zip.enc"
	localTmpPrefix = ".tmp-"
)

// NewLocal returns storage in dir, creating it (mode 0700: reports are
// personal data) if needed.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating report storage %s: %w", dir, err)
	}
	return &Local{dir: dir}, nil
}

// Dir is the directory the reports are kept in.
func (l *Local) Dir() string { return l.dir }

// validID keeps ids usable as file and object names without escaping.
func validID(id string) bool {
	if id == "" || len(id) > 128 || strings.HasPrefix(id, ".") {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func (l *Local) path(id string) string { return filepath.Join(l.dir, id+localSuffix) }

// Create implements Storage.
func (l *Local) Create(_ context.Context, id string) (Pending, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: invalid report id", ErrInvalidID)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := filepath.Join(l.dir, localTmpPrefix+id+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &localPending{f: f, tmp: name, final: l.path(id), dir: l.dir}, nil
}

type localPending struct {
	f          *os.File
	tmp, final string
	dir        string
	done       bool
}

func (p *localPending) Write(b []byte) (int, error) { return p.f.Write(b) }

func (p *localPending) Commit(ctx context.Context) error {
	if p.done {
		return errors.New("pending report already finished")
	}
	if err := ctx.Err(); err != nil {
		_ = p.Abort()
		return err
	}
	p.done = true
	if err := p.f.Sync(); err != nil {
		_ = p.f.Close()
		_ = os.Remove(p.tmp)
		return err
	}
	if err := p.f.Close(); err != nil {
		_ = os.Remove(p.tmp)
		return err
	}
	if err := os.Rename(p.tmp, p.final); err != nil {
		_ = os.Remove(p.tmp)
		return err
	}
	// The rename is durable only once the directory entry is.
	return syncDir(p.dir)
}

func (p *localPending) Abort() error {
	if p.done {
		return nil
	}
	p.done = true
	_ = p.f.Close()
	if err := os.Remove(p.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open implements Storage.
func (l *Local) Open(_ context.Context, id string) (io.ReadCloser, int64, error) {
	if !validID(id) {
		return nil, 0, ErrNotFound
	}
	f, err := os.Open(l.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// Delete implements Storage.
func (l *Local) Delete(_ context.Context, id string) error {
	if !validID(id) {
		return nil
	}
	if err := os.Remove(l.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(l.dir)
}

// Sweep implements Storage.
func (l *Local) Sweep(ctx context.Context, olderThan time.Duration) (int, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !strings.HasPrefix(e.Name(), localTmpPrefix) || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed concurrently
		}
		if info.ModTime().After(cutoff) {
			continue // possibly still being written
		}
		if err := os.Remove(filepath.Join(l.dir, e.Name())); err == nil {
			removed++
		} else if !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
	}
	return removed, nil
}
