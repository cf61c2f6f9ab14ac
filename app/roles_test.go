package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// drainTimeout is the drain bound the role processes run with in these tests.
const drainTimeout = 5 * time.Second

// exitBound is how long a process may take to exit after SIGTERM: the drain
// bound, the grace for stuck components, closing connections, and slack for
// two busy cores.
const exitBound = drainTimeout + stopGrace + infraCloseTimeout + 5*time.Second

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// roleEnv is a child environment for cfg with every listen address on a
// free port, so roles of parallel tests never collide; it returns the admin
// address of each role.
func roleEnv(t *testing.T, cfg config.Config) ([]string, map[string]string) {
	t.Helper()
	env := append(configtest.Env(cfg), "GDPR_SHUTDOWN_DRAIN_TIMEOUT="+drainTimeout.String(), "GDPR_LOG_LEVEL=debug",
		// These roles run without participants on purpose.
		"GDPR_CANCELLER_NO_PARTICIPANTS=true")
	admin := map[string]string{}
	for _, role := range []string{"serve", "worker", "scheduler", "canceller"} {
		admin[role] = freeAddr(t)
		env = append(env, "GDPR_"+strings.ToUpper(role)+"_ADMIN_ADDR="+admin[role])
	}
	admin["all"] = admin["serve"]
	env = append(env, "GDPR_SERVE_ADDR="+freeAddr(t))
	t.Cleanup(func() { testkit.DeleteTopology(t, cfg.AMQP, topology(cfg)) })
	return env, admin
}

type proc struct {
	cmd    *exec.Cmd
	out    *testkit.Buffer
	done   chan struct{}
	waited error
}

// start runs the binary with args and env; the process is killed if the
// test ends with it still running.
func start(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &testkit.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	require.NoError(t, p.cmd.Start())
	go func() {
		p.waited = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.out.String())
		}
	})
	return p
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// exitCode waits up to bound for the process to exit and returns its code.
func (p *proc) exitCode(t *testing.T, bound time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(bound):
		t.Fatalf("process did not exit within %s", bound)
	}
	var ee *exec.ExitError
	if errors.As(p.waited, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.waited)
	return 0
}

// status GETs url and returns the status code, 0 when nothing answers.
func status(url string) int {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until the process's /healthz and /readyz answer 200.
func (p *proc) waitReady(t *testing.T, admin string) {
	t.Helper()
	testkit.Eventually(t, 90*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("process exited before it was ready: %v\n%s", p.waited, p.out.String())
		default:
		}
		return status("http://"+admin+"/readyz") == http.StatusOK
	}, "%s/readyz answers 200", admin)
	require.Equal(t, http.StatusOK, status("http://"+admin+"/healthz"))
}

func TestRoleProcesses(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)

	// devKeyWarnings is how often each role warns about the development
	// report key it runs with (testkit's configuration keeps the default):
	// once per process that touches reports, even when it builds several roles.
	devKeyWarnings := map[string]int{"serve": 1, "worker": 1, "scheduler": 0, "canceller": 0, "all": 1}
	for _, role := range []string{"serve", "worker", "scheduler", "canceller", "all"} {
		t.Run(role+" starts, is ready and exits 0 on SIGTERM", func(t *testing.T) {
			t.Parallel()
			env, admin := roleEnv(t, configtest.Config(t))
			p := start(t, bin, env, role)
			p.waitReady(t, admin[role])
			// Wiring, where the warning is written, ends before the admin server answers.
			require.Equal(t, devKeyWarnings[role], strings.Count(p.out.String(), `"msg":"reports are encrypted with the public development key; set report.encryption_key"`),
				"development key warnings of %s", role)

			p.signal(t, syscall.SIGTERM)
			require.Equal(t, 0, p.exitCode(t, exitBound), "exit code after SIGTERM")
			require.Contains(t, p.out.String(), `"msg":"shutting down"`)
			if role == "worker" || role == "all" {
				require.Contains(t, p.out.String(), `"level":"WARN","msg":"no report sources configured`, "a worker without sources says so at start")
			}
		})
	}

	// An erasure with no participant would complete at once and email the
	// person that their data was deleted: only an explicit setting allows it.
	for _, role := range []string{"canceller", "all"} {
		t.Run(role+" without participants refuses to start, naming the setting", func(t *testing.T) {
			t.Parallel()
			env, _ := roleEnv(t, configtest.Config(t))
			p := start(t, bin, append(env, "GDPR_CANCELLER_NO_PARTICIPANTS=false"), role)
			require.Equal(t, 2, p.exitCode(t, 30*time.Second))
			require.Contains(t, p.out.String(), "config: canceller.participants is empty")
			require.Contains(t, p.out.String(), "canceller.no_participants: true")
			require.NotContains(t, p.out.String(), `"msg":"starting"`, "refused before connecting")
		})
	}

	t.Run("two roles at once against the same services", func(t *testing.T) {
		t.Parallel()
		env, admin := roleEnv(t, configtest.Config(t))
		serve := start(t, bin, env, "serve")
		worker := start(t, bin, env, "worker", "--concurrency=2")
		serve.waitReady(t, admin["serve"])
		worker.waitReady(t, admin["worker"])

		serve.signal(t, syscall.SIGTERM)
		worker.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, serve.exitCode(t, exitBound))
		require.Equal(t, 0, worker.exitCode(t, exitBound))
	})

	t.Run("a second SIGTERM cuts a stuck drain short", func(t *testing.T) {
		t.Parallel()
		cfg := configtest.Config(t)
		env, admin := roleEnv(t, cfg)
		// A long drain bound, so only the second signal can end the process early.
		env = append(env, "GDPR_SHUTDOWN_DRAIN_TIMEOUT=2m")
		p := start(t, bin, env, "scheduler")
		p.waitReady(t, admin["scheduler"])

		// A request whose headers never finish keeps the admin server's
		// graceful shutdown waiting (until its 5s header timeout).
		conn, err := net.Dial("tcp", admin["scheduler"])
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
		require.NoError(t, err)

		p.signal(t, syscall.SIGTERM)
		testkit.Eventually(t, 10*time.Second, func() bool {
			return strings.Contains(p.out.String(), `"msg":"shutting down"`)
		}, "the process starts draining")
		p.signal(t, syscall.SIGTERM)
		require.Equal(t, 1, p.exitCode(t, 4*time.Second), "a forced exit is not a clean one")
		require.Contains(t, p.out.String(), "second signal")
	})

	t.Run("worker --concurrency=0 is a usage error", func(t *testing.T) {
		t.Parallel()
		env, _ := roleEnv(t, configtest.Config(t))
		p := start(t, bin, env, "worker", "--concurrency=0")
		require.Equal(t, 2, p.exitCode(t, 30*time.Second))
		require.Contains(t, p.out.String(), "config: worker.concurrency must be >= 1, got 0")
	})

	t.Run("an unknown flag is a usage error", func(t *testing.T) {
		t.Parallel()
		out, err := exec.Command(bin, "worker", "--no-such-flag").CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		require.Equal(t, 2, ee.ExitCode())
		require.Contains(t, string(out), "unknown flag: --no-such-flag")
	})

	t.Run("version", func(t *testing.T) {
		t.Parallel()
		out, err := exec.Command(bin, "version").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Regexp(t, `^gdpr \S+\n$`, string(out))
	})

	t.Run("config print shows the effective config with secrets masked", func(t *testing.T) {
		t.Parallel()
		cmd := exec.Command(bin, "config", "print", "--log-level=warn")
		cmd.Env = append(os.Environ(),
			"GDPR_WORKER_CONCURRENCY=3",
			"GDPR_AMQP_URL=amqp://guest:s3cr3t-pw@127.0.0.1:5672/",
			"GDPR_SERVE_DOWNLOAD_KEY=another-s3cr3t-download-key")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.NotContains(t, string(out), "s3cr3t")
		var printed struct {
			Log    struct{ Level string }
			Worker struct{ Concurrency int }
			AMQP   struct{ URL string } `yaml:"amqp"`
		}
		require.NoError(t, yaml.Unmarshal(out, &printed), "%s", out)
		require.Equal(t, 3, printed.Worker.Concurrency, "env applies")
		require.Equal(t, "warn", printed.Log.Level, "flag applies")
		require.Contains(t, printed.AMQP.URL, "127.0.0.1:5672", "URLs stay readable")
	})

	t.Run("migrate creates the database, then up, status, down and up again", func(t *testing.T) {
		t.Parallel()
		dsn := testkit.PostgresDSN(t)
		dropDatabase(t, dsn)
		env := append(os.Environ(), "GDPR_POSTGRES_DSN="+dsn)
		migrate := func(args ...string) string {
			t.Helper()
			cmd := exec.Command(bin, append([]string{"migrate"}, args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "migrate %v: %s", args, out)
			return string(out)
		}

		migrate("up")
		st := migrate("status")
		require.Contains(t, st, "VERSION")
		require.NotContains(t, st, "pending", "every migration applied:\n%s", st)
		applied := strings.Count(st, "\n") - 1
		require.Positive(t, applied)

		migrate("up") // idempotent
		require.Equal(t, st, migrate("status"))

		migrate("down")
		st = migrate("status")
		require.Equal(t, 1, strings.Count(st, "pending"), "down rolls back exactly one:\n%s", st)

		migrate("up")
		require.NotContains(t, migrate("status"), "pending")
	})
}

// dropDatabase removes the database of dsn so that a command has to create it.
func dropDatabase(t *testing.T, dsn string) {
	t.Helper()
	i := strings.LastIndex(dsn, "/")
	name, _, _ := strings.Cut(dsn[i+1:], "?")
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn[:i]+"/postgres?sslmode=disable")
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", pgx.Identifier{name}.Sanitize()))
	require.NoError(t, err)
}

// stuck is a component whose Stop ignores its context.
type stuck struct{ release chan struct{} }

func (stuck) Name() string                 { return "stuck" }
func (stuck) Start(context.Context) error  { return nil }
func (s stuck) Stop(context.Context) error { <-s.release; return nil }

// recorder remembers whether it was stopped.
type recorder struct {
	mu      sync.Mutex
	stopped bool
}

func (*recorder) Name() string                { return "recorder" }
func (*recorder) Start(context.Context) error { return nil }
func (r *recorder) Stop(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	return nil
}

func TestRunBoundsTheDrain(t *testing.T) {
	t.Parallel()
	s := stuck{release: make(chan struct{})}
	defer close(s.release)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // already signalled: run starts, then shuts down at once

	const drain = 200 * time.Millisecond
	begin := time.Now()
	err := run(ctx, testkit.Logger(t), drain, []Component{rec, s})
	took := time.Since(begin)

	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "stopping stuck")
	require.Less(t, took, drain+stopGrace+2*time.Second, "run returned within the drain bound")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.True(t, rec.stopped, "components after a stuck one are still asked to stop")
}

func TestRunForcedBySecondSignal(t *testing.T) {
	t.Parallel()
	s := stuck{release: make(chan struct{})}
	defer close(s.release)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	force := make(chan struct{})
	close(force)

	begin := time.Now()
	err := runForce(ctx, force, testkit.Logger(t), time.Minute, []Component{s})
	require.ErrorIs(t, err, errForced)
	require.Less(t, time.Since(begin), 5*time.Second)
}

func TestRunStopsStartedComponentsWhenOneFailsToStart(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	boom := errors.New("boom")
	failing := funcComponent{name: "failing", start: func(context.Context) error { return boom }}
	err := run(t.Context(), testkit.Logger(t), time.Second, []Component{rec, failing})
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "starting failing")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.True(t, rec.stopped)
}

// A component failing after start (here the admin server, whose listener is
// closed under it) ends the role: the others are stopped and run returns
// the failure, which makes the process exit 1.
func TestRunStopsEverythingWhenAComponentFailsAfterStart(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	admin := health.NewServer("", nil, prometheus.NewRegistry(), testkit.Logger(t))
	serving := funcComponent{name: "admin server", start: func(ctx context.Context) error { return admin.Serve(ctx, ln) }, stop: admin.Stop}
	rec := &recorder{}
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), testkit.Logger(t), 5*time.Second, []Component{rec, failingAdmin{serving, admin}})
	}()
	testkit.Eventually(t, 10*time.Second, func() bool { return status("http://"+ln.Addr().String()+"/healthz") == http.StatusOK }, "admin server answers")

	require.NoError(t, ln.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, net.ErrClosed)
		require.ErrorContains(t, err, "admin server failed")
	case <-time.After(20 * time.Second):
		t.Fatal("run went on after a component failed")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.True(t, rec.stopped, "the other components were stopped")
	require.Zero(t, admin.Running())
}

// failingAdmin is the admin server served on a test's listener.
type failingAdmin struct {
	funcComponent
	s *health.Server
}

func (f failingAdmin) Failed() <-chan error { return f.s.Failed() }

func TestServeExitsNonZeroWhenItsPortIsTaken(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	env, _ := roleEnv(t, configtest.Config(t))
	p := start(t, bin, append(env, "GDPR_SERVE_ADDR="+taken.Addr().String()), "serve")
	require.Equal(t, 1, p.exitCode(t, 90*time.Second))
	require.Contains(t, p.out.String(), "api server listening on "+taken.Addr().String())
	require.Contains(t, p.out.String(), "address already in use")
}
