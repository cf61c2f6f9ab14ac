package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
)

// httpSource calls a third-party API for the subject and streams the records
// of its JSON response.
type httpSource struct {
	name, method, auth string
	url                *expand.URL
	body               *expand.JSON
	path               []string
	client             *http.Client
	limits             Limits
}

func newHTTP(cfg Config, client *http.Client, limits Limits) (*httpSource, error) {
	method := strings.ToUpper(cfg.Method)
	if method == "" {
		method = http.MethodGet
	}
	var path []string
	if cfg.RecordsPath != "" {
		path = strings.Split(cfg.RecordsPath, ".")
	}
	u, err := expand.ParseURL(cfg.URL, placeholders(cfg.URL)...)
	if err != nil {
		return nil, fmt.Errorf("source %s: url: %w", cfg.Name, err)
	}
	var body *expand.JSON
	if cfg.Body != "" {
		if body, err = expand.ParseJSON(cfg.Body, placeholders(cfg.Body)...); err != nil {
			return nil, fmt.Errorf("source %s: body: %w", cfg.Name, err)
		}
	}
	return &httpSource{name: cfg.Name, method: method, url: u, body: body, auth: cfg.AuthHeader, path: path, client: client, limits: limits.withDefaults()}, nil
}

func (s *httpSource) Name() string { return s.name }
func (s *httpSource) Kind() string { return "http" }
func (s *httpSource) Close() error { return nil }

func (s *httpSource) Applies(subject event.Subject) bool {
	names := [][]string{s.url.Names()}
	if s.body != nil {
		names = append(names, s.body.Names())
	}
	return appliesTemplate(subject, names...)
}

func (s *httpSource) Read(ctx context.Context, subject event.Subject, sink Sink) error {
	target, err := s.url.Expand(values(subject))
	if err != nil {
		return refused(s.name, err)
	}
	var body io.Reader
	if s.body != nil {
		b, err := s.body.Expand(values(subject))
		if err != nil {
			return refused(s.name, err)
		}
		body = strings.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, s.method, target, body)
	if err != nil {
		return fail(s.name, ClassQuery, "building request", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error's text contains the URL, which contains the identifiers.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, expand.ErrRedirect) {
			return fail(s.name, ClassRedirect, err.Error(), err)
		}
		return transportFailure(s.name, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
	}()
	if err := statusFailure(s.name, resp.StatusCode); err != nil {
		return err
	}
	dec, bounded := newBoundedDecoder(resp.Body, s.limits)
	if err := streamRecords(s.name, dec, bounded, s.path, sink); err != nil {
		return s.classifyRead(err)
	}
	return nil
}

func statusFailure(name string, code int) error {
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 500:
		return fail(name, ClassHTTP5xx, "status "+strconv.Itoa(code), nil)
	default:
		return fail(name, ClassHTTP4xx, "status "+strconv.Itoa(code), nil)
	}
}

func (s *httpSource) classifyRead(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if tl := tooLarge(s.name, err); tl != nil {
		return tl
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se), errors.As(err, &te), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errMalformed):
		return fail(s.name, ClassBadResponse, "malformed JSON", err)
	case errors.Is(err, errPathMissing):
		return fail(s.name, ClassBadResponse, "records_path not found", err)
	}
	return transportFailure(s.name, err)
}

var (
	errMalformed   = errors.New("malformed JSON")
	errPathMissing = errors.New("records path not found")
)

// streamRecords walks the decoder down path and emits the value found there:
// each element of an array, or an object as one record; null is no record.
// Before each value it tells bounded a new one begins.
func streamRecords(name string, dec *json.Decoder, bounded *boundedBody, path []string, sink Sink) error {
	null, err := descend(dec, bounded, path)
	if err != nil || null {
		return err
	}
	bounded.next()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('['):
		err = streamArray(name, dec, bounded, sink)
	case json.Delim('{'):
		err = streamObject(name, dec, bounded, sink)
	case nil:
	default:
		return fmt.Errorf("%w: records must be an array or object", errMalformed)
	}
	if err != nil {
		return err
	}
	if len(path) == 0 {
		// A well-formed single document ends here; trailing bytes mean the
		// response was not the JSON we expected.
		if _, err := dec.Token(); err != io.EOF {
			return fmt.Errorf("%w: trailing data", errMalformed)
		}
	}
	return nil
}

// descend reads dec down path (records_path's segments) to the value of its
// last member. null reports a null on the way, which means no records.
func descend(dec *json.Decoder, bounded *boundedBody, path []string) (null bool, err error) {
	for _, seg := range path {
		bounded.next()
		tok, err := dec.Token()
		if err != nil {
			return false, err
		}
		if tok == nil {
			return true, nil
		}
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return false, errPathMissing
		}
		if err := findMember(dec, bounded, seg); err != nil {
			return false, err
		}
	}
	return false, nil
}

// findMember skips the members of the object dec is in until the one named
// name, leaving dec at its value; errPathMissing when there is none.
func findMember(dec *json.Decoder, bounded *boundedBody, name string) error {
	for dec.More() {
		bounded.next()
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		if kt.(string) == name {
			return nil
		}
		bounded.next()
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return errPathMissing
}

// streamArray sends each element of the array dec is in as a record.
func streamArray(name string, dec *json.Decoder, bounded *boundedBody, sink Sink) error {
	var ob objectBuilder
	for dec.More() {
		bounded.next()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		rec, err := ob.record(raw)
		if err != nil {
			return err
		}
		if err := sink.Row(rec); err != nil {
			return sinkFailure(name, err)
		}
	}
	_, err := dec.Token()
	return err
}

// streamObject sends the object dec is in as one record, rebuilt member by
// member so that a large one is not decoded twice.
func streamObject(name string, dec *json.Decoder, bounded *boundedBody, sink Sink) error {
	var ob objectBuilder
	ob.reset()
	for dec.More() {
		bounded.next()
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		bounded.next()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		ob.key(kt.(string))
		if err := ob.compactValue(raw); err != nil {
			return err
		}
		if err := checkObject(&ob, bounded.limits); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if err := sink.Row(ob.finish()); err != nil {
		return sinkFailure(name, err)
	}
	return nil
}
