package app

import (
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config/configtest"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/gauge"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/retention"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

func TestModuleMapResolvesDependenciesFirstAndRefusesCyclesAndUnknownModules(t *testing.T) {
	t.Parallel()
	m := moduleMap{
		"db":    {},
		"bus":   {},
		"store": {deps: []string{"db"}},
		"api":   {deps: []string{"store", "bus"}},
		"loopA": {deps: []string{"loopB"}},
		"loopB": {deps: []string{"loopC"}},
		"loopC": {deps: []string{"loopA"}},
		"typo":  {deps: []string{"dbb"}},
	}
	order, err := m.resolve("api", "store")
	require.NoError(t, err)
	require.Equal(t, []string{"db", "store", "bus", "api"}, order, "dependencies first, each once, otherwise in the order named")

	_, err = m.resolve("loopA")
	require.ErrorIs(t, err, errModuleCycle)
	require.Contains(t, err.Error(), "loopA -> loopB -> loopC -> loopA")

	_, err = m.resolve("typo")
	require.ErrorIs(t, err, errUnknownModule)
	require.Contains(t, err.Error(), `"dbb" (needed by typo)`)

	_, err = m.resolve("nope")
	require.ErrorIs(t, err, errUnknownModule)
}

func TestEveryRoleResolvesAndDialsOnlyWhatItsModulesNeed(t *testing.T) {
	t.Parallel()
	services := []string{modPostgres, modAMQP, modRedis}
	want := map[string][]string{
		"serve":     {modPostgres, modAMQP, modRedis},
		"worker":    {modPostgres, modAMQP, modRedis},
		"scheduler": {modPostgres, modAMQP},
		"canceller": {modPostgres, modAMQP},
		"all":       {modPostgres, modAMQP, modRedis},
	}
	for role, dialled := range want {
		order, err := modules().resolve(roleModules(role)...)
		require.NoError(t, err, role)
		var got []string
		for _, name := range order {
			if slices.Contains(services, name) {
				got = append(got, name)
			}
		}
		require.ElementsMatch(t, dialled, got, "services of %s", role)
	}
	// The roles whose modules write to the outbox relay it themselves; the
	// scheduler relays only delayed messages.
	for role, relays := range map[string]bool{"serve": true, "worker": true, "canceller": true, "all": true, "scheduler": false} {
		order, err := modules().resolve(roleModules(role)...)
		require.NoError(t, err)
		require.Equal(t, relays, slices.Contains(order, modOutbox), "outbox relay in %s", role)
	}
}

// TestRolesDialOnlyTheServicesTheirModulesNeed starts roles with Redis at an
// address where nothing listens: the scheduler and the canceller, which
// need no Redis, get ready and stay ready; the worker, which does, cannot
// start (so the address really is unreachable).
func TestRolesDialOnlyTheServicesTheirModulesNeed(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	noRedis := "GDPR_REDIS_ADDR=" + freeAddr(t)
	for _, role := range []string{"scheduler", "canceller"} {
		t.Run(role+" is ready without redis", func(t *testing.T) {
			t.Parallel()
			env, admin := roleEnv(t, configtest.Config(t))
			p := start(t, bin, append(env, noRedis), role)
			p.waitReady(t, admin[role])
			code, body := readyz(admin[role])
			require.Equal(t, http.StatusOK, code)
			require.NotContains(t, body, "redis", "readiness does not look at a service the role does not use")
			p.signal(t, syscall.SIGTERM)
			require.Equal(t, 0, p.exitCode(t, exitBound))
			require.NotContains(t, p.out.String(), "redis")
		})
	}
	t.Run("worker needs redis", func(t *testing.T) {
		t.Parallel()
		env, _ := roleEnv(t, configtest.Config(t))
		p := start(t, bin, append(env, noRedis), "worker")
		require.NotEqual(t, 0, p.exitCode(t, 60*time.Second))
		require.Contains(t, p.out.String(), "module redis: connecting to redis")
	})
}

// TestDeclaredTopologyIsWhatTheBrokerHas starts one role (the scheduler,
// which consumes none of the other modules' queues) and then probes
// RabbitMQ: every queue of the module map exists, and a message with each
// declared routing key reaches exactly the queues that declare a binding
// for it (so the canceller's erasure.timer binding is there even though the
// canceller never ran), and a key nobody declared reaches only the audit log.
func TestDeclaredTopologyIsWhatTheBrokerHas(t *testing.T) {
	t.Parallel()
	bin := testkit.Build(t)
	cfg, env, admin := participantConfig(t)
	p := start(t, bin, env, "scheduler")
	p.waitReady(t, admin["scheduler"])
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.exitCode(t, exitBound))

	declared := topology(cfg)
	names := map[string]bool{}
	var keys []string
	for _, q := range declared.Queues {
		names[q.Name] = true
		for _, b := range q.Bindings {
			if b != "#" && !slices.Contains(keys, b) {
				keys = append(keys, b)
			}
		}
	}
	for _, want := range []string{requests.Queue, notify.Queue, audit.Queue, scheduler.Queue, erasure.QueueCanceller, erasure.QueueName("billing")} {
		require.True(t, names[want], "the module map declares %s", want)
	}
	require.Contains(t, keys, erasure.TypeTimer)
	keys = append(keys, "gdpr.topology.undeclared")

	ch := rawChannel(t, cfg.AMQP.URL)
	depth := func(name string) int {
		q, err := ch.QueueDeclarePassive(cfg.AMQP.Prefix+"."+name, true, false, false, false, nil)
		require.NoError(t, err, "queue %s exists on the broker", name)
		return q.Messages
	}
	before := map[string]int{}
	for _, q := range declared.Queues {
		before[q.Name] = depth(q.Name)
	}
	require.NoError(t, ch.Confirm(false))
	for _, key := range keys {
		c, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), cfg.AMQP.Prefix, key, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("{}")})
		require.NoError(t, err)
		ok, err := c.WaitContext(t.Context())
		require.NoError(t, err)
		require.True(t, ok, "publish of %s confirmed", key)
	}
	for _, q := range declared.Queues {
		want := 0
		for _, key := range keys {
			if slices.ContainsFunc(q.Bindings, func(b string) bool { return b == "#" || b == key }) {
				want++
			}
		}
		testkit.Eventually(t, 10*time.Second, func() bool { return depth(q.Name)-before[q.Name] == want },
			"queue %s holds the %d probes its bindings %v route to it, got %d", q.Name, want, q.Bindings, depth(q.Name)-before[q.Name])
	}
}

// TestEveryLongRunningComponentReportsFailures: each component a module
// builds has a failure channel the role watches (and Stop that waits, from
// modules/lifecycle), so a failure after start drains the role and exits 1
// instead of only being logged. The report sources component only closes
// connection pools and has nothing to fail.
func TestEveryLongRunningComponentReportsFailures(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]Component{
		"admin server":         &health.Server{},
		"public api":           &api.Server{},
		"requests manager":     &requests.Manager{},
		"consumer":             &bus.Consumer{},
		"gauges":               &gauge.Exporter{},
		"canceller":            &erasure.Component{},
		"scheduler dispatcher": dispatcherComponent{},
		"outbox relay":         &outbox.Relay{},
		"retention sweeper":    &retention.Sweeper{},
	} {
		_, ok := c.(failer)
		require.True(t, ok, "%s has no Failed channel for the role to watch", name)
	}
}
