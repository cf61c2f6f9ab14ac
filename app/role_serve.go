package app

import (
	"fmt"

	"github.com/gdpr-oss/gdpr/modules/adminui"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/intake"
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
		ClientRegulations:    in.cfg.Console.Regulations(),
		Participants:         serveParticipants(in),
		Reports:              reports,
		Registerer:           in.registry,
		Logger:               in.logger,
	})
	if err != nil {
		return nil, err
	}
	operators, err := console.NewOperators(in.cfg.Console.Operators, cfg.AdminTokens)
	if err != nil {
		return nil, err
	}
	officerSvc, err := newOfficer(in)
	if err != nil {
		return nil, err
	}
	consoleUI, err := adminui.New(officerSvc, operators, in.logger)
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
		Officer:      officerSvc,
		Operators:    operators,
		Console:      consoleUI,
		Registerer:   in.registry,
		Logger:       in.logger,
	})
	if err != nil {
		return nil, err
	}
	return []Component{srv}, nil
}
