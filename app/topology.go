package app

import (
	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
)

// topology is every queue of the system. Every role declares all of it on
// connect, so a message for a role that is down waits in its queue.
func topology(cfg config.Config) bus.Topology {
	t := bus.Topology{Queues: []bus.Queue{
		{Name: "worker.requests", Bindings: []string{"request.submitted", "erasure.finished"}},
		{Name: "worker.notify", Bindings: []string{"report.ready", "erasure.completed", "request.denied", "request.extended"}},
		{Name: "canceller", Bindings: []string{"erasure.requested", "erasure.confirmed"}},
		{Name: "scheduler", Bindings: []string{"scheduler.schedule", "scheduler.cancel"}},
		{Name: "audit", Bindings: []string{"#"}},
	}}
	for _, p := range cfg.Canceller.Participants {
		if p.Kind == "amqp" || p.Kind == "email" {
			t.Queues = append(t.Queues, bus.Queue{
				Name:     "participant." + p.Name,
				Bindings: []string{"erasure.command." + p.Name},
				Shared:   true,
			})
		}
	}
	return t
}
