package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gdpr-oss/gdpr/modules/adminui"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// buildIntake is the intake module: validation, idempotency keys, the
// confirmed publish of request.submitted, statuses and report downloads.
func buildIntake(_ context.Context, in *infra) ([]Component, error) {
	cfg := in.cfg.Serve
	reports, err := serveReports(in)
	if err != nil {
		return nil, err
	}
	svc, err := intake.New(intake.Options{
		Publisher:            in.publisher,
		Redis:                in.redis,
		Requests:             requests.NewStore(in.db, nil),
		KeyPrefix:            in.cfg.Redis.Prefix + "intake:",
		AcceptedTTL:          cfg.AcceptedTTL,
		IdempotencyTTL:       cfg.IdempotencyTTL,
		ConfirmTimeout:       in.cfg.AMQP.ConfirmTimeout,
		DownloadKey:          []byte(cfg.DownloadKey),
		PreviousDownloadKeys: cfg.PreviousKeys(),
		ClientRegulations:    in.cfg.Console.Regulations(),
		Participants:         serveParticipants(in),
		Reports:              reports,
		Registerer:           in.registry,
		Logger:               in.logger,
		VerificationRequired: in.cfg.Privacy.Required,
		Identifiers:          cfg.Identifiers,
	})
	if err != nil {
		return nil, err
	}
	in.intake = svc
	return nil, nil
}

// buildPrivacy is the privacy module: the self-service page (modules/
// selfservice) over the intake, served by the api module's server. Its
// component stops after the server, so verification emails in flight finish.
func buildPrivacy(_ context.Context, in *infra) ([]Component, error) {
	if !in.cfg.Privacy.Enabled {
		return nil, nil
	}
	cfg := in.cfg.Serve
	var comps []Component
	var accounts selfservice.Accounts
	if lookup := in.cfg.Privacy.AccountLookup; lookup.Kind != "" {
		a, err := selfservice.NewSourceAccounts(lookup, source.Options{Limits: source.Limits{MaxResponseBytes: in.cfg.Report.MaxResponseBytes, MaxValueBytes: in.cfg.Report.MaxValueBytes}}, in.logger)
		if err != nil {
			return nil, err
		}
		accounts = a
		comps = append(comps, funcComponent{name: "account lookup", stop: func(context.Context) error { return a.Close() }})
	}
	sender := notify.NewSMTP(in.cfg.Notify)
	page, err := selfservice.New(selfservice.Options{
		Config:          in.cfg.Privacy,
		Redis:           in.redis,
		KeyPrefix:       in.cfg.Redis.Prefix + "privacy:",
		Key:             []byte(cfg.DownloadKey),
		PreviousKeys:    cfg.PreviousKeys(),
		PublicURL:       cfg.PublicURL,
		DownloadTTL:     cfg.DownloadTTL,
		Intake:          in.intake,
		Accounts:        accounts,
		Sender:          smtpSender{sender},
		MessageIDDomain: messageIDDomain(in.cfg.Notify.From),
		Registerer:      in.registry,
		Logger:          in.logger,
		Regulation:      in.cfg.Console.Regulations()[selfservice.Caller],
	})
	if err != nil {
		return nil, err
	}
	in.privacy = page
	sessions := funcComponent{name: "smtp sessions", stop: func(context.Context) error { return sender.Close() }}
	return append(comps, sessions, page), nil
}

// smtpSender sends the page's verification emails with notify's SMTP sender.
type smtpSender struct{ s *notify.SMTP }

func (s smtpSender) Send(ctx context.Context, e selfservice.Email) error {
	return s.s.Send(ctx, notify.Email{To: e.To, Subject: e.Subject, Body: e.Body, MessageID: e.MessageID, Headers: e.Headers})
}

// messageIDDomain is the domain of notify.from, for generated Message-IDs.
func messageIDDomain(from string) string {
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		return strings.TrimSuffix(d, ">")
	}
	return "gdpr.invalid"
}

// buildAPI is the api module: the public HTTP API over the intake, with
// the admin module's routes behind the admin tokens.
func buildAPI(_ context.Context, in *infra) ([]Component, error) {
	cfg := in.cfg.Serve
	apiTokens, err := cfg.ClientTokens()
	if err != nil {
		return nil, err
	}
	adminTokens, err := intake.ParseTokens(cfg.AdminTokens)
	if err != nil {
		return nil, fmt.Errorf("serve.admin_tokens: %w", err)
	}
	if apiTokens.Len() == 0 {
		in.logger.Warn("serve.api_clients and serve.api_tokens are empty: every API call will be refused with 401")
	}
	operators, err := console.NewOperators(in.cfg.Console.Operators, cfg.AdminTokens)
	if err != nil {
		return nil, err
	}
	officerSvc, err := newOfficer(in)
	if err != nil {
		return nil, err
	}
	consoleUI, err := adminui.New(officerSvc, operators, adminui.Options{PublicURL: cfg.PublicURL}, in.logger)
	if err != nil {
		return nil, err
	}
	limiter, err := ratelimit.New(ratelimit.Options{
		Redis: in.redis, KeyPrefix: in.cfg.Redis.Prefix + "ratelimit:", Key: []byte(cfg.DownloadKey), Scopes: api.RateLimitScopes(),
		Registerer: in.registry, Logger: in.logger,
	})
	if err != nil {
		return nil, err
	}
	if len(in.cfg.Privacy.TrustedProxies) > 0 {
		in.logger.Warn("privacy.trusted_proxies is deprecated: its entries are added to serve.trusted_proxies; move them there")
	}
	proxies, err := cfg.Proxies(in.cfg.Privacy.TrustedProxies...)
	if err != nil {
		return nil, err
	}
	srv, err := api.New(api.Options{
		RateLimiter:  limiter,
		RateLimits:   cfg.RateLimits,
		Proxies:      proxies,
		Addr:         cfg.Addr,
		Intake:       in.intake,
		APITokens:    apiTokens,
		AdminTokens:  adminTokens,
		MaxBodyBytes: cfg.MaxBodyBytes,
		RetryAfter:   cfg.RetryAfter,
		Limits:       cfg.Limits(),
		Admin:        in.adminRoutes,
		Officer:      officerSvc,
		Operators:    operators,
		Console:      consoleUI,
		Privacy:      in.privacy,
		Registerer:   in.registry,
		Logger:       in.logger,
	})
	if err != nil {
		return nil, err
	}
	return []Component{srv}, nil
}

// serveReports opens stored reports for download with modules/report's
// Builder. Serve only reads reports: no sources are opened, and the builder's
// metrics are not registered (the worker in the same `all` process does).
func serveReports(in *infra) (intake.ReportOpener, error) {
	cfg := in.cfg.Report
	cfg.Sources = nil
	b, err := in.newReportBuilder(cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("opening report storage: %w", err)
	}
	return reportOpener{b}, nil
}

// reportOpener maps report.ErrNotFound to intake.ErrNotFound, so a report
// row without its file answers 404 rather than 500.
type reportOpener struct{ b *report.Builder }

func (r reportOpener) Open(ctx context.Context, reportID string) (io.ReadCloser, int64, error) {
	rc, size, err := r.b.Open(ctx, reportID)
	if errors.Is(err, report.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", intake.ErrNotFound, err)
	}
	return rc, size, err
}

// serveParticipants lists an erasure's participants for request statuses
// (the canceller's erasure_participants table).
func serveParticipants(in *infra) intake.ParticipantLister {
	return participantLister{erasure.Lister{DB: in.db}}
}

type participantLister struct{ l erasure.Lister }

func (p participantLister) ListParticipants(ctx context.Context, requestID string) ([]intake.Participant, error) {
	states, err := p.l.Participants(ctx, requestID)
	if err != nil {
		return nil, err
	}
	out := make([]intake.Participant, 0, len(states))
	for _, s := range states {
		// Detail and outcome text come from other services; a status shows
		// only progress, never text that might carry personal data.
		out = append(out, intake.Participant{Name: s.Participant, State: string(s.State), Attempts: s.Attempts, ConfirmedAt: s.ConfirmedAt, UpdatedAt: s.UpdatedAt.UTC()})
	}
	return out, nil
}

// buildAdmin is the admin module: the operators' net/http handlers mounted
// under /v1/admin/ behind the admin token check (serve.admin_tokens), e.g.
// the request timeline.
func buildAdmin(_ context.Context, in *infra) ([]Component, error) {
	for path, h := range opsAdminHandlers(in) {
		in.adminRoutes = append(in.adminRoutes, api.AdminRoute{Path: path, Handler: h})
	}
	return nil, nil
}
