package report

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeES is a FAKE Elasticsearch: a small HTTP server speaking just enough of
// the _search and scroll protocol for the official client. No Elasticsearch
// runs here; this checks our request shape, paging and response parsing, not
// Elasticsearch's query semantics (it supports only "term" filters).
type fakeES struct {
	*httptest.Server
	docs []map[string]any

	mu       sync.Mutex
	scrolls  map[string][]map[string]any
	sizes    map[string]int
	cleared  int
	searches int
	// failShards makes responses report failed shards.
	failShards bool
	auth       string
}

func newFakeES(t *testing.T, docs []map[string]any) *fakeES {
	f := &fakeES{docs: docs, scrolls: map[string][]map[string]any{}, sizes: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeES) serve(w http.ResponseWriter, r *http.Request) {
	// The official client refuses servers that do not say they are Elasticsearch.
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auth != "" && r.Header.Get("Authorization") != f.auth {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized","status":401}`))
		return
	}
	switch {
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/_search/scroll"):
		f.cleared++
		_, _ = w.Write([]byte(`{"succeeded":true,"num_freed":1}`))
	case r.URL.Path == "/_search/scroll":
		var body struct {
			ScrollID string `json:"scroll_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if id := r.URL.Query().Get("scroll_id"); id != "" {
			body.ScrollID = id // the client sends it in the query string
		}
		rest, ok := f.scrolls[body.ScrollID]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"search_context_missing_exception","status":404}`))
			return
		}
		f.page(w, body.ScrollID, rest)
	case strings.HasSuffix(r.URL.Path, "/_search"):
		f.searches++
		var body struct {
			Query map[string]any `json:"query"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"parsing_exception","status":400}`))
			return
		}
		term := findTerm(body.Query)
		var hits []map[string]any
		for _, d := range f.docs {
			match := true
			for k, v := range term {
				if fmt.Sprint(d[k]) != fmt.Sprint(v) {
					match = false
				}
			}
			if match {
				hits = append(hits, d)
			}
		}
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		if size <= 0 {
			size = 10
		}
		id := "scroll-" + strconv.Itoa(f.searches)
		f.sizes[id] = size
		f.page(w, id, hits)
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprintf(w, `{"error":"fake: no route %s %s","status":404}`, r.Method, r.URL.Path)
	}
}

// page writes the next page of a scroll.
func (f *fakeES) page(w http.ResponseWriter, id string, rest []map[string]any) {
	size := f.sizes[id]
	n := min(size, len(rest))
	f.scrolls[id] = rest[n:]
	type hit struct {
		Index  string         `json:"_index"`
		ID     string         `json:"_id"`
		Source map[string]any `json:"_source"`
	}
	out := struct {
		ScrollID string         `json:"_scroll_id"`
		Took     int            `json:"took"`
		TimedOut bool           `json:"timed_out"`
		Shards   map[string]int `json:"_shards"`
		Hits     struct {
			Total map[string]any `json:"total"`
			Hits  []hit          `json:"hits"`
		} `json:"hits"`
	}{ScrollID: id, Shards: map[string]int{"total": 2, "successful": 2, "skipped": 0, "failed": 0}}
	if f.failShards {
		out.Shards["successful"], out.Shards["failed"] = 1, 1
	}
	out.Hits.Total = map[string]any{"value": len(rest), "relation": "eq"}
	out.Hits.Hits = []hit{}
	for i, d := range rest[:n] {
		out.Hits.Hits = append(out.Hits.Hits, hit{Index: "logins", ID: id + "-" + strconv.Itoa(i), Source: d})
	}
	_ = json.NewEncoder(w).Encode(out)
}

// findTerm returns the field/value pairs of every "term" clause in q.
func findTerm(q any) map[string]any {
	out := map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if k == "term" {
					if m, ok := c.(map[string]any); ok {
						for f, val := range m {
							if vm, ok := val.(map[string]any); ok {
								val = vm["value"]
							}
							out[f] = val
						}
					}
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(q)
	return out
}
