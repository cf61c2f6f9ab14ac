package requests_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	datasource "github.com/gdpr-oss/gdpr/modules/source"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

const apiToken = "e2e-test-token"

// binary is built once for every end-to-end test of the package.
var binary struct {
	once sync.Once
	path string
	err  error
}

func gdprBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(testkit.EnvBinary); bin != "" {
		return bin
	}
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "gdpr-e2e-bin-") //nolint:usetesting // one build shared by every test of the package, so not one test's TempDir
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "gdpr")
		root, err := filepath.Abs("../..")
		if err != nil {
			binary.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binary.path, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("building gdpr: %w: %s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.path != "" {
		_ = os.RemoveAll(filepath.Dir(binary.path))
	}
	os.Exit(code)
}

// source is the seeded PostgreSQL source and the HTTP source of one test.
type source struct {
	dsn  string
	http *httptest.Server

	mu    sync.Mutex
	calls map[string]int
	// fail decides whether the n-th call (1-based) for subject fails.
	fail func(subject string, n int) bool
	// delay is added to every HTTP call.
	delay func() time.Duration
}

// ordersOf and eventsOf are the seeded data of subject i.
func ordersOf(i int) int { return i % 4 }
func eventsOf(i int) int { return i%3 + 1 }

func subjectID(i int) string { return fmt.Sprintf("cust-%04d", i) }

// subjectPhoneAsTyped is subject i's phone number as a form gives it;
// subjectPhone is its E.164 form, as gdpr stores and sends it.
func subjectPhoneAsTyped(i int) string { return fmt.Sprintf("+49 151 0000-%04d", i) }
func subjectPhone(i int) string        { return fmt.Sprintf("+491510000%04d", i) }

func newSource(t testing.TB, subjects int) *source {
	t.Helper()
	s := &source{dsn: testkit.PostgresDSN(t), calls: map[string]int{}}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, s.dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE orders (customer_id text NOT NULL, item text NOT NULL, amount integer NOT NULL)`)
	require.NoError(t, err)
	rows := [][]any{}
	for i := 0; i < subjects; i++ {
		for k := 0; k < ordersOf(i); k++ {
			rows = append(rows, []any{subjectID(i), fmt.Sprintf("item-%d", k), i*10 + k})
		}
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"customer_id", "item", "amount"}, pgx.CopyFromRows(rows))
	require.NoError(t, err)

	s.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/users/"), "/events")
		s.mu.Lock()
		s.calls[id]++
		n := s.calls[id]
		fail, delay := s.fail, s.delay
		s.mu.Unlock()
		if delay != nil {
			time.Sleep(delay()) //nolint:forbidigo // a slow third-party API (a fake), not a wait
		}
		if fail != nil && fail(id, n) {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		var i int
		if _, err := fmt.Sscanf(id, "cust-%d", &i); err != nil {
			http.NotFound(w, r)
			return
		}
		events := make([]map[string]any, eventsOf(i))
		for k := range events {
			events[k] = map[string]any{"kind": "login", "seq": k}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(events)
	}))
	t.Cleanup(s.http.Close)
	return s
}

func (s *source) callsOf(subject string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[subject]
}

func (s *source) sources() []datasource.Config {
	return []datasource.Config{
		{Name: "orders", Kind: "postgres", DSN: s.dsn, Timeout: 10 * time.Second,
			Query: `SELECT item, amount FROM orders WHERE customer_id = @subject_id ORDER BY item`},
		{Name: "events", Kind: "http", Timeout: 10 * time.Second, URL: s.http.URL + "/users/{subject_id}/events"},
	}
}

// system is one isolated installation: its database, queues, Redis
// prefix, report directory, sources and SMTP server, and the processes of
// its roles.
type system struct {
	t      testing.TB
	bin    string
	cfg    config.Config
	db     *gorm.DB
	src    *source
	mail   *testkit.Mailpit
	apiURL string
	file   string
	admin  map[string]string
	// noPhone: submissions carry no subject.phone (a baseline build older
	// than the field refuses it).
	noPhone bool
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func newSystem(t testing.TB, subjects int, mutate func(*config.Config)) *system {
	t.Helper()
	s := &system{t: t, bin: gdprBinary(t), cfg: configtest.Config(t), src: newSource(t, subjects), mail: testkit.StartMailpit(t), admin: map[string]string{}}
	gdb, err := db.Open(t.Context(), db.Config{DSN: s.cfg.Postgres.DSN, MaxOpenConns: 4})
	require.NoError(t, err)
	t.Cleanup(func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	s.db = gdb
	c := &s.cfg
	c.Log.Level = "debug"
	c.Serve.Addr = freeAddr(t)
	s.apiURL = "http://" + c.Serve.Addr
	c.Serve.PublicURL = s.apiURL
	sum := sha256.Sum256([]byte(apiToken))
	c.Serve.APITokens = []string{hex.EncodeToString(sum[:])}
	// The end-to-end tests and load benchmarks submit hundreds of requests a
	// second from this one client, and download every report from one
	// address; modules/api's tests cover the limits.
	c.Serve.RateLimits.IntakePerClient.Rate = 0
	c.Serve.RateLimits.DownloadsPerAddress.Rate = 0
	for _, role := range []string{"serve", "worker", "scheduler", "canceller"} {
		s.admin[role] = freeAddr(t)
	}
	c.Serve.AdminAddr, c.Worker.AdminAddr = s.admin["serve"], s.admin["worker"]
	c.Scheduler.AdminAddr, c.Canceller.AdminAddr = s.admin["scheduler"], s.admin["canceller"]
	s.admin["all"] = s.admin["serve"]
	c.Notify.SMTPHost, c.Notify.SMTPPort = s.mail.SMTPHost, s.mail.SMTPPort
	c.Report.Sources = s.src.sources()
	c.Worker.PollInterval = 200 * time.Millisecond
	c.Worker.BackoffBase = 100 * time.Millisecond
	c.Worker.BackoffMax = 400 * time.Millisecond
	c.Shutdown.DrainTimeout = 5 * time.Second
	if mutate != nil {
		mutate(c)
	}
	// Without participants `all` and `canceller` start only when told so.
	c.Canceller.NoParticipants = len(c.Canceller.Participants) == 0
	raw, err := yaml.Marshal(s.cfg)
	require.NoError(t, err)
	s.file = filepath.Join(t.TempDir(), "gdpr.yaml")
	require.NoError(t, os.WriteFile(s.file, raw, 0o600))
	t.Cleanup(func() { testkit.DeleteTopology(t, s.cfg.AMQP, topologyOf(s.cfg)) })
	return s
}

// proc is one running role process.
type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// start runs `gdpr role` and waits until its /readyz answers 200.
func (s *system) start(role string, env ...string) *proc {
	s.t.Helper()
	p := &proc{cmd: exec.Command(s.bin, role), out: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	base := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.EnvPrefix) {
			base = append(base, kv)
		}
	}
	p.cmd.Env = append(append(base, "GDPR_CONFIG="+s.file), env...)
	p.cmd.Stdout = lockedWriter{p.mu, p.out}
	p.cmd.Stderr = p.cmd.Stdout
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	begin := time.Now()
	require.NoError(s.t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	s.t.Cleanup(func() {
		stopping := time.Now()
		p.stop()
		s.t.Logf("%s stopped in %s", role, time.Since(stopping).Round(time.Millisecond))
		if s.t.Failed() {
			p.mu.Lock()
			out := p.out.String()
			p.mu.Unlock()
			if len(out) > 20000 {
				out = out[len(out)-20000:]
			}
			s.t.Logf("tail of %s output:\n%s", role, out)
		}
	})
	admin := s.admin[role]
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GDPR_WORKER_ADMIN_ADDR="); ok {
			admin = v
		}
	}
	// A port freeAddr found free can be taken by another parallel test's
	// connection before the role binds it; then the role starts again on a
	// fresh port (a few times) instead of failing the test.
	rebind := false
	testkit.Eventually(s.t, 60*time.Second, func() bool {
		select {
		case <-p.done:
			p.mu.Lock()
			taken := strings.Contains(p.out.String(), "address already in use")
			p.mu.Unlock()
			if taken && len(env) < 8 {
				rebind = true
				return true
			}
			s.t.Fatalf("%s exited before it was ready", role)
		default:
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "%s ready", role)
	if rebind {
		addr := freeAddr(s.t)
		s.admin[role] = addr
		envRole := strings.ToUpper(role)
		if role == "all" {
			envRole = "SERVE"
		}
		return s.start(role, append(env, "GDPR_"+envRole+"_ADMIN_ADDR="+addr)...)
	}
	s.t.Logf("%s ready after %s", role, time.Since(begin).Round(time.Millisecond))
	return p
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to drain and exit, killing it if it does not.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

// submit posts an access request for subject i and returns the request id.
func (s *system) submit(ctx context.Context, typ string, i int) (string, error) {
	body := fmt.Sprintf(`{"type":%q,"subject":{"id":%q,"email":"%s@example.com","phone":%q}}`, typ, subjectID(i), subjectID(i), subjectPhoneAsTyped(i))
	if s.noPhone {
		body = fmt.Sprintf(`{"type":%q,"subject":{"id":%q,"email":"%s@example.com"}}`, typ, subjectID(i), subjectID(i))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL+"/v1/requests", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("submit: %d %s", resp.StatusCode, raw)
	}
	var acc struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(raw, &acc); err != nil {
		return "", err
	}
	return acc.ID, nil
}

// submitAll submits subjects 0..n-1 with a few concurrent clients and
// returns the ids by subject index.
func (s *system) submitAll(n int) []string {
	s.t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := s.submit(s.t.Context(), "access", i)
				if err != nil {
					errs <- err
					continue
				}
				ids[i] = id
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(s.t, err)
	}
	return ids
}

func (s *system) count(query string, args ...any) int {
	s.t.Helper()
	var n int
	require.NoError(s.t, s.db.Raw(query, args...).Scan(&n).Error)
	return n
}

// waitStates waits until every one of ids is in state.
func (s *system) waitStates(ids []string, state string, timeout time.Duration) {
	s.t.Helper()
	begin := time.Now()
	testkit.Eventually(s.t, timeout, func() bool {
		return s.count(`SELECT count(*) FROM requests WHERE id IN ? AND state = ?`, ids, state) == len(ids)
	}, "%d requests %s", len(ids), state)
	s.t.Logf("%d requests %s after %s", len(ids), state, time.Since(begin).Round(time.Millisecond))
}

var linkRE = regexp.MustCompile(`https?://[^\s]+/report\?token=[^\s]+`)

// emails returns the captured emails by request id (X-GDPR-Request-ID
// header is in the raw source; the Message-ID names the request too).
func (s *system) emails() map[string][]testkit.MailpitMessage {
	s.t.Helper()
	msgs, err := s.mail.Messages(s.t.Context())
	require.NoError(s.t, err)
	out := map[string][]testkit.MailpitMessage{}
	for _, m := range msgs {
		// report-ready.<request id>@domain
		id := strings.TrimPrefix(strings.SplitN(m.MessageID, "@", 2)[0], "report-ready.")
		out[id] = append(out[id], m)
	}
	return out
}

// download follows the link in the email and returns the report's files.
func (s *system) download(m testkit.MailpitMessage) map[string][]byte {
	s.t.Helper()
	raw, err := s.mail.Raw(s.t.Context(), m.ID)
	require.NoError(s.t, err)
	// Undo quoted-printable soft line breaks should the body be encoded.
	body := strings.ReplaceAll(string(raw), "=\r\n", "")
	link := linkRE.FindString(body)
	require.NotEmpty(s.t, link, "download link in the email")
	resp, err := http.Get(link)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	zipped, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusOK, resp.StatusCode, "%s", zipped)
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	require.NoError(s.t, err)
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(s.t, err)
		b, err := io.ReadAll(rc)
		require.NoError(s.t, err)
		_ = rc.Close()
		files[f.Name] = b
	}
	return files
}

// storedFiles lists every file under the report storage directory.
func (s *system) storedFiles() []string {
	s.t.Helper()
	var files []string
	require.NoError(s.t, filepath.WalkDir(s.cfg.Report.StorageDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	}))
	return files
}

func jitter(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo) }

// topologyOf names the queues the roles declare (app/modules.go), so a
// test removes them at its end.
func topologyOf(config.Config) bus.Topology {
	var t bus.Topology
	for _, q := range []string{"worker.requests", "worker.notify", "canceller", "scheduler", "audit"} {
		t.Queues = append(t.Queues, bus.Queue{Name: q})
	}
	return t
}

// waitEmails waits until Mailpit holds n emails, then checks no more come
// in while the notifier drains what is left in its queue.
func (s *system) waitEmails(n int) {
	s.t.Helper()
	testkit.Eventually(s.t, 60*time.Second, func() bool {
		c, err := s.mail.Count(s.t.Context())
		require.NoError(s.t, err)
		require.LessOrEqual(s.t, c, n, "more emails than requests")
		return c == n
	}, "%d emails", n)
	testkit.Eventually(s.t, 30*time.Second, func() bool {
		return s.count(`SELECT count(*) FROM notifications WHERE state = 'sending'`) == 0
	}, "no email in flight")
	c, err := s.mail.Count(s.t.Context())
	require.NoError(s.t, err)
	require.Equal(s.t, n, c)
	s.t.Logf("%d emails", n)
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// metric sums the series of a counter on a process's /metrics.
func metric(t testing.TB, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	total := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		var v float64
		_, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
		require.NoError(t, err)
		total += v
	}
	return total
}
