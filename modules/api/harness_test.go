package api_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/testkit"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

const requestsQueue = "worker.requests"

var topology = bus.Topology{Queues: []bus.Queue{{Name: requestsQueue, Bindings: []string{"request.submitted"}}}}

type harnessOptions struct {
	viaProxy       bool
	confirmTimeout time.Duration
	wrapPublisher  func(intake.Publisher) intake.Publisher
	participants   intake.ParticipantLister
	admin          []api.AdminRoute
	adminToken     string
	noValidation   bool
	discardLogs    bool
	// reports replaces the fake report store (e.g. with report.Builder).
	reports intake.ReportOpener
	// listener is served instead of a port the server opens.
	listener net.Listener
	// downloadKey replaces the harness's random download key, and
	// previousDownloadKeys are accepted besides it (a key rotation).
	downloadKey          []byte
	previousDownloadKeys [][]byte
	// limits replace health.DefaultLimits.
	limits health.Limits
	// privacy serves the self-service page, emailing through mail.
	privacy *privacyOptions
	// clients are named API clients (serve.api_clients), besides the
	// harness's two flat tokens.
	clients []intake.NamedToken
	// rateLimits are enforced by a limiter on the harness's Redis (or on
	// limiterRedis), counting addresses as trustedProxies say; zero: off.
	rateLimits     api.RateLimits
	trustedProxies []string
	limiterRedis   redis.UniversalClient
	// requireVerification makes privacy.require_verification from the
	// caller name of the harness's token.
	requireVerification func(caller string) []string
	// identifiers is serve.identifiers.
	identifiers []string
}

type privacyOptions struct {
	cfg  selfservice.Config
	mail *testkit.Mailpit
	now  func() time.Time
	// regulation is the page's clock, given to the intake for its caller
	// as console.client_regulations does, and to the page.
	regulation string
	// accounts is privacy.account_lookup.
	accounts selfservice.Accounts
}

// harness runs the real API server in-process on 127.0.0.1:0 against this
// test's own PostgreSQL database, AMQP prefix and Redis prefix.
type harness struct {
	t       testing.TB
	srv     *api.Server
	base    string
	client  *http.Client
	token   string
	key     []byte
	amqp    bus.Config
	bus     *bus.Conn // direct to the broker, for inspection
	db      *gorm.DB
	rdb     *redis.Client
	prefix  string // of every Redis key the server writes
	reg     *prometheus.Registry
	reports *fakeReports
	logs    *lockedBuffer
	proxy   *proxy
	pubConn *bus.Conn // the server's connection (through the proxy if any)
	page    *selfservice.Service
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, token: "tok-" + testkit.ID(), key: []byte("download-key-" + testkit.ID()), reg: prometheus.NewRegistry(), logs: &lockedBuffer{}}
	if o.downloadKey != nil {
		h.key = o.downloadKey
	}
	h.db, _ = testkit.Postgres(t)
	var redisPrefix string
	h.rdb, redisPrefix = testkit.Redis(t)
	h.prefix = redisPrefix
	h.amqp = testkit.AMQP(t)
	if o.confirmTimeout > 0 {
		h.amqp.ConfirmTimeout = o.confirmTimeout
	}
	h.bus = testkit.Bus(t, h.amqp, topology)
	h.pubConn = h.bus
	if o.viaProxy {
		h.proxy = newProxy(t, strings.TrimSuffix(strings.TrimPrefix(h.amqp.URL, "amqp://guest:guest@"), "/"))
		pcfg := h.amqp
		pcfg.URL = "amqp://guest:guest@" + h.proxy.addr + "/"
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := bus.Dial(ctx, pcfg, "gdpr-test-serve-"+h.amqp.Prefix, topology, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		h.pubConn = conn
	}
	pub := bus.NewPublisher(h.pubConn)
	t.Cleanup(func() { _ = pub.Close() })
	var publisher intake.Publisher = pub
	if o.wrapPublisher != nil {
		publisher = o.wrapPublisher(pub)
	}

	var logOut io.Writer = h.logs
	if o.discardLogs {
		logOut = io.Discard
	}
	logger := slog.New(trace.NewHandler(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if tt, ok := t.(*testing.T); ok && !o.discardLogs {
		tt.Cleanup(func() {
			if tt.Failed() {
				tt.Logf("server logs:\n%s", h.logs.String())
			}
		})
	}
	h.reports = &fakeReports{files: map[string][]byte{}}
	var reports intake.ReportOpener = h.reports
	if o.reports != nil {
		reports = o.reports
	}
	var regulations map[string]string
	if o.privacy != nil && o.privacy.regulation != "" {
		regulations = map[string]string{selfservice.Caller: o.privacy.regulation}
	}
	svc, err := intake.New(intake.Options{
		ClientRegulations:    regulations,
		Publisher:            publisher,
		Redis:                h.rdb,
		Requests:             requests.NewStore(h.db, nil),
		KeyPrefix:            redisPrefix + "intake:",
		AcceptedTTL:          time.Hour,
		IdempotencyTTL:       time.Hour,
		ConfirmTimeout:       h.amqp.ConfirmTimeout,
		DownloadKey:          h.key,
		Participants:         o.participants,
		PreviousDownloadKeys: o.previousDownloadKeys,
		Reports:              reports,
		Registerer:           h.reg,
		Logger:               logger,
		VerificationRequired: selfservice.Config{RequireVerification: requireVerification(o, h.token)}.Required,
		Identifiers:          o.identifiers,
	})
	require.NoError(t, err)
	apiTokens, err := intake.ParseClients(o.clients, []string{digest(h.token), digest(h.token + "-other-app")})
	require.NoError(t, err)
	var adminDigests []string
	if o.adminToken != "" {
		adminDigests = []string{digest(o.adminToken)}
	}
	adminTokens, err := intake.ParseTokens(adminDigests)
	require.NoError(t, err)
	if p := o.privacy; p != nil {
		ncfg := config.Default().Notify
		ncfg.SMTPHost, ncfg.SMTPPort = p.mail.SMTPHost, p.mail.SMTPPort
		h.page, err = selfservice.New(selfservice.Options{
			Config: p.cfg, Redis: h.rdb, KeyPrefix: redisPrefix + "privacy:", Key: h.key,
			PublicURL: "http://127.0.0.1", Intake: svc, Sender: smtpSender{notify.NewSMTP(ncfg)},
			Logger: logger, Now: p.now, Registerer: h.reg, Regulation: p.regulation,
			Accounts: p.accounts,
		})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, h.page.Stop(context.Background())) })
	}
	var limiterRedis redis.UniversalClient = h.rdb
	if o.limiterRedis != nil {
		limiterRedis = o.limiterRedis
	}
	limiter, err := ratelimit.New(ratelimit.Options{Redis: limiterRedis, KeyPrefix: redisPrefix + "ratelimit:", Key: []byte("test-key"),
		Scopes: api.RateLimitScopes(), Registerer: h.reg, Logger: logger})
	require.NoError(t, err)
	trusted := o.trustedProxies
	if o.privacy != nil {
		trusted = append(trusted, o.privacy.cfg.TrustedProxies...) // the deprecated alias, as app adds it
	}
	proxies, err := ratelimit.ParseProxies("serve.trusted_proxies", trusted)
	require.NoError(t, err)
	srv, err := api.New(api.Options{
		RateLimiter:  limiter,
		RateLimits:   o.rateLimits,
		Proxies:      proxies,
		Privacy:      h.page,
		Addr:         "127.0.0.1:0",
		Listener:     o.listener,
		Intake:       svc,
		APITokens:    apiTokens,
		AdminTokens:  adminTokens,
		MaxBodyBytes: 64 << 10,
		RetryAfter:   3 * time.Second,
		Limits:       o.limits,
		Admin:        o.admin,
		Registerer:   h.reg,
		Logger:       logger,
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	h.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, srv.Stop(ctx))
	})
	h.base = "http://" + srv.Addr()
	transport := &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 0, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	var rt http.RoundTripper = transport
	if !o.noValidation {
		rt = &validatingTransport{t: t, next: transport, router: openAPIRouter(t)}
	}
	h.client = &http.Client{Transport: rt, Timeout: 30 * time.Second}
	return h
}

func requireVerification(o harnessOptions, token string) []string {
	if o.requireVerification == nil {
		return nil
	}
	return o.requireVerification(digest(token)[:16])
}

type smtpSender struct{ s *notify.SMTP }

func (s smtpSender) Send(ctx context.Context, e selfservice.Email) error {
	return s.s.Send(ctx, notify.Email{To: e.To, Subject: e.Subject, Body: e.Body, MessageID: e.MessageID, Headers: e.Headers})
}

func digest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (h *harness) do(req *http.Request) response {
	h.t.Helper()
	res, err := h.client.Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(h.t, err)
	return response{status: res.StatusCode, header: res.Header, body: body}
}

func (h *harness) request(method, path string, body io.Reader, headers ...string) *http.Request {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, body)
	require.NoError(h.t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

// submit POSTs body as JSON with the harness's token plus extra headers.
func (h *harness) submit(body string, headers ...string) response {
	h.t.Helper()
	hs := append([]string{"Content-Type", "application/json", "Authorization", "Bearer " + h.token}, headers...)
	return h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(body), hs...))
}

func (h *harness) status(id string) response {
	h.t.Helper()
	return h.do(h.request(http.MethodGet, "/v1/requests/"+id, nil, "Authorization", "Bearer "+h.token))
}

// take removes and returns every message now in the requests queue.
func (h *harness) take() []amqp.Delivery {
	h.t.Helper()
	ch, err := h.bus.Channel(context.Background())
	require.NoError(h.t, err)
	defer ch.Close()
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(h.bus.QueueName(requestsQueue), true)
		require.NoError(h.t, err)
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

func (h *harness) submittedCount(typ string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(h.t, err)
	for _, mf := range mfs {
		if mf.GetName() != "gdpr_requests_submitted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// fakeReports stands in for modules/report's Builder: it serves fixed ZIPs
// by report id and counts opens, so a test can tell that no report was read.
type fakeReports struct {
	mu    sync.Mutex
	files map[string][]byte
	opens int
}

func (f *fakeReports) Open(_ context.Context, reportID string) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens++
	b, ok := f.files[reportID]
	if !ok {
		return nil, 0, fmt.Errorf("report %s: %w", reportID, intake.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (f *fakeReports) add(t testing.TB, reportID string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("manifest.json")
	require.NoError(t, err)
	_, err = fmt.Fprintf(w, `{"report_id":%q,"format_version":1}`, reportID)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[reportID] = buf.Bytes()
	return buf.Bytes()
}

func (f *fakeReports) openCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens
}

// lockedBuffer is the server's log sink, read by the tests while it writes.
type lockedBuffer struct{ testkit.Buffer }

// lines returns the JSON log records with the given message.
func (b *lockedBuffer) lines(t testing.TB, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(b.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

var openAPIOnce = sync.OnceValues(func() (routers.Router, error) {
	openapi3filter.RegisterBodyDecoder("application/zip", openapi3filter.ZipFileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	return gorillamux.NewRouter(doc)
})

func openAPIRouter(t testing.TB) routers.Router {
	r, err := openAPIOnce()
	require.NoError(t, err)
	return r
}

// validatingTransport checks every response the tests receive against the
// OpenAPI document: its status must be documented for the operation and its
// headers and body must match the schema.
type validatingTransport struct {
	t      testing.TB
	next   http.RoundTripper
	router routers.Router
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := v.next.RoundTrip(req)
	if err != nil {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	if err := validateResponse(v.router, req, res.StatusCode, res.Header, body); err != nil {
		v.t.Errorf("response does not match openapi.json: %s %s → %d: %v\nbody: %.500s", req.Method, req.URL.Path, res.StatusCode, err, body)
	}
	return res, nil
}

func validateResponse(router routers.Router, req *http.Request, status int, header http.Header, body []byte) error {
	route, params, err := router.FindRoute(req)
	if err != nil {
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			// An undocumented path or method: only the error shape is checked.
			var p api.Problem
			if err := json.Unmarshal(body, &p); err != nil || p.Error == "" {
				return fmt.Errorf("error body is not a problem: %w", err)
			}
			return nil
		}
		return fmt.Errorf("no documented operation: %w", err)
	}
	return openapi3filter.ValidateResponse(req.Context(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	})
}
