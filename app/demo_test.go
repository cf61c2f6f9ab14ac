package app

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestDemoNewcomerPath follows the README as a newcomer would: from a clean
// clone, `make run`'s script (deploy/demo.sh) starts the demo; the curl
// commands it prints are run as printed; the access report holds rows from
// every demo source, both emails reach the SMTP server the script started,
// the demo participants' rows are gone, the printed `gdpr reconcile` exits
// 0; Ctrl-C stops everything the script started; and the running
// PostgreSQL and Redis were neither restarted nor reconfigured.
func TestDemoNewcomerPath(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	before := serverState(t)
	prefix := "t.demo." + testkit.ID()
	demo, clone := demoCommand(t, prefix, freeAddr(t))
	// Its own process group, as in a terminal: Ctrl-C signals the group.
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	output := &testkit.Buffer{}
	demo.Stdout, demo.Stderr = output, output
	require.NoError(t, demo.Start())
	exited := make(chan struct{})
	go func() {
		_ = demo.Wait()
		close(exited)
	}()
	pidsFile := filepath.Join(clone, "var/demo/pids")
	t.Cleanup(func() {
		// Only after a failure is anything left to kill.
		_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
		for _, p := range startedPIDs(t, pidsFile) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		<-exited
		if t.Failed() {
			t.Logf("demo output:\n%s", output.String())
			for _, p := range startedPIDs(t, pidsFile) {
				b, _ := os.ReadFile(filepath.Join(clone, "var/demo/logs", p.name+".log"))
				t.Logf("%s log:\n%s", p.name, b)
			}
		}
	})
	testkit.Eventually(t, 3*time.Minute, func() bool {
		select {
		case <-exited:
			t.Fatalf("the demo exited before it was ready:\n%s", output.String())
		default:
		}
		return strings.Contains(output.String(), "Ctrl-C stops the demo")
	}, "the demo prints what to try")
	printed := output.String()

	cfg, err := config.Load(config.Default(), filepath.Join(clone, "var/demo/gdpr.yaml"), nil)
	require.NoError(t, err)
	cleanupDemoBroker(t, cfg)
	require.Equal(t, prefix, cfg.AMQP.Prefix)

	// The printed commands, as printed.
	var submits []string
	var status, metrics, reconcile, mailpit string
	for _, line := range strings.Split(printed, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "curl ") && strings.Contains(line, "/v1/requests -H"):
			submits = append(submits, line)
		case strings.HasPrefix(line, "curl ") && strings.Contains(line, "/v1/requests/ID"):
			status = line
		case strings.HasPrefix(line, "curl ") && strings.Contains(line, "/metrics"):
			metrics = line
		case strings.Contains(line, " reconcile --config "):
			reconcile = line
		case strings.HasSuffix(line, "(Mailpit)"):
			mailpit = strings.TrimSuffix(line, " (Mailpit)")
		}
	}
	require.Len(t, submits, 2, "an access and an erasure command:\n%s", printed)
	require.Contains(t, submits[0], `"type":"access"`)
	require.Contains(t, submits[1], `"type":"erasure"`)
	require.NotEmpty(t, status, "a status command")
	require.NotEmpty(t, metrics, "a metrics command")
	require.NotEmpty(t, reconcile, "a reconcile command")
	require.Contains(t, mailpit, "http://127.0.0.1:", "the Mailpit web address")
	pages := map[string]bool{}
	for _, line := range strings.Split(printed, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "http://") && (strings.HasSuffix(line, "/privacy") || strings.HasSuffix(line, "/admin/")) {
			pages[line] = true
		}
	}
	require.Len(t, pages, 2, "the privacy page and the console are printed:\n%s", printed)
	for page := range pages {
		resp, err := http.Get(page)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		// The console answers with its sign-in page (after a redirect).
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", page, body)
	}
	// The console's sign-in works with the token the demo prints.
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	officer := &http.Client{Jar: jar}
	var console string
	for page := range pages {
		if strings.HasSuffix(page, "/admin/") {
			console = page
		}
	}
	require.Contains(t, printed, "demo-officer-token")
	resp, err := officer.PostForm(console+"signin", url.Values{"token": {"demo-officer-token"}})
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Contains(t, string(body), "olga (operator)", "signed in as the demo's operator")

	shell := func(line string) (string, error) {
		cmd := exec.CommandContext(t.Context(), "bash", "-c", line)
		cmd.Dir = clone
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	submit := func(line string) string {
		answer, err := shell(line)
		require.NoError(t, err, "%s: %s", line, answer)
		var accepted struct{ ID, State string }
		require.NoError(t, json.Unmarshal([]byte(answer), &accepted), "%s answered %s", line, answer)
		require.NotEmpty(t, accepted.ID)
		return accepted.ID
	}
	waitCompleted := func(id string) {
		testkit.Eventually(t, 90*time.Second, func() bool {
			answer, err := shell(strings.Replace(status, "/ID", "/"+id, 1))
			var st struct{ State string }
			return err == nil && json.Unmarshal([]byte(answer), &st) == nil && st.State == "completed"
		}, "request %s completed", id)
	}
	mp := &testkit.Mailpit{APIURL: mailpit}
	subjects := func() []string {
		msgs, err := mp.Messages(t.Context())
		if err != nil {
			return nil
		}
		var got []string
		for _, m := range msgs {
			got = append(got, m.Subject+" to "+m.To[0].Address)
		}
		return got
	}

	// The access report first, downloaded with the email's link, as the
	// printed commands say: the erasure deletes gdpr's own copy of it.
	waitCompleted(submit(submits[0]))
	testkit.Eventually(t, 60*time.Second, func() bool { return len(subjects()) >= 1 }, "the report email")
	require.Equal(t, []string{"Your personal data report is ready to ada@example.com"}, subjects())
	manifest, link := downloadReport(t, mp)

	waitCompleted(submit(submits[1]))
	testkit.Eventually(t, 60*time.Second, func() bool { return len(subjects()) >= 2 }, "two emails")
	require.ElementsMatch(t, []string{
		"Your personal data report is ready to ada@example.com",
		"Your personal data was deleted to ada@example.com",
	}, subjects())

	// The erasure removed Ada from gdpr too: the old link answers 410 Gone.
	gone, err := http.Get(link)
	require.NoError(t, err)
	_ = gone.Body.Close()
	require.Equal(t, http.StatusGone, gone.StatusCode, "the report link after the erasure")

	// The report has rows from every source.
	rows := map[string]int{}
	for _, s := range manifest.Sources {
		rows[s.Name] = s.Rows
	}
	require.Len(t, cfg.Report.Sources, 4)
	for _, s := range cfg.Report.Sources {
		require.Positive(t, rows[s.Name], "report rows from source %s", s.Name)
	}

	// The participants erased Ada's rows, and only hers; the email system last.
	company, err := pgx.Connect(t.Context(), cfg.Report.Sources[0].DSN)
	require.NoError(t, err)
	t.Cleanup(func() { _ = company.Close(context.Background()) })
	count := func(query string) int {
		var n int
		require.NoError(t, company.QueryRow(t.Context(), query).Scan(&n))
		return n
	}
	testkit.Eventually(t, 60*time.Second, func() bool {
		return count(`SELECT count(*) FROM newsletter.subscribers WHERE email = 'ada@example.com'`) == 0
	}, "the newsletter (the email system) erased Ada")
	require.Zero(t, count(`SELECT count(*) FROM shop.customers WHERE id = 'c-1001'`))
	require.Zero(t, count(`SELECT count(*) FROM shop.orders WHERE customer_id = 'c-1001'`))
	require.Zero(t, count(`SELECT count(*) FROM helpdesk.tickets WHERE customer_id = 'c-1001'`))
	require.Equal(t, 4, count(`SELECT count(*) FROM shop.customers`), "the other customers stay")

	answer, err := shell(metrics)
	require.NoError(t, err, "%s: %s", metrics, answer)
	require.Contains(t, answer, "gdpr_reports_generated_total")
	answer, err = shell(reconcile)
	require.NoError(t, err, "%s exits 0: %s", reconcile, answer)
	require.Contains(t, answer, "IN SYNC")

	// Ctrl-C: the terminal signals the whole foreground process group.
	started := startedPIDs(t, pidsFile)
	require.Len(t, started, 5, "mailpit, helpdesk, two participants and gdpr")
	require.NoError(t, syscall.Kill(-demo.Process.Pid, syscall.SIGINT))
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the demo did not stop within 60s of Ctrl-C")
	}
	require.Contains(t, output.String(), "demo: stopped")
	for _, p := range started {
		require.False(t, running(p.pid), "%s (pid %d) still runs after the demo stopped", p.name, p.pid)
	}
	require.Equal(t, before, serverState(t), "PostgreSQL and Redis were neither restarted nor reconfigured")
}

// TestMakeServicesLeavesRunningServicesAlone runs `make services`' script
// while every service answers, with a PostgreSQL that claims the default 100
// connections (a fresh machine's): the tools that restart or reconfigure a
// service are replaced by ones that only record being called, and none may be.
func TestMakeServicesLeavesRunningServicesAlone(t *testing.T) {
	t.Parallel()
	shims := t.TempDir()
	calls := filepath.Join(shims, "calls")
	for _, tool := range []string{"pg_ctlcluster", "pg_ctl", "pg_createcluster", "systemctl", "service", "rabbitmqctl", "rabbitmq-server", "redis-server", "redis-cli", "docker", "apt-get"} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >>%q\nexit 1\n", tool, calls)
		require.NoError(t, os.WriteFile(filepath.Join(shims, tool), []byte(script), 0o755))
	}
	// psql answers every query with 100, as a fresh server's max_connections would.
	require.NoError(t, os.WriteFile(filepath.Join(shims, "psql"), []byte("#!/bin/sh\necho 100\n"), 0o755))

	before := serverState(t)
	cmd := exec.Command("deploy/services.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "PATH="+shims+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Empty(t, string(out), "nothing to say when every service answers")
	recorded, err := os.ReadFile(calls)
	if !errors.Is(err, os.ErrNotExist) {
		require.NoError(t, err)
	}
	require.Empty(t, string(recorded), "make services must not restart or reconfigure a running service")
	require.Equal(t, before, serverState(t))
}

// serverState is what a restart or a reconfiguration of the shared servers
// would change: PostgreSQL's start time and server-wide settings, Redis's run id.
func serverState(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	server := os.Getenv(testkit.EnvPostgresURL)
	if server == "" {
		server = "postgres://root@127.0.0.1:5432"
	}
	conn, err := pgx.Connect(ctx, server+"/postgres?sslmode=disable")
	require.NoError(t, err)
	defer conn.Close(ctx)
	var sb strings.Builder
	var started time.Time
	require.NoError(t, conn.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&started))
	fmt.Fprintf(&sb, "postgres started %s\n", started.UTC())
	rows, err := conn.Query(ctx, `SELECT name, setting FROM pg_settings WHERE context IN ('postmaster', 'sighup') ORDER BY name`)
	require.NoError(t, err)
	for rows.Next() {
		var name, setting string
		require.NoError(t, rows.Scan(&name, &setting))
		fmt.Fprintf(&sb, "%s=%s\n", name, setting)
	}
	require.NoError(t, rows.Err())
	addr := os.Getenv(testkit.EnvRedisAddr)
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "run_id:") {
			sb.WriteString("redis " + strings.TrimSpace(line) + "\n")
		}
	}
	return sb.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return n
}

type startedPID struct {
	name string
	pid  int
}

// startedPIDs reads the "name pid" lines deploy/demo.sh writes for what it starts.
func startedPIDs(t *testing.T, path string) []startedPID {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []startedPID
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, pid, ok := strings.Cut(sc.Text(), " ")
		if n, err := strconv.Atoi(pid); ok && err == nil {
			out = append(out, startedPID{name: name, pid: n})
		}
	}
	return out
}

// running reports whether pid is a live process (an exited one that no one
// reaped yet, a zombie, counts as stopped).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// cleanupDemoBroker removes the demo's queues, exchanges and Redis keys when t ends.
func cleanupDemoBroker(t *testing.T, cfg config.Config) {
	t.Cleanup(func() {
		testkit.DeleteTopology(t, cfg.AMQP, topology(cfg))
		rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr})
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, cfg.Redis.Prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
}

var (
	buttonPattern   = regexp.MustCompile(`id="download-button" href="([^"]+/report\?token=[^"&]+)"`)
	pageLinkPattern = regexp.MustCompile(`http://\S+/privacy/download\?\S+`)
)

// downloadReport follows the report email's link and returns the ZIP's
// manifest and the link.
func downloadReport(t *testing.T, mp *testkit.Mailpit) (struct {
	Sources []struct {
		Name string
		Rows int
	}
}, string) {
	t.Helper()
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	var text string
	for _, m := range msgs {
		if strings.Contains(m.Subject, "report is ready") {
			resp, err := http.Get(mp.APIURL + "/api/v1/message/" + m.ID)
			require.NoError(t, err)
			var body struct{ Text string }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			_ = resp.Body.Close()
			text = body.Text
		}
	}
	// With the privacy page on, the email links to its download page,
	// whose button is the report's link.
	page := pageLinkPattern.FindString(text)
	require.NotEmpty(t, page, "a download page link in:\n%s", text)
	resp, err := http.Get(page)
	require.NoError(t, err)
	html, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", html)
	button := buttonPattern.FindStringSubmatch(string(html))
	require.Len(t, button, 2, "a download button in:\n%s", html)
	base, err := url.Parse(page)
	require.NoError(t, err)
	href, err := url.Parse(button[1])
	require.NoError(t, err)
	link := base.ResolveReference(href).String()
	resp, err = http.Get(link)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	require.NoError(t, err)
	f, err := zr.Open("manifest.json")
	require.NoError(t, err)
	defer f.Close()
	var manifest struct {
		Sources []struct {
			Name string
			Rows int
		}
	}
	require.NoError(t, json.NewDecoder(f).Decode(&manifest))
	return manifest, link
}

// TestDemoNamesTheVariableThatMovesATakenPort: the probe held 8080 and saw
// `make run` stop with "address already in use" and no word of how to move
// the demo. It now names the variables.
func TestDemoNamesTheVariableThatMovesATakenPort(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs the demo")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	demo, clone := demoCommand(t, "t.demoport."+testkit.ID(), taken.Addr().String())
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if demo.Process != nil {
			_ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
		}
		cfg, err := config.Load(config.Default(), filepath.Join(clone, "var/demo/gdpr.yaml"), nil)
		if err == nil {
			cleanupDemoBroker(t, cfg)
		}
	})
	b, err := demo.CombinedOutput()
	require.Error(t, err, "the demo cannot start on a taken port:\n%s", b)
	require.Contains(t, string(b), "address already in use")
	require.Contains(t, string(b), "GDPR_DEMO_API_ADDR=", "the way to move the demo is named")
}

// demoCommand is `deploy/demo.sh` in a fresh clone of the committed tree,
// beside other tests: its own databases, broker and Redis prefix, the API
// on apiAddr and every other listener on a free port.
func demoCommand(t *testing.T, prefix, apiAddr string) (*exec.Cmd, string) {
	t.Helper()
	bin := testkit.Build(t)
	clone := filepath.Join(t.TempDir(), "gdpr")
	out, err := exec.Command("git", "clone", "-q", "..", clone).CombinedOutput()
	require.NoError(t, err, "git clone: %s", out)
	demo := exec.Command("deploy/demo.sh")
	demo.Dir = clone
	demo.Env = append(os.Environ(),
		"GDPR_DEMO_BINARY="+bin,
		"GDPR_DEMO_DSN="+testkit.PostgresDSN(t),
		"GDPR_DEMO_COMPANY_DSN="+testkit.PostgresDSN(t),
		"GDPR_DEMO_PREFIX="+prefix,
		"GDPR_DEMO_API_ADDR="+apiAddr,
		"GDPR_DEMO_ADMIN_ADDR="+freeAddr(t),
		"GDPR_DEMO_HELPDESK_ADDR="+freeAddr(t),
		"GDPR_DEMO_SMTP_PORT="+strconv.Itoa(freePort(t)),
		"GDPR_DEMO_MAILPIT_ADDR="+freeAddr(t),
	)
	return demo, clone
}
