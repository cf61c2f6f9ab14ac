package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// serveComponents wires the HTTP intake role.
func serveComponents(in *infra) ([]Component, error) {
	cfg := in.cfg.Serve
	apiTokens, err := intake.ParseTokens(cfg.APITokens)
	if err != nil {
		return nil, fmt.Errorf("serve.api_tokens: %w", err)
	}
	adminTokens, err := intake.ParseTokens(cfg.AdminTokens)
	if err != nil {
		return nil, fmt.Errorf("serve.admin_tokens: %w", err)
	}
	if apiTokens.Len() == 0 {
		in.logger.Warn("serve.api_tokens is empty: every API call will be refused with 401")
	}
	reports, err := serveReports(in)
	if err != nil {
		return nil, err
	}
	svc, err := intake.New(intake.Options{
		Publisher:            in.publisher,
		Redis:                in.redis,
		DB:                   in.db,
		KeyPrefix:            in.cfg.Redis.Prefix + "intake:",
		AcceptedTTL:          cfg.AcceptedTTL,
		IdempotencyTTL:       cfg.IdempotencyTTL,
		ConfirmTimeout:       in.cfg.AMQP.ConfirmTimeout,
		DownloadKey:          []byte(cfg.DownloadKey),
		PreviousDownloadKeys: cfg.PreviousKeys(),
		Participants:         serveParticipants(in),
		Reports:              reports,
		Registerer:           in.registry,
		Logger:               in.logger,
		VerificationRequired: in.cfg.Privacy.Required,
	})
	if err != nil {
		return nil, err
	}
	var page *selfservice.Service
	if in.cfg.Privacy.Enabled {
		page, err = selfservice.New(selfservice.Options{
			Config:          in.cfg.Privacy,
			Redis:           in.redis,
			KeyPrefix:       in.cfg.Redis.Prefix + "privacy:",
			Key:             []byte(cfg.DownloadKey),
			PreviousKeys:    cfg.PreviousKeys(),
			PublicURL:       cfg.PublicURL,
			DownloadTTL:     cfg.DownloadTTL,
			Intake:          svc,
			Sender:          smtpSender{notify.NewSMTP(in.cfg.Notify)},
			MessageIDDomain: messageIDDomain(in.cfg.Notify.From),
			Logger:          in.logger,
		})
		if err != nil {
			return nil, err
		}
	}
	srv, err := api.New(api.Options{
		Addr:         cfg.Addr,
		Intake:       svc,
		APITokens:    apiTokens,
		AdminTokens:  adminTokens,
		MaxBodyBytes: cfg.MaxBodyBytes,
		RetryAfter:   cfg.RetryAfter,
		Admin:        serveAdminRoutes(in),
		Privacy:      page,
		Registerer:   in.registry,
		Logger:       in.logger,
	})
	if err != nil {
		return nil, err
	}
	if page == nil {
		return []Component{srv}, nil
	}
	// Stopped after the server: the page's emails in flight finish first.
	return []Component{page, srv}, nil
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
