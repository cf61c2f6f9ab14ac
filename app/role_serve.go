package app

import (
	"fmt"

	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/requests"
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
		Requests:             requests.NewStore(in.db, nil),
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
	})
	if err != nil {
		return nil, err
	}
	srv, err := api.New(api.Options{
		Addr:         cfg.Addr,
		Intake:       svc,
		APITokens:    apiTokens,
		AdminTokens:  adminTokens,
		MaxBodyBytes: cfg.MaxBodyBytes,
		RetryAfter:   cfg.RetryAfter,
		Admin:        serveAdminRoutes(in),
		Registerer:   in.registry,
		Logger:       in.logger,
	})
	if err != nil {
		return nil, err
	}
	return []Component{srv}, nil
}
