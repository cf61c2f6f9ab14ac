package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// The modules of the module map. A role is a list of them; the services
// (postgres, amqp, redis) are modules too, so a role connects only to what
// one of its modules needs.
const (
	modPostgres  = "postgres"
	modAMQP      = "amqp"
	modRedis     = "redis"
	modOutbox    = "outbox"
	modIntake    = "intake"
	modAdmin     = "admin"
	modAPI       = "api"
	modPrivacy   = "privacy"
	modRequests  = "requests"
	modNotify    = "notify"
	modAudit     = "audit"
	modGauge     = "gauge"
	modScheduler = "scheduler"
	modCanceller = "canceller"
	modRetention = "retention"
)

// module is one named part of a process: the modules it needs built before
// it, its share of the broker topology, and its constructor.
type module struct {
	deps []string
	// queues are the queues (and their bindings) the module consumes.
	// Every role declares the queues of every module, whether it runs the
	// module or not, so a message for a role that is down waits in its queue.
	queues func(cfg config.Config) []bus.Queue
	// build opens what the module provides to others (a connection, a
	// service) and returns its components, started in module order and
	// stopped in reverse. Everything its deps provide is on in by then.
	build func(ctx context.Context, in *infra) ([]Component, error)
}

// moduleMap is every module by name.
type moduleMap map[string]module

// Errors of a module map that cannot be resolved.
var (
	errUnknownModule = errors.New("unknown module")
	errModuleCycle   = errors.New("module dependency cycle")
)

// modules is the module map of gdpr.
func modules() moduleMap {
	db := []string{modPostgres}
	withBus := []string{modPostgres, modAMQP}
	// The modules that write to the outbox need its relay in their role.
	withOutbox := []string{modPostgres, modAMQP, modOutbox}
	return moduleMap{
		modPostgres: {build: func(ctx context.Context, in *infra) ([]Component, error) { return nil, in.openPostgres(ctx) }},
		modAMQP:     {build: func(ctx context.Context, in *infra) ([]Component, error) { return nil, in.dialAMQP(ctx) }},
		modRedis:    {build: func(ctx context.Context, in *infra) ([]Component, error) { return nil, in.dialRedis(ctx) }},
		modOutbox:   {deps: withBus, build: buildOutbox},
		modIntake:   {deps: []string{modPostgres, modAMQP, modRedis}, build: buildIntake},
		modAdmin:    {deps: db, build: buildAdmin},
		modPrivacy:  {deps: []string{modIntake}, build: buildPrivacy},
		// The officer (in the api module) writes operator actions, denials
		// and extensions to the outbox: serve runs its relay.
		modAPI: {deps: []string{modIntake, modAdmin, modPrivacy, modOutbox}, build: buildAPI},
		modRequests: {
			deps:   []string{modPostgres, modAMQP, modRedis, modOutbox},
			queues: queue(requests.Queue, requests.Bindings()),
			build:  buildRequests,
		},
		modNotify: {deps: withOutbox, queues: queue(notify.Queue, notify.Bindings()), build: buildNotify},
		modAudit:  {deps: withBus, queues: queue(audit.Queue, audit.Bindings()), build: buildAudit},
		modGauge:  {deps: db, build: buildGauge},
		modScheduler: {
			deps:   withBus,
			queues: queue(scheduler.Queue, scheduler.Bindings()),
			build:  buildScheduler,
		},
		modCanceller: {deps: withOutbox, queues: cancellerQueues, build: buildCanceller},
		modRetention: {deps: withBus, build: buildRetention},
	}
}

// roleModules is the module list of each role, in start order. `all`
// starts the scheduler first so that it stops last.
func roleModules(role string) []string {
	worker := []string{modRequests, modNotify, modRetention, modAudit, modGauge}
	switch role {
	case "serve":
		return []string{modAPI}
	case "worker":
		return worker
	case "scheduler":
		return []string{modScheduler}
	case "canceller":
		return []string{modCanceller}
	case "all":
		return slices.Concat([]string{modScheduler}, worker, []string{modCanceller, modAPI})
	}
	return nil
}

func queue(name string, bindings []string) func(config.Config) []bus.Queue {
	return func(config.Config) []bus.Queue { return []bus.Queue{{Name: name, Bindings: bindings}} }
}

// cancellerQueues are the canceller's queue and one queue per participant
// that takes its commands over AMQP, declared shared with the participant.
func cancellerQueues(cfg config.Config) []bus.Queue {
	qs := []bus.Queue{{Name: erasure.QueueCanceller, Bindings: erasure.Bindings()}}
	for _, p := range cfg.Canceller.Participants {
		if name, binding, ok := erasure.ParticipantQueue(p); ok {
			qs = append(qs, bus.Queue{Name: name, Bindings: []string{binding}, Shared: true})
		}
	}
	return qs
}

// resolve returns targets and every module they depend on, each after its
// dependencies and otherwise in the order targets name them. An unknown
// module or a dependency cycle is an error.
func (m moduleMap) resolve(targets ...string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		path = append(path, name)
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("%w: %s", errModuleCycle, strings.Join(path, " -> "))
		}
		mod, ok := m[name]
		if !ok {
			if len(path) > 1 {
				return fmt.Errorf("%w %q (needed by %s)", errUnknownModule, name, path[len(path)-2])
			}
			return fmt.Errorf("%w %q", errUnknownModule, name)
		}
		state[name] = visiting
		for _, dep := range mod.deps {
			if err := visit(dep, path); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, t := range targets {
		if err := visit(t, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// topology is the union of every module's queues: each role declares all
// of it on connect.
func (m moduleMap) topology(cfg config.Config) bus.Topology {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	var t bus.Topology
	for _, name := range names {
		if q := m[name].queues; q != nil {
			t.Queues = append(t.Queues, q(cfg)...)
		}
	}
	return t
}

// topology is gdpr's broker topology for cfg.
func topology(cfg config.Config) bus.Topology { return modules().topology(cfg) }
