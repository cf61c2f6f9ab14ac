package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
)

// esSource runs a _search for the subject with the official client and pages
// through every hit with the scroll API, streaming each hit's _source.
type esSource struct {
	name, index string
	query       *expand.JSON
	pageSize    int
	client      *elasticsearch.Client
	limits      Limits
}

// scrollKeepAlive is how long Elasticsearch keeps the search context between pages.
const scrollKeepAlive = time.Minute

func newElasticsearch(cfg Config, hc *http.Client, limits Limits) (*esSource, error) {
	header := http.Header{}
	if cfg.AuthHeader != "" {
		header.Set("Authorization", cfg.AuthHeader)
	}
	transport := hc.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	client, err := elasticsearch.NewClient(elasticsearch.Config{
		Addresses: []string{cfg.URL},
		Header:    header,
		Transport: transport,
		// The report as a whole is retried with backoff; retrying inside one
		// read would only stretch the per-source timeout.
		DisableRetry: true,
	})
	if err != nil {
		return nil, fmt.Errorf("source %s: elasticsearch client: %w", cfg.Name, err)
	}
	size := cfg.PageSize
	if size == 0 {
		size = 1000
	}
	query, err := expand.ParseJSON(cfg.Query, placeholders(cfg.Query)...)
	if err != nil {
		return nil, fmt.Errorf("source %s: query: %w", cfg.Name, err)
	}
	return &esSource{name: cfg.Name, index: cfg.Index, query: query, pageSize: size, client: client, limits: limits.withDefaults()}, nil
}

func (s *esSource) Name() string { return s.name }
func (s *esSource) Kind() string { return "elasticsearch" }
func (s *esSource) Close() error { return nil }

func (s *esSource) Applies(subject event.Subject) bool {
	return appliesTemplate(subject, s.query.Names())
}

func (s *esSource) Read(ctx context.Context, subject event.Subject, sink Sink) error {
	query, err := s.query.Expand(values(subject))
	if err != nil {
		return refused(s.name, err)
	}
	es := s.client
	res, err := es.Search(
		es.Search.WithContext(ctx),
		es.Search.WithIndex(strings.Split(s.index, ",")...),
		es.Search.WithBody(strings.NewReader(query)),
		es.Search.WithSize(s.pageSize),
		es.Search.WithScroll(scrollKeepAlive),
	)
	scrollID := ""
	defer func() {
		if scrollID == "" {
			return
		}
		// Free the server's search context even when the build was cancelled.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if r, err := es.ClearScroll(es.ClearScroll.WithContext(cctx), es.ClearScroll.WithScrollID(scrollID)); err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			_ = r.Body.Close()
		}
	}()
	for {
		if err != nil {
			return transportFailure(s.name, err)
		}
		page, perr := s.readPage(res, sink)
		if perr != nil {
			return perr
		}
		if page.scrollID != "" {
			scrollID = page.scrollID
		}
		if page.hits == 0 || page.hits < s.pageSize || scrollID == "" {
			return nil
		}
		res, err = es.Scroll(
			es.Scroll.WithContext(ctx),
			es.Scroll.WithScrollID(scrollID),
			es.Scroll.WithScroll(scrollKeepAlive),
		)
	}
}

type esPage struct {
	scrollID string
	hits     int
}

func (s *esSource) readPage(res *esapi.Response, sink Sink) (esPage, error) {
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		_ = res.Body.Close()
	}()
	if err := statusFailure(s.name, res.StatusCode); err != nil {
		return esPage{}, err
	}
	dec, bounded := newBoundedDecoder(res.Body, s.limits)
	page, err := parseSearch(s.name, dec, bounded, sink)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return page, err
		}
		if tl := tooLarge(s.name, err); tl != nil {
			return page, tl
		}
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errMalformed) {
			return page, fail(s.name, ClassBadResponse, "malformed search response", err)
		}
		return page, transportFailure(s.name, err)
	}
	return page, nil
}

// parseSearch streams a _search or _search/scroll response: hits are handed
// to sink as they are decoded, never collected.
func parseSearch(name string, dec *json.Decoder, bounded *boundedBody, sink Sink) (esPage, error) {
	var page esPage
	if err := expectDelim(dec, '{'); err != nil {
		return page, err
	}
	for dec.More() {
		bounded.next()
		key, err := dec.Token()
		if err != nil {
			return page, err
		}
		bounded.next()
		switch key {
		case "_scroll_id":
			if err := dec.Decode(&page.scrollID); err != nil {
				return page, err
			}
		case "timed_out":
			var timedOut bool
			if err := dec.Decode(&timedOut); err != nil {
				return page, err
			}
			if timedOut {
				return page, fail(name, ClassPartial, "search timed out on the server", nil)
			}
		case "_shards":
			var shards struct {
				Total, Successful, Failed int
			}
			if err := dec.Decode(&shards); err != nil {
				return page, err
			}
			// Missing shards mean missing records: a report must be whole.
			if shards.Failed > 0 {
				return page, fail(name, ClassPartial, fmt.Sprintf("%d of %d shards failed", shards.Failed, shards.Total), nil)
			}
		case "hits":
			n, err := parseHits(name, dec, bounded, sink)
			page.hits += n
			if err != nil {
				return page, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return page, err
			}
		}
	}
	_, err := dec.Token()
	return page, err
}

func parseHits(name string, dec *json.Decoder, bounded *boundedBody, sink Sink) (int, error) {
	if err := expectDelim(dec, '{'); err != nil {
		return 0, err
	}
	n := 0
	var ob objectBuilder
	for dec.More() {
		bounded.next()
		key, err := dec.Token()
		if err != nil {
			return n, err
		}
		bounded.next()
		if key != "hits" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return n, err
			}
			continue
		}
		if err := expectDelim(dec, '['); err != nil {
			return n, err
		}
		for dec.More() {
			bounded.next()
			var hit struct {
				Source json.RawMessage `json:"_source"`
			}
			if err := dec.Decode(&hit); err != nil {
				return n, err
			}
			n++
			if len(hit.Source) == 0 {
				continue
			}
			rec, err := ob.record(hit.Source)
			if err != nil {
				return n, err
			}
			if err := sink.Row(rec); err != nil {
				return n, sinkFailure(name, err)
			}
		}
		if _, err := dec.Token(); err != nil {
			return n, err
		}
	}
	_, err := dec.Token()
	return n, err
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != d {
		return fmt.Errorf("%w: expected %s", errMalformed, d)
	}
	return nil
}
