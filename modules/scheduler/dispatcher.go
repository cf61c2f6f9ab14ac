package scheduler

import (
	"log/slog"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/relay"
)

// table is the delayed-message table the dispatcher publishes from, with its
// wake-up trigger (migrations/020_scheduler.sql, 021_scheduler_wakeup.sql).
func table() relay.Table {
	return relay.Table{
		Name:              "scheduled_messages",
		Sent:              "scheduled_messages_sent",
		Channel:           "gdpr_scheduler",
		SkippedNotifyLock: "1734635634, 20",
	}
}

// DispatcherOptions tunes a Dispatcher; zero values take DefaultConfig()'s
// (see withDefaults).
type DispatcherOptions = relay.Options

// DispatchResult counts what one DispatchOnce did.
type DispatchResult = relay.Result

// Publisher publishes one message to a named exchange and returns nil only
// once the broker confirmed it.
type Publisher = relay.Publisher

// ExchangeChecker tells whether an exchange exists on the broker.
type ExchangeChecker = relay.ExchangeChecker

// Dispatcher publishes delayed messages once they are due: a relay over
// scheduled_messages (modules/relay says how, and why nothing is lost,
// published early or twice with different ids).
type Dispatcher struct{ *relay.Relay }

// NewDispatcher returns a dispatcher over the database at dsn; nothing runs
// until Start. It opens its own small pool plus one connection for LISTEN.
func NewDispatcher(dsn string, pub Publisher, exchanges ExchangeChecker, opts DispatcherOptions, metrics *Metrics, logger *slog.Logger) *Dispatcher {
	opts = withDefaults(opts)
	if opts.Refused == nil {
		opts.Refused = bus.IsRefused
	}
	var m *relay.Metrics
	if metrics != nil {
		m = &relay.Metrics{
			Published: metrics.dispatched, Refused: metrics.refused, Lateness: metrics.lateness,
			Pending: metrics.pending, Due: metrics.due, OldestOverdue: metrics.oldestOverdue,
		}
	}
	return &Dispatcher{relay.New("scheduler dispatcher", table(), dsn, pub, exchanges, opts, m, logger)}
}
