package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Default bounds of what one source may send (report.max_response_bytes,
// report.max_value_bytes).
const (
	DefaultMaxResponseBytes = 256 << 20
	DefaultMaxValueBytes    = 8 << 20
)

// ClassTooLarge is the class of a response, or one JSON value in it, larger than
// report.max_response_bytes or report.max_value_bytes; the read stopped
// there, so a hostile or broken upstream cannot make the worker hold it.
const ClassTooLarge = "source_too_large"

// ErrTooLarge is matched by errors.Is on an *Error of ClassTooLarge.
var ErrTooLarge = errors.New(ClassTooLarge)

var (
	errResponseTooLarge = errors.New("response larger than report.max_response_bytes")
	errValueTooLarge    = errors.New("JSON value larger than report.max_value_bytes")
)

// Limits bound one source response.
type Limits struct {
	// MaxResponseBytes bounds the bytes of one response (one page of an
	// Elasticsearch scroll).
	MaxResponseBytes int64
	// MaxValueBytes bounds one JSON value the decoder must hold at once:
	// a record, a member skipped on the way to records_path, a key.
	MaxValueBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxResponseBytes <= 0 {
		l.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	return l
}

// boundedBody counts what a json.Decoder reads from a response. The
// decoder holds a value in memory until it is complete, so the bytes read
// since the current value began are what it holds: past MaxValueBytes the
// next Read fails, and the decoder with it, before the value is whole.
type boundedBody struct {
	r      io.Reader
	limits Limits
	read   int64
	// start is where, in the stream, the value being decoded began.
	start int64
	dec   *json.Decoder
}

func newBoundedDecoder(r io.Reader, limits Limits) (*json.Decoder, *boundedBody) {
	b := &boundedBody{r: r, limits: limits.withDefaults()}
	b.dec = json.NewDecoder(b)
	return b.dec, b
}

func (b *boundedBody) Read(p []byte) (int, error) {
	switch {
	case b.read >= b.limits.MaxResponseBytes:
		return 0, errResponseTooLarge
	case b.read-b.start >= b.limits.MaxValueBytes:
		return 0, errValueTooLarge
	}
	if rest := b.limits.MaxResponseBytes - b.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	return n, err
}

// next marks the start of the next value: what the decoder has buffered
// but not consumed yet belongs to it.
func (b *boundedBody) next() {
	buffered := 0
	if l, ok := b.dec.Buffered().(interface{ Len() int }); ok {
		buffered = l.Len()
	}
	b.start = b.read - int64(buffered)
}

// tooLarge classifies errors of a bounded read; it returns nil for others.
func tooLarge(name string, err error) error {
	switch {
	case errors.Is(err, errResponseTooLarge):
		return fail(name, ClassTooLarge, "response larger than report.max_response_bytes", err)
	case errors.Is(err, errValueTooLarge):
		return fail(name, ClassTooLarge, "one JSON value larger than report.max_value_bytes", err)
	}
	return nil
}

// checkObject bounds an object record assembled member by member, which
// is one value however small each member is.
func checkObject(ob *objectBuilder, limits Limits) error {
	// limits are a boundedBody's, defaults already applied.
	if int64(len(ob.buf)) > limits.MaxValueBytes {
		return fmt.Errorf("object record: %w", errValueTooLarge)
	}
	return nil
}
