package app

import (
	"context"
	"time"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// buildRequests is the requests module: the report sources, the requests
// manager's worker pool, and the consumer of its queue.
func buildRequests(_ context.Context, in *infra) ([]Component, error) {
	cfg := in.cfg
	if len(cfg.Report.Sources) == 0 {
		in.logger.Warn("no report sources configured: access reports will hold only a manifest", "setting", "report.sources")
	}
	builder, err := in.newReportBuilder(cfg.Report, in.registry)
	if err != nil {
		return nil, err
	}
	mgr := requests.New(in.db, in.outbox, in.locker, reportBuilder{builder}, requests.Config{
		Concurrency:   cfg.Worker.Concurrency,
		PollInterval:  cfg.Worker.PollInterval,
		MaxAttempts:   cfg.Worker.MaxAttempts,
		BackoffBase:   cfg.Worker.BackoffBase,
		BackoffMax:    cfg.Worker.BackoffMax,
		LeaseTTL:      cfg.Lock.TTL,
		ErasureWait:   cfg.Worker.ErasureWait,
		SweepInterval: cfg.Worker.SweepInterval,
		SweepAge:      cfg.Worker.SweepAge,
	}, in.logger, in.registry)
	receive := bus.NewConsumer(in.bus, bus.ConsumerOptions{Queue: requests.Queue, Concurrency: cfg.Worker.ReceiveConcurrency}, mgr.Handle, in.logger)
	// Stopped in reverse: the consumer stops taking messages first, then the
	// pool gives back what it holds, and last the sources' connection pools close.
	sources := funcComponent{name: "report sources", stop: func(context.Context) error { return builder.Close() }}
	return []Component{sources, mgr, receive}, nil
}

// buildNotify is the notify module: the notifier and the consumer of its queue.
func buildNotify(_ context.Context, in *infra) ([]Component, error) {
	cfg := in.cfg
	key := []byte(cfg.Serve.DownloadKey)
	link := func(requestID string, now time.Time) (string, time.Time, error) {
		if cfg.Privacy.Enabled {
			// The email links to the page that says what the report holds.
			return selfservice.DownloadPageURL(cfg.Serve.PublicURL, key, requestID, cfg.Serve.DownloadTTL, now), now.Add(cfg.Serve.DownloadTTL), nil
		}
		return download.URL(cfg.Serve.PublicURL, key, requestID, cfg.Serve.DownloadTTL, now), now.Add(cfg.Serve.DownloadTTL), nil
	}
	domain := messageIDDomain(cfg.Notify.From)
	var status notify.LinkFunc
	if cfg.Privacy.Enabled {
		status = func(requestID string, now time.Time) (string, time.Time, error) {
			ttl := cfg.Privacy.StatusLinkTTL
			return selfservice.StatusURL(cfg.Serve.PublicURL, key, requestID, ttl, now), now.Add(ttl), nil
		}
	}
	sender := notify.NewSMTP(cfg.Notify)
	notifier, err := notify.New(in.db, requests.NewStore(in.db, nil), in.outbox, sender, link,
		notify.Options{
			ResendAfter: cfg.Notify.ResendAfter, MessageIDDomain: domain, StatusLink: status,
			TemplateDir: cfg.Privacy.TemplateDir, DefaultLocale: cfg.Privacy.DefaultLocale,
		}, in.logger, in.registry)
	if err != nil {
		return nil, err
	}
	emails := bus.NewConsumer(in.bus, bus.ConsumerOptions{Queue: notify.Queue, Concurrency: cfg.Notify.Concurrency}, notifier.Handle, in.logger)
	// Stopped after the consumer: the last sends return their sessions first.
	sessions := funcComponent{name: "smtp sessions", stop: func(context.Context) error { return sender.Close() }}
	return []Component{sessions, emails}, nil
}

// reportBuilder adapts the report library to the manager's Builder.
type reportBuilder struct{ b *report.Builder }

func (r reportBuilder) Build(ctx context.Context, requestID string, subject event.Subject) (requests.Report, error) {
	res, err := r.b.Build(ctx, requestID, subject)
	if err != nil {
		return requests.Report{}, err
	}
	var rows int64
	contents := make([]requests.ReportSource, 0, len(res.Sources))
	for _, s := range res.Sources {
		rows += s.Rows
		contents = append(contents, requests.ReportSource{Name: s.Name, Rows: s.Rows, Skipped: s.Skipped != ""})
	}
	return requests.Report{ID: res.ReportID, Bytes: res.Bytes, SHA256: res.SHA256, Rows: rows, Contents: contents}, nil
}

func (r reportBuilder) Delete(ctx context.Context, requestID string) error {
	return r.b.Delete(ctx, requestID)
}

func (r reportBuilder) Sweep(ctx context.Context, olderThan time.Duration) error {
	_, err := r.b.Sweep(ctx, olderThan)
	return err
}

func (r reportBuilder) ErrorClass(err error) string { return report.ErrorClass(err) }
